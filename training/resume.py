"""What a run carries across an interruption or from a parent model: the loop's state, RNG
states, the config changes a resume may make, the normalisation record, and fine-tuning's
initial weights.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from srunet.model.checkpoint import load_weights
from srunet.model.unet import SRUNet
from srunet.normalization import MEAN_STD, Normalization
from srunet.training.config import Config, ModelConfig, flatten, reject_removed_keys

# Config settings that may change when resuming (how long to train, where to log, threads).
# Changing train.max_steps re-spans the cosine from the resumed step on.
RESUMABLE_CHANGES = {"train.max_steps", "train.patience", "train.num_workers", "train.threads",
                     "tracking.tracking_uri", "out_dir"}


@dataclass
class TrainState:
    """The training loop's own state, saved in every checkpoint (``checkpoint["state"]``)
    beside the optimiser, scheduler and RNG states: all a resumed run needs to continue exactly.
    """

    step: int = 0                          # optimizer steps done
    best_psnr: float = -math.inf           # best validation PSNR so far
    bad_validations: int = 0               # validations since the best one (early stopping)
    validations: int = 0                   # validations done (preview_every counts these)
    interval_loss: float = 0.0             # training loss summed since the last validation ...
    interval_batches: int = 0              # ... over this many batches
    run_id: Optional[str] = None           # the MLflow run a resume continues
    metrics: dict = field(default_factory=dict)  # the last validation's
    train_seconds: float = 0.0             # wall time of the loop so far (for max_minutes)
    schedule_total: int = 0                # steps the warmup + cosine schedule spans
    warmup_steps: int = 0                  # the schedule's warmup (shortened by a short budget)
    budget_fitted: bool = False            # max_minutes has fixed schedule_total

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict, source: str) -> "TrainState":
        known = {item.name for item in dataclasses.fields(cls)}
        if set(saved) != known:
            raise ValueError(f"{source} holds the training state of another srunet version "
                             f"(keys {sorted(saved)}); it cannot be resumed exactly: start a new "
                             "run, or start from its weights with train.init_from")
        return cls(**saved)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resume(config: Config, saved: dict, path: Path) -> str:
    """Refuse a resume whose config differs beyond RESUMABLE_CHANGES; describe what changed."""
    reject_removed_keys(saved, f"cannot resume from {path}, written by the epoch-based loop "
                        "(start a new run, or from its weights with train.init_from)")
    now, before = flatten(config), flatten(Config.model_validate(saved))
    changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
    forbidden = [k for k in changed if k not in RESUMABLE_CHANGES]
    if forbidden:
        detail = ", ".join(f"{k}: {before.get(k)} -> {now.get(k)}" for k in forbidden[:6])
        allowed = ", ".join(sorted(RESUMABLE_CHANGES))
        raise ValueError(f"cannot resume from {path}: config differs ({detail}); resume with the "
                         f"checkpoint's config (only {allowed} may change)")
    return ", ".join(f"{k}: {before.get(k)} -> {now.get(k)}" for k in changed) or "no change"


def normalization_entry(data) -> Normalization:
    """How this run normalises inputs and targets (``data`` is the config's data section)."""
    if data.normalization == MEAN_STD:
        return Normalization(MEAN_STD)
    return Normalization(data.normalization, lr_percentiles=tuple(data.lr_percentiles),
                         hr_percentiles=tuple(data.hr_percentiles))


def check_init_from(config: Config) -> None:
    """FileNotFoundError, saying where relative paths start, if ``train.init_from`` is missing."""
    init_from = config.train.init_from
    if init_from is not None and not Path(init_from).is_file():
        raise FileNotFoundError(
            f"train.init_from={init_from}: no such file (relative paths start at the current "
            f"folder, {Path.cwd()}); give the weights' absolute path, or "
            "train.init_from=release for the installed release's weights")


def load_initial_weights(config: Config, model: SRUNet, device: torch.device) -> None:
    """Load ``train.init_from`` into ``model``, checked against this run's config.

    An srunet checkpoint must match the model section and the normalisation; a bare state
    dict (a package's ``weights.pt``) must fit the model section.
    """
    path = Path(config.train.init_from)
    state, saved = load_weights(path, map_location=device)
    if saved is not None:
        wanted = config.model.model_dump()
        if ModelConfig(**saved.model_kwargs).model_dump() != wanted:
            raise ValueError(f"train.init_from={path} holds a model with {saved.model_kwargs}, "
                             f"but this run's model section is {wanted}; make them equal to fine-tune")
        theirs, mine = saved.normalization, normalization_entry(config.data)
        if theirs != mine:
            raise ValueError(f"train.init_from={path} was trained with normalization "
                             f"{theirs.to_dict()}, this run uses {mine.to_dict()}; set "
                             "data.normalization (and the percentiles) to the checkpoint's")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing/unexpected keys or shape mismatches, listed by torch
        raise ValueError(f"train.init_from={path} does not fit the model section "
                         f"{config.model.model_dump()}; set model.* to the weights' values. "
                         f"{error}") from error
