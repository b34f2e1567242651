"""Where is the prediction unsure? Test-time augmentation and its calibration.

Test-time augmentation (TTA) runs the model on the 8 rotations/reflections of the input (the
dihedral group D4), maps each output back and reports the per-pixel spread. The physics is
invariant to these transforms, so a faithful model's outputs agree; disagreement marks pixels
where the network's guess depends on orientation, i.e. on learned priors rather than on data.

Why the transforms commute exactly with the 2x mapping: LR pixel (i, j) covers HR pixels
(2i..2i+1, 2j..2j+1) (srunet/geometry.py), so each LR pixel and its 2x2 HR block share the same
centre. A flip of an n-pixel LR axis, i -> n-1-i, maps the block {2i, 2i+1} to
{2n-1-2i-1, 2n-1-2i} = {2(n-1-i), 2(n-1-i)+1}, the block of the flipped LR pixel; a transpose
maps blocks to blocks trivially. Rotations are compositions of these, so T applied on the LR grid
and T applied on the HR grid describe the same motion of the specimen, with no half-pixel offset.
(A convention with aligned corners instead of aligned centres would break this.)

The raw spread is not an error bar: on held-out simulated pairs the actual RMS error is about
6x the RMS spread (:func:`calibration` measures the ratio, the report quotes it). A calibrated
error bar (:class:`Calibration`) turns it into a per-pixel sigma in the output's units,

    sigma = sqrt((spread_factor * std)^2 + (floor * scale)^2),

``scale`` being the input's normalisation scale (its std + eps) in the output's units, so the
floor is scale-free. :func:`fit_calibration` fits it by Gaussian maximum likelihood on held-out
pairs, then scales it so that exactly 90 % of their pixels have ``|error| <= 1.64 sigma``;
:func:`apply_calibration` applies it; :func:`coverage` / :func:`coverage_curve` measure it. The
error is the prediction minus the target mapped onto the output's scale by the report's
gain/offset fit, and the target is a noisy ISM acquisition, so the interval is for an
independent acquisition of the same field. The form was chosen by measurement
(bench/calibration.py): a spread-only sigma (floor 0) under-covers where the spread is small
(59 % in the lowest spread decile of the held-out set) and over-covers where it is large; with
the floor every decile holds 89-94 %. ``srunet evaluate`` writes a fitted ``calibration.json``
and ``srunet package --calibration`` ships one in the package's ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from math import erf
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srunet.geometry import SCALE, dihedral, inverse_dihedral

Predict = Callable[[np.ndarray], np.ndarray]
Z90 = 1.64  # |error| <= Z90 * sigma for 90 % of pixels (two-sided Gaussian: 89.9 %)
LEVEL = 0.90


def _check_image(image) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D LR image (y, x), got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"image contains NaN or inf ({np.sum(~np.isfinite(image))} pixels)")
    return image


def _run(predict: Predict, image: np.ndarray, expected: tuple[int, int]) -> np.ndarray:
    # Contiguous copy: rot90/flip return views with negative strides, which torch rejects.
    output = np.asarray(predict(np.ascontiguousarray(image)), dtype=np.float64)
    if output.shape != expected:
        raise ValueError(f"predict returned shape {output.shape} for an input of shape "
                         f"{image.shape}; expected the {SCALE}x output {expected}")
    return output


def tta_predictions(predict: Predict, image: np.ndarray) -> np.ndarray:
    """The 8 test-time-augmented predictions, each mapped back to the original orientation.

    Returns an (8, 2M, 2N) float64 array.
    """
    image = _check_image(image)
    outputs = []
    for transform in range(8):
        transformed = dihedral(image, transform)
        expected = (SCALE * transformed.shape[0], SCALE * transformed.shape[1])
        outputs.append(inverse_dihedral(_run(predict, transformed, expected), transform))
    return np.stack(outputs)


def tta_std(predict: Predict, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-pixel standard deviation of the 8 dihedral test-time augmentations.

    Parameters
    ----------
    predict : callable
        Maps an (M, N) LR image to its (2M, 2N) prediction; must accept the transposed shape
        (N, M) too (rotations by 90 degrees swap the axes).
    image : (M, N) array
        The LR input.

    Returns
    -------
    mean, std : (2M, 2N) float32 arrays
        Zero std for a model that is exactly equivariant to rotations and reflections.
    """
    outputs = tta_predictions(predict, image)
    return outputs.mean(axis=0).astype(np.float32), outputs.std(axis=0).astype(np.float32)


def error_spread_ratio(std, error) -> float:
    """RMS error / RMS spread (1 = calibrated, > 1 = over-confident; inf for zero spread)."""
    std, error = np.asarray(std, dtype=np.float64), np.asarray(error, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.sqrt(np.mean(error**2) / np.mean(std**2)))


def calibration(std_maps, error_maps, *, bins: int = 10) -> dict:
    """Predicted spread against actual error, binned by predicted spread (equal-count bins).

    Parameters
    ----------
    std_maps : array or sequence of arrays
        Predicted per-pixel standard deviations (e.g. from :func:`tta_std`).
    error_maps : array or sequence of arrays, same shapes
        Signed or absolute errors (prediction - target, after any gain/offset fit).
    bins : int
        Number of bins; edges are quantiles of the pooled std values.

    Returns
    -------
    dict
        ``predicted``: RMS predicted std per bin; ``actual``: RMS error per bin; ``counts``;
        ``bin_edges``; ``ratio``: overall RMS error / RMS std (1 = calibrated, > 1 =
        over-confident); ``spearman``: rank correlation of std and |error| over all pixels.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    std_list = [std_maps] if isinstance(std_maps, np.ndarray) else list(std_maps)
    err_list = [error_maps] if isinstance(error_maps, np.ndarray) else list(error_maps)
    if len(std_list) != len(err_list):
        raise ValueError(f"got {len(std_list)} std maps but {len(err_list)} error maps")
    for k, (s, e) in enumerate(zip(std_list, err_list)):
        if np.shape(s) != np.shape(e):
            raise ValueError(f"std map {k} has shape {np.shape(s)}, error map {np.shape(e)}")
    std = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in std_list])
    err = np.concatenate([np.asarray(e, dtype=np.float64).ravel() for e in err_list])
    if std.size == 0 or np.any(std < 0) or not np.all(np.isfinite(std)) or not np.all(np.isfinite(err)):
        raise ValueError("std maps must be non-empty, finite and >= 0, error maps finite")
    edges = np.unique(np.quantile(std, np.linspace(0, 1, bins + 1)))
    # Quantile edges collapse when many pixels share one std (e.g. all zero): fewer bins then.
    index = np.clip(np.searchsorted(edges, std, side="right") - 1, 0, max(len(edges) - 2, 0))
    n_bins = max(len(edges) - 1, 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.sqrt(np.bincount(index, std**2, minlength=n_bins) / counts)
        actual = np.sqrt(np.bincount(index, err**2, minlength=n_bins) / counts)
    ratio = error_spread_ratio(std, err)
    from scipy.stats import spearmanr

    spearman = float(spearmanr(std, np.abs(err))[0]) if np.ptp(std) > 0 else float("nan")
    keep = counts > 0
    return {"predicted": predicted[keep], "actual": actual[keep], "counts": counts[keep],
            "bin_edges": edges, "ratio": ratio, "spearman": spearman}


def plot_calibration(result: dict, path, *, title: str = "TTA uncertainty calibration") -> Path:
    """Write a calibration plot (actual RMS error vs predicted std per bin, with the diagonal)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg for PNG

    path = Path(path)
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot()
    predicted, actual = np.asarray(result["predicted"]), np.asarray(result["actual"])
    top = float(max(np.nanmax(predicted, initial=0), np.nanmax(actual, initial=0))) or 1.0
    ax.plot([0, top], [0, top], color="0.6", lw=1, label="calibrated")
    ratio = result["ratio"]
    note = f"; spread underestimates\nerror ~{ratio:.0f}-fold" if np.isfinite(ratio) and ratio >= 1.5 else ""
    ax.plot(predicted, actual, "o-", label=f"model (error/spread = {ratio:.2f}{note})")
    ax.set_xlabel("TTA spread, RMS per bin (target units)")
    ax.set_ylabel("actual RMS error (target units)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# --- calibrated error bar -------------------------------------------------------------------

Z90 = 1.64  # |error| <= Z90 * sigma for 90 % of pixels (two-sided Gaussian: 89.9 %)
LEVEL = 0.90
FORMS = ("floor", "scaled")  # measured: bench/calibration.py, README "Calibrated error bar"
FIT_PIXELS = 400_000  # random pixels for the likelihood fit (the final factor uses all)


class CoverageCheck(BaseModel):
    """Coverage of a calibration measured on pairs it was not fitted on (an evaluate report)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    coverage: float = Field(ge=0, le=1, description="share of pixels with |error| <= z sigma")
    pixels: int = Field(ge=1)
    images: int = Field(ge=1)
    data: str = Field(description="what the pairs were, e.g. the report's folder")


class Calibration(BaseModel):
    """Error-bar model: ``sigma = sqrt((spread_factor * tta_std)^2 + (floor * scale)^2)``.

    ``tta_std`` is the 8-fold TTA spread and ``scale`` the input's normalisation scale (its
    std + eps, ``srunet.normalization.mean_std_range``), both in the output's units, so sigma is
    in the output's units too. ``form`` "scaled" has ``floor`` 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    form: Literal["floor", "scaled"]
    spread_factor: float = Field(ge=0, allow_inf_nan=False)
    floor: float = Field(ge=0, allow_inf_nan=False,
                         description="in units of the input's normalisation scale")
    z: float = Field(gt=0, allow_inf_nan=False)
    level: float = Field(gt=0, lt=1)
    coverage: float = Field(ge=0, le=1, description="on the pairs it was fitted on, at z")
    pixels: int = Field(ge=1)
    images: int = Field(ge=1)
    data: str = Field(description="the pairs it was fitted on")
    checks: dict[str, CoverageCheck] = Field(default_factory=dict)


def load_calibration(path) -> Calibration:
    """Read a ``calibration.json`` (``srunet evaluate`` writes one); ValueError naming the file."""
    path = Path(path)
    try:
        return Calibration.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration file {path} does not exist; `srunet evaluate` "
                                "writes one (REPORT/calibration.json)") from None
    except ValidationError as error:
        raise ValueError(f"{path} is not an srunet calibration (the calibration.json that "
                         f"`srunet evaluate` writes): {error}") from None


def write_calibration(path, calibration: Calibration) -> Path:
    """Write ``calibration`` as JSON (atomic: written beside, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(calibration.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _maps(values, what: str) -> list[np.ndarray]:
    items = [values] if isinstance(values, np.ndarray) else list(values)
    return [np.asarray(v, dtype=np.float64) for v in items]


def pool_maps(**named) -> dict[str, np.ndarray]:
    """Pooled 1-D arrays of equally shaped maps (or lists of maps); ValueError on bad input."""
    lists = {key: _maps(value, key) for key, value in named.items()}
    counts = {key: len(v) for key, v in lists.items()}
    if len(set(counts.values())) != 1 or not next(iter(counts.values())):
        raise ValueError(f"need the same non-zero number of maps of each kind, got {counts}")
    for k, maps in enumerate(zip(*lists.values())):
        shapes = {key: m.shape for key, m in zip(lists, maps)}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"map {k}: shapes differ, {shapes}")
    pooled = {key: np.concatenate([m.ravel() for m in maps]) for key, maps in lists.items()}
    for key, values in pooled.items():
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"{key}: empty or not finite ({int(np.sum(~np.isfinite(values)))} "
                             "NaN/inf values)")
        if key != "errors" and np.any(values < 0):
            raise ValueError(f"{key} must be >= 0; got {int(np.sum(values < 0))} negative "
                             f"values (min {values.min():g})")
    return pooled


def apply_calibration(calibration: Calibration, std, scale: float) -> np.ndarray:
    """Calibrated sigma (float32, the units of ``std`` and ``scale``) from a TTA spread map.

    Parameters
    ----------
    calibration : Calibration
    std : array
        TTA spread (:func:`tta_std`) in the output's units.
    scale : float
        The input's normalisation scale in the same units (1 for the package's raw,
        normalised output; ``high - low`` of ``mean_std_range(input)`` for camera units).
    """
    std = np.asarray(std, dtype=np.float64)
    if not np.all(np.isfinite(std)) or np.any(std < 0):
        raise ValueError(f"std must be finite and >= 0; got {int(np.sum(~np.isfinite(std)))} "
                         f"non-finite and {int(np.sum(std < 0))} negative values")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale (the input's normalisation scale) must be > 0, got {scale!r}")
    params = (calibration.spread_factor, calibration.floor)  # floor is 0 for the "scaled" form
    return _sigma("floor", params, std, scale).astype(np.float32)


def coverage(errors, sigmas, *, z: float = Z90) -> float:
    """Pooled share of pixels with ``|error| <= z * sigma`` (maps or lists of maps)."""
    pooled = pool_maps(errors=errors, sigmas=sigmas)
    return float(np.mean(np.abs(pooled["errors"]) <= z * pooled["sigmas"]))


def coverage_curve(errors, sigmas, *, z=np.linspace(0.5, 3.0, 26)) -> dict:
    """Observed coverage at each ``z`` beside the Gaussian one (``erf(z / sqrt 2)``)."""
    pooled = pool_maps(errors=errors, sigmas=sigmas)
    ratio = np.abs(pooled["errors"]) / np.maximum(pooled["sigmas"], np.finfo(float).tiny)
    z = np.asarray(z, dtype=np.float64)
    return {"z": z.tolist(), "observed": [float(np.mean(ratio <= v)) for v in z],
            "gaussian": [float(erf(v / np.sqrt(2))) for v in z]}


def _sigma(form: str, params, std, scale) -> np.ndarray:
    """sigma = sqrt((a x spread)^2 + (b x scale)^2): the one place the error bar's formula lives."""
    a, b = params[0], (params[1] if form == "floor" else 0.0)
    return np.sqrt((a * std) ** 2 + (b * scale) ** 2)


def fit_calibration(stds, errors, scales, *, form: str = "floor", z: float = Z90,
                    level: float = LEVEL, data: str = "") -> Calibration:
    """Fit an error-bar model to TTA spreads and errors of held-out pairs.

    Gaussian maximum likelihood of the errors under ``form`` (on up to ``FIT_PIXELS`` random
    pixels, seed 0), then one factor on every term so that exactly ``level`` of all pixels have
    ``|error| <= z * sigma``.

    Parameters
    ----------
    stds, errors : maps or lists of maps, output units
        TTA spread and error (prediction - target on the output's scale) per image.
    scales : float or sequence of floats
        Per image, the input's normalisation scale in the same units (see
        :func:`apply_calibration`); the fit runs in normalised units, so it is scale-free.
    form : {"floor", "scaled"}
    data : str
        What the pairs were (recorded).
    """
    from scipy.optimize import minimize

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    std_maps, err_maps = _maps(stds, "stds"), _maps(errors, "errors")
    scale_list = [float(s) for s in np.atleast_1d(np.asarray(scales, dtype=np.float64))]
    if len(scale_list) != len(std_maps) or not all(np.isfinite(s) and s > 0 for s in scale_list):
        raise ValueError(f"need one finite scale > 0 per image ({len(std_maps)}), got {scale_list}")
    pooled = pool_maps(stds=[s / k for s, k in zip(std_maps, scale_list)],
                       errors=[e / k for e, k in zip(err_maps, scale_list)])
    std, err = pooled["stds"], pooled["errors"]
    pick = np.random.default_rng(0).permutation(err.size)[:FIT_PIXELS]
    tiny = 1e-9 * max(float(np.sqrt(np.mean(err**2))), 1e-30)

    def nll(log_params):
        sigma = np.maximum(_sigma(form, np.exp(log_params), std[pick], 1.0), tiny)
        return float(np.mean(np.log(sigma) + 0.5 * (err[pick] / sigma) ** 2))

    rms_err, rms_std = np.sqrt(np.mean(err**2)), np.sqrt(np.mean(std**2))
    start = [np.log(max(rms_err / max(rms_std, 1e-30), 1e-6))]
    if form == "floor":  # half the error variance from each term
        start = [start[0] - 0.35, np.log(max(rms_err, 1e-30)) - 0.35]
    params = np.exp(minimize(nll, start, method="Nelder-Mead",
                             options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 4000}).x)
    sigma = _sigma(form, params, std, 1.0)
    factor = np.quantile(np.abs(err) / np.maximum(sigma, tiny), level) / z
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"cannot calibrate: the errors are all zero or the spread is zero "
                         f"where they are not (factor {factor}); use the 'floor' form or "
                         "other pairs")
    params = params * factor
    found = float(np.mean(np.abs(err) <= z * _sigma(form, params, std, 1.0)))
    return Calibration(form=form, spread_factor=float(params[0]),
                       floor=float(params[1]) if form == "floor" else 0.0, z=z, level=level,
                       coverage=found, pixels=int(err.size), images=len(std_maps), data=data)
