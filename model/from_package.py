"""Rebuild a checkpoint dict from a written package, to re-export it with new metadata.

The release checkpoint is not in the repository, but its state dict (``weights.pt``), the
network's kwargs and the normalisation are in the package. ``srunet package --release
--checkpoint rdf.yaml`` uses this to re-export the committed release (new card, cover,
metadata) from the same weights; the weight files come out identical (tests/test_package.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

from srunet.normalization import EPS, MEAN_STD, PERCENTILES

_METRIC_ROW = re.compile(r"^\| (psnr|ssim|nrmse|accuracy) \| ([-\d.e+]+) \| ([-\d.e+]+) \|$")


def _training_metrics(card: str) -> tuple[dict, int | None]:
    """The card's "Mean over the training run's validation images" table and step, if any."""
    head = re.search(r"Mean over the training run's validation images.*?checkpoint step (\d+)\)",
                     card, flags=re.S)
    if not head:
        return {}, None
    metrics = {}
    for line in card[head.end():].splitlines()[1:]:
        match = _METRIC_ROW.match(line.strip())
        if match:
            key, model, bicubic = match.groups()
            metrics[f"val_{key}"], metrics[f"val_bicubic_{key}"] = float(model), float(bicubic)
        elif metrics:
            break
    return metrics, int(head.group(1))


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


def checkpoint_from_package(rdf: str | Path, *, config: dict | None = None) -> dict:
    """A checkpoint dict (as ``load_checkpoint`` returns) from a package's ``rdf.yaml``.

    Parameters
    ----------
    rdf : path
        The package description; its ``pytorch_state_dict`` weights and architecture kwargs,
        its normalisation (preprocessing step) and its card's training-validation table are read.
    config : dict, optional
        The training config to record (the package does not carry it).

    Raises
    ------
    ValueError
        If the description has no state-dict weights or no known preprocessing.
    """
    rdf = Path(rdf)
    data = yaml.safe_load(rdf.read_text(encoding="utf-8"))
    weights = (data.get("weights") or {}).get("pytorch_state_dict")
    if not weights:
        raise ValueError(f"{rdf} has no pytorch_state_dict weights to rebuild a checkpoint from")
    normalization = _normalization(data, rdf)
    state = torch.load(rdf.parent / weights["source"], map_location="cpu", weights_only=True)
    documentation = data.get("documentation")
    source = documentation["source"] if isinstance(documentation, dict) else documentation
    card = (rdf.parent / source).read_text(encoding="utf-8") if source else ""
    metrics, step = _training_metrics(card)
    checkpoint = {"model_kwargs": dict(weights["architecture"]["kwargs"]), "model_state": state,
                  "normalization": normalization,
                  "config": config or {}, "metrics": metrics}
    if step is not None:
        checkpoint["step"] = step
    return checkpoint
