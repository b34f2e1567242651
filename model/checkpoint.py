"""Self-describing checkpoints: weights + the network's kwargs + config + training state.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)``::

    {"format": "srunet-checkpoint", "version": 1,
     "model_kwargs": {...SRUNet kwargs...}, "model_state": state_dict,
     "normalization": {"lr_percentiles": [1.0, 99.8], "hr_percentiles": [1.0, 99.8]},
     "config": {...full training config...}, "epoch": int, "step": int, "metrics": {...},
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": {...}, "sampler": {...}}

The training-state keys are absent from a weights-only export.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from srunet.model.unet import SRUNet

FORMAT = "srunet-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (with format/version added) atomically: temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(path: Path, map_location) -> object:
    """``torch.load(weights_only=True)`` with the file named in every error."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive; a text or image file fails deep in the unpickler with
    # an opaque message (e.g. "101", the first byte), so name the real problem first.
    if head[:2] != b"PK" and head[:1] != b"\x80":
        kind = "empty" if not head else f"not a PyTorch file (it starts with {head!r})"
        raise ValueError(f"checkpoint {path} is {kind}; pass a .pt file written by `srunet "
                         "train` (e.g. runs/NAME/checkpoints/best.pt)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"checkpoint {path} cannot be read by torch ({type(error).__name__}: "
                         f"{error}); it may be truncated or from another program: pass a .pt "
                         "file written by `srunet train`") from error


def _check_version(payload: dict, path: Path) -> dict:
    if payload.get("version") != VERSION:
        raise ValueError(f"{path} has checkpoint version {payload.get('version')}, expected {VERSION}")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``) and check that it is one of ours."""
    path = Path(path)
    payload = _read(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an srunet checkpoint (no 'format': '{FORMAT}' entry); "
            "pass a file written by `srunet train`"
        )
    return _check_version(payload, path)


def load_weights(path: str | os.PathLike,
                 map_location: str | torch.device = "cpu") -> tuple[dict, dict | None]:
    """Weights to start from: an srunet checkpoint or a bare state dict (a package's weights.pt).

    Returns ``(state_dict, checkpoint)``; ``checkpoint`` is None for a bare state dict.
    """
    path = Path(path)
    payload = _read(path, map_location)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return _check_version(payload, path)["model_state"], payload
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path} is neither an srunet checkpoint nor a state dict of tensors")
    return payload, None


def build_model(checkpoint: dict) -> SRUNet:
    """The network described by a loaded checkpoint, with its weights, in eval mode."""
    model = SRUNet(**checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()
