"""Rebuild a checkpoint dict from a written package, to re-export it with new metadata.

The release checkpoint is not in the repository, but its state dict (``weights.pt``), the
network's kwargs and the normalisation are in the package's ``rdf.yaml``, and the training
metrics its card shows are in ``metrics.json`` beside the card. ``srunet package --release
--checkpoint rdf.yaml`` uses this to re-export the committed release from the same weights;
unchanged code and metadata rebuild it byte for byte (tests/test_package.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import yaml

from srunet.model.record import METRICS_FILE, read_record, training_metrics
from srunet.normalization import EPS, MEAN_STD, PERCENTILES


def _normalization(data: dict, rdf: Path) -> dict:
    """The checkpoint's normalisation record from the package's preprocessing step."""
    steps = {p["id"]: p.get("kwargs", {}) for p in data["inputs"][0].get("preprocessing", [])}
    if "zero_mean_unit_variance" in steps:
        return {"method": MEAN_STD, "eps": steps["zero_mean_unit_variance"].get("eps", EPS)}
    if "scale_range" in steps:
        percentiles = [steps["scale_range"]["min_percentile"], steps["scale_range"]["max_percentile"]]
        # v1 training used the same percentiles for LR and HR
        return {"method": PERCENTILES, "lr_percentiles": percentiles, "hr_percentiles": percentiles}
    raise ValueError(f"{rdf} has neither zero_mean_unit_variance nor scale_range preprocessing: "
                     "its normalisation is unknown")


def _source(entry) -> str:
    return entry["source"] if isinstance(entry, dict) else entry


def _record_path(data: dict, rdf: Path) -> Path | None:
    """The package's ``metrics.json`` (an attachment), or None for a package without one."""
    for attachment in data.get("attachments") or []:
        source = _source(attachment)
        if Path(source).name == METRICS_FILE:
            return rdf.parent / source
    return None


def checkpoint_from_package(rdf: str | Path, *, config: dict | None = None) -> dict:
    """A checkpoint dict (as ``load_checkpoint`` returns) from a package's ``rdf.yaml``.

    Parameters
    ----------
    rdf : path
        The package description; its ``pytorch_state_dict`` weights and architecture kwargs,
        its normalisation (preprocessing step) and its ``metrics.json`` attachment (training
        validation metrics and step; the error bar, ``checkpoint["error_bar"]``) are read.
    config : dict, optional
        The training config to record (the package does not carry it).

    Raises
    ------
    ValueError
        If the description has no state-dict weights or no known preprocessing, or its
        ``metrics.json`` is not a card record.
    """
    rdf = Path(rdf)
    data = yaml.safe_load(rdf.read_text(encoding="utf-8"))
    weights = (data.get("weights") or {}).get("pytorch_state_dict")
    if not weights:
        raise ValueError(f"{rdf} has no pytorch_state_dict weights to rebuild a checkpoint from")
    normalization = _normalization(data, rdf)
    state = torch.load(rdf.parent / weights["source"], map_location="cpu", weights_only=True)
    record = _record_path(data, rdf)
    if record is None:
        warnings.warn(f"{rdf} has no {METRICS_FILE} attachment (a package written before "
                      "srunet 0.2's card records): the re-exported card will say that the "
                      "checkpoint records no training validation metrics", stacklevel=2)
        metrics, step, error_bar = {}, None, None
    else:
        card_numbers = read_record(record)
        metrics, step = training_metrics(card_numbers)
        error_bar = card_numbers.get("error_bar")
    checkpoint = {"model_kwargs": dict(weights["architecture"]["kwargs"]), "model_state": state,
                  "normalization": normalization,
                  "config": config or {}, "metrics": metrics}
    if step is not None:
        checkpoint["step"] = step
    if error_bar is not None:  # the calibrated error bar travels with the weights
        checkpoint["error_bar"] = error_bar
    return checkpoint
