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

The spread is not a calibrated error bar: on held-out simulated pairs the actual RMS error is
several times the RMS spread (:func:`calibration` measures the ratio, the report quotes it). The
packaged model cannot carry a calibration factor, so srunet presents the spread as a *relative*
map ("where is the model less sure"), with the measured under-estimate next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from srunet.geometry import SCALE, dihedral, inverse_dihedral

Predict = Callable[[np.ndarray], np.ndarray]


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
