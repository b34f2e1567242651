"""The card's numbers: the record a package ships as ``metrics.json``.

:func:`card_record` gathers what the card states (training validation, sample pair, tiling
geometry, the calibrated error bar); :func:`write_record` / :func:`read_record` store it so a
re-export from a package (``from_package``) writes the same card, and
:func:`package_error_bar` reads the error bar back for ``srunet predict --uncertainty``.
"""

from __future__ import annotations

import json
from pathlib import Path

from srunet.evaluation.uncertainty import Calibration

METRIC_KEYS = ("psnr", "ssim", "nrmse", "accuracy")  # the card's metric rows, in order
METRICS_FILE = "metrics.json"  # the card's numbers, beside it in the package
_RECORD_SCHEMA = 1


def _pair(model: dict, bicubic: dict) -> dict:
    """``{"model": {...}, "bicubic": {...}}`` restricted to the card's metrics both have."""
    keys = [k for k in METRIC_KEYS if k in model and k in bicubic]
    return {"model": {k: float(model[k]) for k in keys},
            "bicubic": {k: float(bicubic[k]) for k in keys}}


def card_record(*, checkpoint: dict, input_halo: int, min_size: int, step: int, grid: int,
                sample_metrics: dict | None, error_bar: dict | None = None) -> dict:
    """The numbers of the card, as written to the package's ``metrics.json``.

    Parameters
    ----------
    checkpoint : dict
        Loaded srunet checkpoint; its ``metrics`` (``val_<key>``, ``val_bicubic_<key>``) and
        ``step`` give the training-validation table.
    input_halo, min_size, step : int
        Tiling geometry in input pixels, as declared in the description (sizes min + n x step).
    grid : int
        The network's phase grid (1: a block may start anywhere; 2**depth for a pooling UNet).
    sample_metrics : dict or None
        ``{"model": all_metrics(...), "bicubic": all_metrics(...)}`` on the packaged sample pair.
    error_bar : dict, optional
        A :class:`~srunet.evaluation.uncertainty.Calibration` (as a dict) to ship: key
        ``error_bar``, absent without one (so packages without one are unchanged).
    """
    train = checkpoint.get("metrics") or {}
    validation = None
    if "val_psnr" in train and "val_bicubic_psnr" in train:
        validation = {"step": checkpoint.get("step"), **_pair(
            {k: train[f"val_{k}"] for k in METRIC_KEYS if f"val_{k}" in train},
            {k: train[f"val_bicubic_{k}"] for k in METRIC_KEYS if f"val_bicubic_{k}" in train})}
    record = {"schema": _RECORD_SCHEMA,
              "tiling": {"input_halo": int(input_halo), "output_halo": 2 * int(input_halo),
                         "min": int(min_size), "step": int(step), "grid": int(grid)},
              "sample_pair": _pair(sample_metrics["model"], sample_metrics["bicubic"])
              if sample_metrics else None,
              "training_validation": validation}
    if error_bar is not None:
        record["error_bar"] = Calibration.model_validate(error_bar).model_dump()
    return record


def write_record(path: Path, record: dict) -> Path:
    """Write ``record`` as JSON (sorted keys, full float precision: a rebuild is identical)."""
    path = Path(path)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_record(path: Path) -> dict:
    """Read a ``metrics.json`` written by :func:`write_record`.

    Raises
    ------
    ValueError
        If it is not such a record (unknown schema or missing sections), naming the file.
    """
    path = Path(path)
    record = json.loads(path.read_text(encoding="utf-8"))
    missing = {"schema", "tiling", "sample_pair", "training_validation"} - set(record)
    if missing or record["schema"] != _RECORD_SCHEMA:
        raise ValueError(f"{path} is not an srunet card record (schema {_RECORD_SCHEMA}): "
                         f"missing {sorted(missing)}, schema {record.get('schema')!r}; rebuild "
                         "the package with this srunet version")
    return record


def package_error_bar(descr) -> Calibration | None:
    """The calibrated error bar a package ships (``metrics.json``, key ``error_bar``), or None.

    Raises
    ------
    ValueError
        If the package's record holds an ``error_bar`` that is not a valid calibration.
    """
    for attachment in descr.attachments or []:
        if Path(str(attachment.source)).name == METRICS_FILE:
            record = json.loads(attachment.get_reader().read().decode("utf-8"))
            if record.get("error_bar") is None:
                return None
            try:
                return Calibration.model_validate(record["error_bar"])
            except ValueError as error:
                raise ValueError(f"{attachment.source}: its error_bar is not a valid "
                                 f"calibration ({error}); rebuild the package") from None
    return None


def training_metrics(record: dict) -> tuple[dict, int | None]:
    """The checkpoint's ``metrics`` (``val_<key>``, ``val_bicubic_<key>``) and step recorded
    in a card record: what a re-export needs to write the same training table again."""
    validation = record.get("training_validation")
    if not validation:
        return {}, None
    metrics = {}
    for key, value in validation["model"].items():
        metrics[f"val_{key}"] = value
        metrics[f"val_bicubic_{key}"] = validation["bicubic"][key]
    return metrics, validation.get("step")
