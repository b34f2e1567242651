"""Training throughput benchmark: tiles/s of the training step of the default (release) network
in each speed setting side by side (``train.amp`` bf16 autocast x ``train.channels_last``,
repetitions interleaved so machine load hits all alike), of the tile dataset reading simulated
pairs from disk, and of the real training loop with the share of its wall time spent in
optimizer steps, waiting for data and validating.

    python bench/train_throughput.py [--steps 10] [--repeats 3] [--batch 8] [--data SIM_DIR]
        [--device cpu] [--loop-steps 0] [--workers 2]

On a shared machine compare the ratios to float32 NCHW, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from srunet.model.unet import SRUNet
from srunet.tiff import find_pairs
from srunet.training.config import Config
from srunet.training.step import (autocast_enabled, cpu_has_bf16, to_batch, to_memory_format,
                                  training_step)

SETTINGS = {  # name: (train.amp, train.channels_last)
    "fp32 NCHW": (False, False),
    "bf16 autocast": (True, False),
    "fp32 channels_last": (False, True),
    "bf16 + channels_last": (True, True),
}


def native_bf16(device: torch.device) -> bool:
    return device.type == "cuda" or cpu_has_bf16()


def step_throughput(config: Config, steps: int, repeats: int, batch: int,
                    device: torch.device) -> tuple[dict[str, list[float]], dict[str, float]]:
    """tiles/s of ``training_step`` (the loop's own step) per setting, ``repeats`` rounds of
    ``steps`` steps, the settings interleaved within each round; and each setting's largest
    gradient error in its first step relative to float32 NCHW (worst parameter, relative to its
    largest gradient). bf16 is forced where the CPU has it, even where the loop would not use
    it (bf16 + channels_last on a CPU: training/step.py)."""
    tile = config.data.tile_size
    generator = torch.Generator().manual_seed(0)
    lr = torch.randn(batch, 1, tile, tile, generator=generator)
    hr = torch.randn(batch, 1, 2 * tile, 2 * tile, generator=generator)
    runs, first_grads = {}, {}
    native = native_bf16(device)
    for name, (amp, channels_last) in SETTINGS.items():
        torch.manual_seed(0)
        model = to_memory_format(SRUNet(**config.model.model_dump()).to(device), channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch_lr, batch_hr = to_batch(lr, device, channels_last), to_batch(hr, device, channels_last)

        def step(model=model, optimizer=optimizer, a=batch_lr, b=batch_hr, amp=amp and native):
            training_step(model, optimizer, a, b, config.train, amp)

        step()
        first_grads[name] = [p.grad.detach().float().clone() for p in model.parameters()]
        for _ in range(2):  # warm-up (allocator, oneDNN primitive caches)
            step()
        runs[name] = step
    reference = first_grads["fp32 NCHW"]
    errors = {name: max(float((g - r).abs().max() / r.abs().max().clamp_min(1e-30))
                        for g, r in zip(grads, reference)) for name, grads in first_grads.items()}
    rates = {name: [] for name in runs}
    for _ in range(repeats):
        for name, step in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[name].append(steps * batch / (time.perf_counter() - start))
    return rates, errors


def dataset_throughput(data: Path, config: Config, count: int) -> float:
    from srunet.training import dataset as ds

    pairs = find_pairs(data / "lr", data / "hr")
    images = ds.load_images(pairs, config.data, config.data.tile_size)
    tiles = ds.TileDataset(images, config.data.tile_size, seed=0)
    start = time.perf_counter()
    for index in range(count):
        tiles[index]
    return count / (time.perf_counter() - start)


def loop_throughput(data: Path, steps: int, batch: int, workers: int, device: str) -> dict:
    """Run `srunet train` (default settings) for ``steps`` steps, validating every 50, and
    return tiles/s and the loop's time shares (``TrainResult.time_shares``)."""
    from srunet.training.config import load_config
    from srunet.training.train import train

    with tempfile.TemporaryDirectory() as out:
        config = load_config(None, [f"train.batch_size={batch}", f"train.max_steps={steps}",
                                    "train.val_every=50", f"train.num_workers={workers}",
                                    f"train.device={device}", "data.max_val_images=2"],
                             data_dir=data, out_dir=out)
        start = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - start
    return {"tiles_per_s": steps * batch / wall, **result.time_shares}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per setting and round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch", type=int, default=Config().train.batch_size)
    parser.add_argument("--data", type=Path, default=None, help="simulated folder (default: make 4 pairs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loop-steps", type=int, default=0, help="steps of the real loop (0: skip)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the loop")
    args = parser.parse_args()
    config, device = Config(), torch.device(args.device)
    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else "cuda"
    print(f"torch {torch.__version__}, device {device} ({capability}, native bf16: "
          f"{cpu_has_bf16() if device.type == 'cpu' else 'n/a'}), threads "
          f"{torch.get_num_threads()}, model depth={config.model.depth} "
          f"base_channels={config.model.base_channels}, LR tile {config.data.tile_size} px, "
          f"batch {args.batch}, {args.repeats} interleaved rounds of {args.steps} steps")
    rates, errors = step_throughput(config, args.steps, args.repeats, args.batch, device)
    base = statistics.median(rates["fp32 NCHW"])
    print("training step (forward + backward + AdamW): median tiles/s, ratio to fp32 NCHW, "
          "gradient error of the first step vs fp32 NCHW, the loop's use:")
    for name, values in rates.items():
        amp, channels_last = SETTINGS[name]
        used = autocast_enabled(device, amp, channels_last) == (amp and native_bf16(device))
        print(f"  {name:22s} {statistics.median(values):7.1f} tiles/s  "
              f"{statistics.median(values) / base:4.2f}x  gradient error {errors[name]:.2g}  "
              f"{'used' if used else 'NOT used by the loop here'}  rounds: "
              + " ".join(f"{v:.1f}" for v in values))
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from srunet.simulation.simulator import simulate_dataset

            data = Path(tmp) / "sim"
            simulate_dataset(data, pairs=4, seed=0)
        print(f"tile dataset (read + normalise + augment): "
              f"{dataset_throughput(data, config, 2000):.0f} tiles/s")
        if args.loop_steps:
            loop = loop_throughput(data, args.loop_steps, args.batch, args.workers, args.device)
            print(f"training loop ({args.loop_steps} steps, {args.workers} workers, validation "
                  f"every 50 steps, incl. start-up and the final report): "
                  f"{loop['tiles_per_s']:.1f} tiles/s; wall time in steps "
                  f"{100 * loop['time_share_steps']:.0f} %, data "
                  f"{100 * loop['time_share_data']:.0f} %, validation "
                  f"{100 * loop['time_share_validation']:.0f} %")


if __name__ == "__main__":
    main()
