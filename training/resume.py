"""What a run carries across an interruption or from a parent model: RNG states, the config
changes a resume may make, the normalisation record, and fine-tuning's initial weights.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from srunet.model.checkpoint import load_weights
from srunet.model.unet import SRUNet
from srunet.normalization import EPS, MEAN_STD, PERCENTILES, method_of
from srunet.training.config import Config, ModelConfig, flatten

# Config sections that may change when resuming (how long to train, where to log).
RESUMABLE_CHANGES = {"train.epochs", "train.max_steps", "train.patience", "train.num_workers",
                     "train.threads", "tracking.tracking_uri", "out_dir"}



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
    now, before = flatten(config), flatten(Config.model_validate(saved))
    changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
    forbidden = [k for k in changed if k not in RESUMABLE_CHANGES]
    if forbidden:
        detail = ", ".join(f"{k}: {before.get(k)} -> {now.get(k)}" for k in forbidden[:6])
        raise ValueError(f"cannot resume from {path}: config differs ({detail}); resume with the "
                         "checkpoint's config (only epochs, max_steps, patience may change)")
    return ", ".join(f"{k}: {before.get(k)} -> {now.get(k)}" for k in changed) or "no change"


def normalization_entry(data) -> dict:
    """The checkpoint's record of how inputs (and targets) were normalised."""
    if data.normalization == MEAN_STD:
        return {"method": MEAN_STD, "eps": EPS}
    return {"method": PERCENTILES, "lr_percentiles": list(data.lr_percentiles),
            "hr_percentiles": list(data.hr_percentiles)}


def load_initial_weights(config: Config, model: SRUNet, device: torch.device) -> None:
    """Load ``train.init_from`` into ``model``, checked against this run's config.

    An srunet checkpoint must match the model section and the normalisation; a bare state
    dict (a package's ``weights.pt``) must fit the model section.
    """
    path = Path(config.train.init_from)
    state, saved = load_weights(path, map_location=device)
    if saved is not None:
        wanted = config.model.model_dump()
        if ModelConfig(**saved["model_kwargs"]).model_dump() != wanted:
            raise ValueError(f"train.init_from={path} holds a model with {saved['model_kwargs']}, "
                             f"but this run's model section is {wanted}; make them equal to fine-tune")
        theirs, mine = saved.get("normalization", {}), normalization_entry(config.data)
        theirs = {"method": method_of(theirs), **theirs} if theirs else theirs  # v1: no method
        if theirs and theirs != mine:
            raise ValueError(f"train.init_from={path} was trained with normalization {theirs}, "
                             f"this run uses {mine}; set data.normalization (and the "
                             "percentiles) to the checkpoint's")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing/unexpected keys or shape mismatches, listed by torch
        raise ValueError(f"train.init_from={path} does not fit the model section "
                         f"{config.model.model_dump()}; set model.* to the weights' values. "
                         f"{error}") from error
