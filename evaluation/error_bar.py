"""The report's error-bar section: coverage of a calibrated sigma, and a calibration to ship.

:func:`pair_error_bar` turns one pair's TTA spread and error into the quantities the error bar
is defined on (``srunet.evaluation.uncertainty``): the error on the *output's* scale, ``sr - (hr
- offset) / gain`` with the report's least-squares gain/offset fit of the prediction to the
target, and the input's normalisation scale in the output's units. The target is itself a noisy
acquisition, so the interval is for an independent ISM acquisition of the same field, not for
the noise-free specimen. :func:`summarise` pools the pairs: coverage of a given calibration
(a package's), a coverage figure, and a calibration fitted on these pairs (``calibration.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from srunet.evaluation.uncertainty import (LEVEL, Z90, Calibration, CoverageCheck,
                                           apply_calibration,
                                           coverage, coverage_curve, fit_calibration, pool_maps,
                                           write_calibration)
from srunet.normalization import mean_std_range

CALIBRATION_FILE = "calibration.json"
FIGURE = "figures/coverage.png"


def camera_scale(lr: np.ndarray) -> float:
    """The input's normalisation scale (std + eps) in camera units: the floor's unit when the
    prediction is in camera units (``srunet.model.predictor.Predictor``)."""
    low, high = mean_std_range(lr)
    return high - low


def pair_error_bar(lr, std, error, gain: float, *, calibration: Calibration | None,
                   output_scale: Callable[[np.ndarray], float]) -> tuple[dict | None, dict]:
    """The error-bar record entry and arrays of one pair (None, {} when ``gain <= 0``: the target
    is then no scaled copy of the output and the error has no meaning on the output's scale).

    ``error`` is the report's ``gain * sr + offset - hr``; ``std`` the TTA spread of ``sr``.
    """
    if not gain > 0:
        return None, {}
    arrays = {"error_output": (np.asarray(error, np.float64) / gain).astype(np.float32)}
    entry = {"input_scale": float(output_scale(lr)), "coverage": None}
    if calibration is not None:
        arrays["sigma"] = apply_calibration(calibration, std, entry["input_scale"])
        entry.update(coverage=coverage(arrays["error_output"], arrays["sigma"], z=calibration.z),
                     mean_sigma=float(arrays["sigma"].mean()))
    return entry, arrays


def binned_coverage(errors, sigmas, stds, *, bins: int = 10, z: float = Z90) -> dict:
    """Coverage at ``z`` per equal-count bin of the TTA spread (does sigma hold everywhere?)."""
    pooled = pool_maps(errors=errors, sigmas=sigmas, stds=stds)
    edges = np.unique(np.quantile(pooled["stds"], np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, pooled["stds"], side="right") - 1, 0,
                    max(len(edges) - 2, 0))
    inside = np.abs(pooled["errors"]) <= z * pooled["sigmas"]
    counts = np.bincount(index)
    keep = counts > 0
    return {"bin_edges": edges.tolist(), "z": z,
            "coverage": (np.bincount(index, inside)[keep] / counts[keep]).tolist()}


def plot_coverage(curve: dict, bins: dict, path, *, title: str = "error bar coverage") -> Path:
    """Observed vs Gaussian coverage over z, and coverage at ``bins['z']`` per spread bin."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    path = Path(path)
    fig = Figure(figsize=(8, 3.6), dpi=100)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.plot(curve["z"], curve["gaussian"], color="0.6", lw=1, label="Gaussian (calibrated)")
    left.plot(curve["z"], curve["observed"], "o-", ms=3, label="observed")
    left.axvline(bins["z"], color="0.8", lw=0.8)
    left.set_xlabel("z (interval = +-z sigma)")
    left.set_ylabel("share of pixels with |error| <= z sigma")
    left.legend(fontsize=8)
    right.axhspan(LEVEL - 0.03, LEVEL + 0.03, color="0.9", label=f"{LEVEL:.0%} +- 3 %")
    right.plot(np.arange(1, len(bins["coverage"]) + 1), bins["coverage"], "o-")
    right.set_xlabel("bin of TTA spread / input std (equal counts)")
    right.set_ylabel(f"coverage at {bins['z']:g} sigma")
    right.set_ylim(0, 1)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def summarise(folder: Path, pooled: dict, calibration: Calibration | None, data: str) -> dict:
    """Report entries ``fitted_calibration`` and ``error_bar`` from the pairs' maps.

    ``pooled``: lists ``tta_std``, ``error_output``, ``sigma`` (maps) and ``scale`` (floats),
    one item per pair. Writes ``folder/calibration.json`` (fitted on these pairs) and, with a
    ``calibration``, ``folder/figures/coverage.png``.
    """
    entries = {"fitted_calibration": None, "error_bar": None}
    if not pooled["scale"]:
        return entries
    try:
        fitted = fit_calibration(pooled["tta_std"], pooled["error_output"], pooled["scale"],
                                 data=data)
    except ValueError as error:  # e.g. zero error everywhere: nothing to calibrate
        entries["fitted_calibration"] = {"error": str(error)}
    else:
        write_calibration(folder / CALIBRATION_FILE, fitted)
        entries["fitted_calibration"] = {**fitted.model_dump(), "file": CALIBRATION_FILE}
    if calibration is not None:
        errors, sigmas, z = pooled["error_output"], pooled["sigma"], calibration.z
        # bins of the spread relative to the input's scale: comparable across images
        relative = [s / k for s, k in zip(pooled["tta_std"], pooled["scale"])]
        bins = binned_coverage(errors, sigmas, relative, z=z)
        curve = coverage_curve(errors, sigmas)
        plot_coverage(curve, bins, folder / FIGURE)
        entries["error_bar"] = {"calibration": calibration.model_dump(), "z": z,
                                "coverage": coverage(errors, sigmas, z=z), "data": data,
                                "pixels": int(sum(np.size(s) for s in sigmas)),
                                "images": len(sigmas),
                                "curve": curve, "bins": bins, "figure": FIGURE}
    return entries


PARAMETERS = ("form", "spread_factor", "floor", "z")  # what makes two error bars the same


def add_checks(calibration: Calibration, reports: dict) -> Calibration:
    """``calibration`` with the coverage that evaluate reports measured for it, as ``checks``.

    Parameters
    ----------
    reports : dict
        Check name (e.g. "test") -> report folder (or its report.json) of ``srunet evaluate
        --calibration FILE`` (or of a package shipping this calibration) on other pairs.

    Raises
    ------
    ValueError
        If a report measured no error bar, or another one than ``calibration``.
    """
    checks = dict(calibration.checks)
    for name, folder in reports.items():
        path = Path(folder) / "report.json" if Path(folder).is_dir() else Path(folder)
        bar = json.loads(path.read_text(encoding="utf-8")).get("error_bar")
        if not bar:
            raise ValueError(f"{path}: the report measured no error-bar coverage; run `srunet "
                             "evaluate --calibration CALIBRATION.json ...` (with TTA) first")
        given = {k: getattr(calibration, k) for k in PARAMETERS}
        measured = {k: bar["calibration"][k] for k in PARAMETERS}
        if measured != given:
            raise ValueError(f"{path} measured the error bar {measured}, not the one being "
                             f"shipped {given}; evaluate with `--calibration` of that file")
        checks[name] = CoverageCheck(coverage=bar["coverage"], pixels=bar["pixels"],
                                     images=bar["images"], data=bar["data"])
    return calibration.model_copy(update={"checks": checks})
