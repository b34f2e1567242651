"""torch.compile and thread count for the training step and for inference, on this CPU.

Times, side by side in one process (interleaved rounds), the loop's own ``training_step`` of a
network in float32 channels_last (the CPU default, training/step.py) eager and compiled with
``torch.compile`` (inductor), at each ``--threads`` count; and the inference forward pass of one
block, eager and compiled. Compilation (minutes on 2 cores) happens before any timing and is
reported separately. ``--pause-pid`` stops another process (e.g. a training run) with SIGSTOP
while timing and resumes it after, so a shared machine gives clean numbers.

    python bench/compile_threads.py --net 3x24 --tile 96 --batch 8 --threads 2 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time


@contextlib.contextmanager
def paused(pid: int | None):
    """SIGSTOP ``pid`` for the duration (nothing if None); always SIGCONT after."""
    if pid is None:
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)  # let its threads leave the cores
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="3x24", help="DEPTHxCHANNELS (3x24 v2, 4x32 wide)")
    parser.add_argument("--tile", type=int, default=96, help="training tile side, LR px")
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    parser.add_argument("--block", type=int, default=512, help="inference block side, LR px")
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1],
                        help="torch intra-op thread counts to time")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--pause-pid", type=int, default=None,
                        help="process to SIGSTOP while timing (resumed afterwards)")
    args = parser.parse_args(argv)

    import torch

    from srunet.model.unet import SRUNet
    from srunet.training.config import TrainConfig
    from srunet.training.step import to_batch, to_memory_format, training_step

    depth, channels = (int(v) for v in args.net.split("x"))
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    lr = torch.randn(args.batch, 1, args.tile, args.tile, generator=generator)
    hr = torch.randn(args.batch, 1, 2 * args.tile, 2 * args.tile, generator=generator)
    block = torch.randn(1, 1, args.block, args.block, generator=generator)
    train = TrainConfig()
    setups, failures = {}, {}
    for name, compiled in (("eager", False), ("compiled", True)):
        torch.manual_seed(0)
        model = to_memory_format(SRUNet(depth=depth, base_channels=channels), True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        runner = torch.compile(model, dynamic=False) if compiled else model
        infer = SRUNet(depth=depth, base_channels=channels).eval()
        infer_runner = torch.compile(infer, dynamic=False) if compiled else infer
        for part in ("training", "inference"):
            start = time.perf_counter()
            try:
                if part == "training":
                    training_step(runner, optimizer, to_batch(lr, cpu, True),
                                  to_batch(hr, cpu, True), train, False)
                else:
                    with torch.inference_mode():
                        infer_runner(block)
            except Exception as error:  # inductor's failures are the measurement here
                failures[(name, part)] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
                print(f"{name} {part}: FAILS after {time.perf_counter() - start:.0f} s: "
                      f"{failures[(name, part)]}", flush=True)
                continue
            print(f"{name} {part}: first call {time.perf_counter() - start:.1f} s "
                  "(compilation included)", flush=True)
        setups[name] = (runner, optimizer, infer_runner)
    print(f"torch {torch.__version__}, net {args.net}, tile {args.tile}, batch {args.batch}, "
          f"block {args.block}")
    print("| threads | setting | training tiles/s | inference output Mpx/s (block) |")
    print("|---|---|---|---|")
    with paused(args.pause_pid):
        for threads in args.threads:
            torch.set_num_threads(threads)
            train_times = {name: [] for name in setups}
            infer_times = {name: [] for name in setups}
            for name, (runner, optimizer, infer_runner) in setups.items():  # warm at this count
                if (name, "training") not in failures:
                    training_step(runner, optimizer, to_batch(lr, cpu, True),
                                  to_batch(hr, cpu, True), train, False)
            for _ in range(args.rounds):
                for name, (runner, optimizer, infer_runner) in setups.items():
                    if (name, "training") not in failures:
                        start = time.perf_counter()
                        for _ in range(args.steps):
                            training_step(runner, optimizer, to_batch(lr, cpu, True),
                                          to_batch(hr, cpu, True), train, False)
                        train_times[name].append(time.perf_counter() - start)
                    if (name, "inference") not in failures:
                        with torch.inference_mode():
                            start = time.perf_counter()
                            infer_runner(block)
                            infer_times[name].append(time.perf_counter() - start)
            for name in setups:
                tiles = (f"{args.steps * args.batch / min(train_times[name]):.1f}"
                         if train_times[name] else "fails")
                mpx = (f"{(2 * args.block) ** 2 / min(infer_times[name]) / 1e6:.2f}"
                       if infer_times[name] else "fails")
                print(f"| {threads} | {name} | {tiles} | {mpx} |", flush=True)


if __name__ == "__main__":
    main()
