"""Training throughput benchmark: tiles/s of the default network (optimiser step included), of
the tile dataset reading simulated pairs from disk, and of the real training loop with the share
of its wall time spent in optimizer steps, waiting for data and validating.

    python bench/train_throughput.py [--steps 20] [--batch 16] [--data SIM_DIR] [--device cpu]
        [--loop-steps 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from srunet.model.unet import SRUNet
from srunet.tiff import find_pairs
from srunet.training.config import Config


def network_throughput(config: Config, steps: int, batch: int, device: str) -> float:
    model = SRUNet(**config.model.model_dump()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tile = config.data.tile_size
    lr = torch.randn(batch, 1, tile, tile, device=device)
    hr = torch.randn(batch, 1, 2 * tile, 2 * tile, device=device)

    def step():
        loss = torch.nn.functional.l1_loss(model(lr), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up (allocator, kernels)
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def dataset_throughput(data: Path, config: Config, count: int) -> float:
    from srunet.training import dataset as ds

    pairs = find_pairs(data / "lr", data / "hr")
    images = ds.load_images(pairs, config.data,
                            config.data.tile_size)
    tiles = ds.TileDataset(images, config.data.tile_size, count, seed=0)
    start = time.perf_counter()
    for index in range(count):
        tiles[index]
    return count / (time.perf_counter() - start)


def loop_throughput(data: Path, steps: int, batch: int, workers: int, device: str) -> dict:
    """Run `srunet train` for ``steps`` steps (validation every epoch of 50 steps) and return
    tiles/s and the loop's time shares (``TrainResult.time_shares``)."""
    from srunet.training.config import load_config
    from srunet.training.train import train

    with tempfile.TemporaryDirectory() as out:
        config = load_config(None, [f"train.batch_size={batch}", f"train.max_steps={steps}",
                                    f"data.tiles_per_epoch={50 * batch}", "train.epochs=1000",
                                    f"train.num_workers={workers}", f"train.device={device}",
                                    "data.max_val_images=2"], data_dir=data, out_dir=out)
        start = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - start
    return {"tiles_per_s": steps * batch / wall, **result.time_shares}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--data", type=Path, default=None, help="simulated folder (default: make 4 pairs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loop-steps", type=int, default=200, help="steps of the real loop")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the loop")
    args = parser.parse_args()
    config = Config()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"model depth={config.model.depth} base_channels={config.model.base_channels}, "
          f"LR tile {config.data.tile_size}px, batch {args.batch}")
    rate = network_throughput(config, args.steps, args.batch, args.device)
    print(f"network (forward+backward+AdamW): {rate:.1f} tiles/s")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from srunet.simulation.simulator import simulate_dataset

            data = Path(tmp) / "sim"
            simulate_dataset(data, pairs=4, seed=0)
        print(f"tile dataset (read + normalise + augment): "
              f"{dataset_throughput(data, config, 2000):.0f} tiles/s")
        loop = loop_throughput(data, args.loop_steps, args.batch, args.workers, args.device)
        print(f"training loop ({args.loop_steps} steps, {args.workers} workers, validation every "
              f"50 steps, incl. start-up and the final report): {loop['tiles_per_s']:.1f} tiles/s; "
              f"wall time in steps {100 * loop['time_share_steps']:.0f} %, data "
              f"{100 * loop['time_share_data']:.0f} %, validation "
              f"{100 * loop['time_share_validation']:.0f} %")


if __name__ == "__main__":
    main()
