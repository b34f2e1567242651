"""Inference speed of the architecture's forward pass on this CPU: memory layout and threads.

What a PyTorch consumer of the ``pytorch_state_dict`` weights (bioimageio.core, BiaPy) runs is
``SRUNet.forward`` on NCHW float32 blocks. This times, side by side in one process and in
interleaved rounds (so a load change hits every setting alike), the forward pass of a network
on one block of ``--blocks`` input pixels per side:

* ``NCHW``: weights moved to the standard layout (``model.to(memory_format=
  torch.contiguous_format)``; srunet v1-v2's layout), forward in NCHW;
* ``channels_last``: ``SRUNet()`` as constructed since v3 (weights in channels_last, forward
  switches the NCHW input to it and returns NCHW), i.e. what every consumer now gets.

It also reports the largest difference of the channels_last output from NCHW's (the numbers
must not change beyond float rounding). Output megapixels per second count the whole 2x block
(halo included), so they compare layouts, not end-to-end throughput (bench/predict_large.py).

    python bench/inference_layout.py --nets 3x24 4x32 --blocks 256 512 --threads 2 1
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["3x24", "4x32"],
                        help="networks as DEPTHxCHANNELS (3x24: the v2 release, 4x32: the wide net)")
    parser.add_argument("--blocks", nargs="+", type=int, default=[256, 512],
                        help="input block sides in pixels, halo included")
    parser.add_argument("--threads", nargs="+", type=int, default=[2],
                        help="torch intra-op thread counts to time")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    args = parser.parse_args(argv)

    import torch

    from srunet.model.unet import SRUNet

    print(f"torch {torch.__version__}")
    print("| net | block | threads | setting | s per block | output Mpx/s | max |diff| vs NCHW |")
    print("|---|---|---|---|---|---|---|")
    for net in args.nets:
        depth, channels = (int(v) for v in net.split("x"))
        torch.manual_seed(0)
        default = SRUNet(depth=depth, base_channels=channels).eval()
        standard = SRUNet(depth=depth, base_channels=channels).eval()
        standard.load_state_dict(default.state_dict())
        standard.to(memory_format=torch.contiguous_format)
        settings = {"NCHW": standard, "channels_last": default}
        for block in args.blocks:
            x = torch.randn(1, 1, block, block, generator=torch.Generator().manual_seed(1))
            for threads in args.threads:
                torch.set_num_threads(threads)
                times = {name: [] for name in settings}
                outputs = {}
                with torch.inference_mode():
                    for name, model in settings.items():  # warm-up, and the outputs
                        outputs[name] = model(x)
                    for _ in range(args.rounds):
                        for name, model in settings.items():
                            start = time.perf_counter()
                            model(x)
                            times[name].append(time.perf_counter() - start)
                for name in settings:
                    best = min(times[name])
                    diff = float((outputs[name] - outputs["NCHW"]).abs().max())
                    print(f"| {net} | {block} | {threads} | {name} | {best:.3f} | "
                          f"{(2 * block) ** 2 / best / 1e6:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
