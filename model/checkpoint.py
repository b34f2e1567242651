"""Self-describing checkpoints: weights + the network's kwargs + config + training state.

A checkpoint is the record :class:`Checkpoint`, written as a plain dict of tensors and Python
primitives, so it loads with ``torch.load(weights_only=True)``. The dict holds ``format``
("srunet-checkpoint") and ``version`` (1), then the record's fields:

- ``model_kwargs``: the SRUNet keyword arguments
- ``model_state``: the network's state dict (float32, contiguous)
- ``normalization``: how inputs were normalised (``srunet.normalization.Normalization.to_dict``)
- ``config``: the full training config (empty when unknown, e.g. rebuilt from a package)
- ``step``: optimizer steps done
- ``metrics``: the last validation's metrics
- ``optimizer``: the optimizer's state dict
- ``scheduler``: the learning-rate scheduler's state dict
- ``rng``: the torch and Python RNG states
- ``state``: the training loop's own state (``srunet.training.resume.TrainState``)

Fields that are None are not written: a weights-only export has no training state
(``optimizer``, ``scheduler``, ``rng``, ``state``). Checkpoints of the epoch-based training loop
(srunet v2 and before) also hold ``epoch``, which is read and dropped.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from srunet.model.unet import SRUNet
from srunet.normalization import Normalization

FORMAT = "srunet-checkpoint"
VERSION = 1
LEGACY_KEYS = {"epoch"}  # written by the epoch-based loop; nothing reads it


@dataclass
class Checkpoint:
    """One checkpoint (fields as listed in the module docstring)."""

    model_kwargs: dict
    model_state: dict
    normalization: Normalization = field(default_factory=Normalization)
    config: dict = field(default_factory=dict)
    step: Optional[int] = None
    metrics: dict = field(default_factory=dict)
    optimizer: Optional[dict] = None
    scheduler: Optional[dict] = None
    rng: Optional[dict] = None
    state: Optional[dict] = None

    def __post_init__(self):
        self.normalization = Normalization.from_dict(self.normalization)

    @property
    def resumable(self) -> bool:
        """Whether the training state a resume needs is here (not a weights-only export)."""
        return None not in (self.optimizer, self.scheduler, self.rng, self.state)

    def to_dict(self) -> dict:
        """The plain dict that is written (format and version first, None fields left out)."""
        payload = {"format": FORMAT, "version": VERSION}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is not None:
                payload[item.name] = value.to_dict() if item.name == "normalization" else value
        return payload

    @classmethod
    def from_dict(cls, payload: dict, source: str = "checkpoint") -> "Checkpoint":
        """Read a dict as :meth:`to_dict` writes it (``format``/``version`` optional); unknown
        keys are an error naming ``source``."""
        known = {item.name for item in dataclasses.fields(cls)}
        extra = set(payload) - known - LEGACY_KEYS - {"format", "version"}
        if extra:
            raise ValueError(f"{source} has keys an srunet checkpoint does not hold: "
                             f"{sorted(extra)}; it holds {sorted(known)}")
        missing = {"model_kwargs", "model_state"} - set(payload)
        if missing:
            raise ValueError(f"{source} lacks {sorted(missing)}: not a usable srunet checkpoint")
        return cls(**{k: v for k, v in payload.items() if k in known})

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file, then rename); returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            torch.save(self.to_dict(), tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Checkpoint":
        """Load safely (``weights_only=True``) and check that it is one of ours."""
        path = Path(path)
        payload = _read(path, map_location)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not an srunet checkpoint (no 'format': '{FORMAT}' entry); "
                "pass a file written by `srunet train`"
            )
        return cls.from_dict(_check_version(payload, path), str(path))


def save_checkpoint(path: str | os.PathLike, payload: dict | Checkpoint) -> Path:
    """Write a checkpoint (a :class:`Checkpoint` or a dict of its fields) atomically."""
    if not isinstance(payload, Checkpoint):
        payload = Checkpoint.from_dict(payload, f"the checkpoint for {path}")
    return payload.save(path)


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
    """Load a checkpoint safely (``weights_only=True``), checked; as the plain dict
    (:meth:`Checkpoint.to_dict`) that packaging and prediction read."""
    return Checkpoint.load(path, map_location).to_dict()


def load_weights(path: str | os.PathLike,
                 map_location: str | torch.device = "cpu") -> tuple[dict, Checkpoint | None]:
    """Weights to start from: an srunet checkpoint or a bare state dict (a package's weights.pt).

    Returns ``(state_dict, checkpoint)``; ``checkpoint`` is None for a bare state dict.
    """
    path = Path(path)
    payload = _read(path, map_location)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        record = Checkpoint.from_dict(_check_version(payload, path), str(path))
        return record.model_state, record
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path} is neither an srunet checkpoint nor a state dict of tensors")
    return payload, None


def build_model(checkpoint: dict) -> SRUNet:
    """The network described by a loaded checkpoint, with its weights, in eval mode."""
    model = SRUNet(**checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()
