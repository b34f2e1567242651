"""Where a training run executes: the process group under ``torchrun``, the device, and how
its wall time splits between steps, data and validation."""

from __future__ import annotations

import os

import torch

from srunet.training.config import Config


def distributed() -> tuple[int, int]:
    """(rank, world size): joins the process group under ``torchrun`` (nccl on GPUs, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def device_for(config: Config, rank: int) -> torch.device:
    """The device ``train.device`` asks for (a rank's own GPU under torchrun), checked."""
    want = config.train.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
        index = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def time_shares(timing: dict, wall: float) -> dict:
    """Shares of the loop's wall time spent waiting for data, validating (with checkpoints and
    logging) and in optimizer steps (the rest). A GPU-ready loop keeps the last near 1."""
    wall = max(wall, 1e-9)
    shares = {f"time_share_{key}": value / wall for key, value in timing.items()}
    shares["time_share_steps"] = max(0.0, 1.0 - sum(shares.values()))
    return shares
