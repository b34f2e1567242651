"""One pair's analysis for the quality report: metrics, FRC, consistency, invented detail.

:func:`analyse_pair` turns an LR/HR pair and a predict callable into the numbers and arrays that
``srunet.evaluation.report`` aggregates, draws and writes; :func:`as_pairs` checks the pairs it is
given (shapes, names, independent repeats) before any model runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

from srunet.physics import contract
from srunet.evaluation import error_bar, frc
from srunet.evaluation.consistency import consistency_map
from srunet.evaluation.metrics import all_metrics, gain_offset, upsample_bicubic
from srunet.evaluation.uncertainty import Calibration, error_spread_ratio, tta_predictions
from srunet.geometry import SCALE

FRC_THRESHOLD = "1/7"
FOREGROUND_SIGMA_PX = 1.0  # HR px: smooths photon noise so Otsu splits structure from background
FOREGROUND_NOTE = (f"Otsu threshold (skimage.filters.threshold_otsu) of the HR target smoothed "
                   f"with a Gaussian of sigma {FOREGROUND_SIGMA_PX:g} HR px; pixels above it.")
FRC_NOTE = ("single-image checkerboard split (Koho et al. 2019; exact sqrt(2) pixel and "
            "half-pixel shift corrections) unless a second realisation was given. It assumes "
            "noise independent between pixels: a network output correlates its noise, so its "
            "FRC is optimistic; '<=' marks curves that never crossed (sampling-limited bound).")


class EvalPair(NamedTuple):
    """One field: LR input, HR target, optionally second noise realisations of either."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    lr_repeat: np.ndarray | None = None
    hr_repeat: np.ndarray | None = None


def foreground_mask(target: np.ndarray, *, sigma_px: float = FOREGROUND_SIGMA_PX) -> np.ndarray:
    """Foreground of an HR target: Otsu threshold of the lightly smoothed image (``FOREGROUND_NOTE``)."""
    smoothed = gaussian_filter(np.asarray(target, dtype=np.float64), sigma_px)
    if np.ptp(smoothed) == 0:
        return np.zeros(smoothed.shape, dtype=bool)
    return smoothed > threshold_otsu(smoothed)


def as_pairs(pairs) -> list[EvalPair]:
    items = [EvalPair(*p) if not isinstance(p, EvalPair) else p for p in pairs]
    if not items:
        raise ValueError("no image pairs to evaluate")
    names = [p.name for p in items]
    for name in names:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"pair name {name!r} cannot be used as a file name")
    if len(set(names)) != len(names):
        raise ValueError(f"pair names must be unique, got {sorted(names)}")
    checked = []
    for p in items:
        lr, hr = np.asarray(p.lr, dtype=np.float32), np.asarray(p.hr, dtype=np.float32)
        if lr.ndim != 2 or hr.shape != (SCALE * lr.shape[0], SCALE * lr.shape[1]):
            raise ValueError(f"{p.name}: HR shape must be {SCALE}x the 2-D LR shape, got LR "
                             f"{lr.shape} and HR {hr.shape}")
        for label, other, like in (("lr_repeat", p.lr_repeat, lr), ("hr_repeat", p.hr_repeat, hr)):
            if other is not None and np.shape(other) != like.shape:
                raise ValueError(f"{p.name}: {label} shape {np.shape(other)} differs from {like.shape}")
            if other is not None and np.array_equal(other, like):
                # identical "realisations" would give FRC = 1 at every frequency
                raise ValueError(f"{p.name}: {label} is identical to the primary image; pass an "
                                 "independent noise realisation of the same field")
        checked.append(EvalPair(p.name, lr, hr,
                                None if p.lr_repeat is None else np.asarray(p.lr_repeat, np.float32),
                                None if p.hr_repeat is None else np.asarray(p.hr_repeat, np.float32)))
    return checked


def _frc(image, repeat, pixel_nm):
    """FRC curve and resolution: two realisations when a repeat exists, else the single-image split."""
    if repeat is not None:
        freq, corr, counts = frc.frc_curve(image, repeat, pixel_size_nm=pixel_nm, return_counts=True)
    else:
        freq, corr, counts = frc.frc_single_image_curve(image, pixel_size_nm=pixel_nm,
                                                        return_counts=True)
    resolution, crossed = frc.resolution_from_curve(freq, corr, threshold=FRC_THRESHOLD,
                                                    counts=counts)
    return (freq, corr), {"resolution_nm": resolution, "sampling_limited": not crossed,
                          "method": "two-image" if repeat is not None else "single-image"}


def _predict(predict_fn, lr, name):
    sr = np.asarray(predict_fn(lr), dtype=np.float32)
    if sr.shape != (SCALE * lr.shape[0], SCALE * lr.shape[1]):
        raise ValueError(f"{name}: the model returned shape {sr.shape} for LR {lr.shape}; "
                         f"expected {(SCALE * lr.shape[0], SCALE * lr.shape[1])}")
    return sr


def analyse_pair(pair: EvalPair, predict_fn: Callable, *, tta: bool = False,
                 score_tta_mean: bool = True, calibration: Calibration | None = None,
                 output_scale: Callable = error_bar.camera_scale):
    """All numbers (dict) and arrays (dict) for one pair; see the module notes for their meaning.

    With ``tta`` the 8 dihedral predictions give the spread; the SR scored is their mean
    (``score_tta_mean``) or the plain prediction (transform 0, what ``srunet predict`` writes),
    and the error bar's quantities (``error_bar.pair_error_bar``; ``calibration``,
    ``output_scale`` as for :func:`evaluate_arrays`).
    """
    lr, hr = pair.lr, pair.hr
    if tta:
        outputs = tta_predictions(predict_fn, lr)
        std = outputs.std(axis=0).astype(np.float32)
        sr = (outputs.mean(axis=0) if score_tta_mean else outputs[0]).astype(np.float32)
    else:
        sr, std = _predict(predict_fn, lr, pair.name), None
    bicubic = upsample_bicubic(lr).astype(np.float32)
    mask = foreground_mask(hr)
    fg_ok = 0 < mask.sum() < mask.size
    metrics = {}
    for label, image in (("model", sr), ("bicubic", bicubic)):
        metrics[label] = {"whole": all_metrics(hr, image),
                          "foreground": all_metrics(hr, image, mask=mask) if fg_ok else None}
    gain, offset = gain_offset(hr, sr)  # the same fit all_metrics applies on the whole image
    sr_fit = (gain * sr + offset).astype(np.float32)
    error = sr_fit - hr
    curves, frc_numbers = {}, {}
    sr_repeat = None if pair.lr_repeat is None else _predict(predict_fn, pair.lr_repeat, pair.name)
    for key, image, repeat, pixel in (("lr", lr, pair.lr_repeat, contract.LR_PIXEL_NM),
                                      ("sr", sr, sr_repeat, contract.HR_PIXEL_NM),
                                      ("hr", hr, pair.hr_repeat, contract.HR_PIXEL_NM)):
        curves[key], frc_numbers[key] = _frc(image, repeat, pixel)
    # SR against the target: their noises are independent, so this FRC says up to which
    # frequency the prediction agrees with real ISM data (invented detail does not correlate).
    curves["sr_vs_hr"], frc_numbers["sr_vs_hr"] = _frc(sr, hr, contract.HR_PIXEL_NM)
    frc_numbers["sr_vs_hr"]["method"] = "SR against HR target"
    consistency = {key: consistency_map(lr, image) for key, image in (("sr", sr), ("hr", hr))}
    record = {
        "lr_shape": list(lr.shape), "hr_shape": list(hr.shape),
        "foreground_fraction": float(mask.mean()),
        "metrics": metrics,
        "target_fit": {"gain": gain, "offset": offset},
        "frc": frc_numbers,
        "invented_detail": frc.invented_detail(sr, hr, sr_repeat=sr_repeat,
                                               hr_repeat=pair.hr_repeat),
        "consistency": {key: {k: c[k] for k in ("rse", "rsp", "gain", "offset")}
                        for key, c in consistency.items()},
        # ratio: RMS error / RMS spread, both in target units (1 = calibrated)
        "uncertainty": None if std is None else {
            "mean_std": float(std.mean()), "max_std": float(std.max()),
            "calibration_ratio": error_spread_ratio(abs(gain) * std, error)},
        "error_bar": None,
        "figure": f"figures/{pair.name}.png", "arrays": f"arrays/{pair.name}.npz",
    }
    arrays = {"lr": lr, "hr": hr, "sr": sr, "sr_fitted": sr_fit, "bicubic": bicubic, "mask": mask,
              "error": error,
              "consistency": consistency["sr"]["map"], "consistency_hr": consistency["hr"]["map"]}
    for key, (freq, corr) in curves.items():
        arrays[f"frc_{key}_freq_per_nm"], arrays[f"frc_{key}_correlation"] = freq, corr
    if std is not None:
        arrays["tta_std"] = std
        record["error_bar"], extra = error_bar.pair_error_bar(
            lr, std, error, gain, calibration=calibration, output_scale=output_scale)
        arrays.update(extra)
    return record, arrays
