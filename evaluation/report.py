"""Quality-control report of a 2x model on paired LR/HR data: numbers, trust checks, figures.

``evaluate_arrays`` scores in-memory pairs with any predict callable (training calls it on its
validation images); ``evaluate_folders`` does the same for LR TIFFs and the HR TIFFs of the same
names. ``srunet.model.predict.evaluate_package`` runs a BioImage Model Zoo package through
bioimageio.core, as users will, into ``evaluate_folders``. Output folder::

    report.json     every number (per image and overall)
    summary.md      one page, embeds the figures
    figures/        <name>.png per image (LR | bicubic | SR | HR | error, consistency, FRC)
    arrays/         <name>.npz: lr, hr, sr, bicubic, mask, error, consistency map, FRC curves

The folder is built next to ``out_dir`` and renamed into place at the end, so a reader never
sees a half-written report, and a failed run leaves nothing behind.
"""

from __future__ import annotations

import datetime
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

from srunet.physics import contract
from srunet.evaluation import figures, frc
from srunet.evaluation import error_bar
from srunet.evaluation.consistency import consistency_map
from srunet.evaluation.metrics import (DATA_RANGE_PERCENTILES, all_metrics, fit_gain_offset,
                                       gain_offset, upsample_bicubic)
from srunet.evaluation.uncertainty import Calibration, error_spread_ratio, plot_calibration
from srunet.evaluation.uncertainty import calibration as spread_calibration
from srunet.evaluation.uncertainty import tta_predictions
from srunet.files import check_output_dir, swap_into_place
from srunet.geometry import SCALE
from srunet.store import experiment_id
from srunet.tiff import find_pairs, read_image

EXPERIMENT = "srunet-evaluate"
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


def _as_pairs(pairs) -> list[EvalPair]:
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


def _not_flat(path: Path, name: str) -> np.ndarray:
    """The image at ``path``; ValueError naming the file if it is constant where metrics look."""
    image = read_image(path)[0]
    low, high = np.percentile(image, DATA_RANGE_PERCENTILES)  # the metrics' data range
    if high <= low:
        raise ValueError(f"{path}: the image is constant (value {float(low):g} over its "
                         f"{DATA_RANGE_PERCENTILES[0]:g}-{DATA_RANGE_PERCENTILES[1]:g} "
                         f"percentile range), so metrics, FRC and consistency are undefined; "
                         f"remove the pair {name!r} from both folders or use a real acquisition")
    return image


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


def _draw(folder: Path, name: str, record: dict, std_ratio: float | None) -> None:
    """The figure of one analysed pair, from its saved arrays."""
    with np.load(folder / record["arrays"]) as saved:
        arrays = dict(saved)
    curves = {f"{key.upper().replace('_VS_', ' vs ')} ({'<=' * record['frc'][key]['sampling_limited']}"
              f"{record['frc'][key]['resolution_nm']:.0f} nm)":
              (arrays[f"frc_{key}_freq_per_nm"], arrays[f"frc_{key}_correlation"])
              for key in ("lr", "sr", "hr", "sr_vs_hr")}
    figures.pair_figure(folder / record["figure"], lr=arrays["lr"], hr=arrays["hr"],
                        sr=arrays["sr_fitted"],
                        bicubic=fit_gain_offset(arrays["hr"], arrays["bicubic"]),
                        error=arrays["error"], consistency=arrays["consistency"],
                        frc_curves=curves, std_ratio=std_ratio,
                        # in target units, like the panels it is compared with
                        std=None if "tta_std" not in arrays
                        else abs(record["target_fit"]["gain"]) * arrays["tta_std"],
                        title=name)


def _mean_metrics(records, model_key, region):
    values = [r["metrics"][model_key][region] for r in records if r["metrics"][model_key][region]]
    return {k: float(np.mean([v[k] for v in values])) for k in figures.METRIC_LABELS} if values else {}


def _overall(images: dict) -> dict:
    records = list(images.values())
    overall = {label: {region: _mean_metrics(records, label, region)
                       for region in ("whole", "foreground")} for label in ("model", "bicubic")}
    for key in ("lr", "sr", "hr", "sr_vs_hr"):
        overall[f"frc_{key}_nm"] = float(np.mean([r["frc"][key]["resolution_nm"] for r in records]))
    methods = {r["frc"][k]["method"] for r in records for k in ("lr", "sr", "hr")}
    overall["frc_method"] = methods.pop() if len(methods) == 1 else "mixed (see per image)"
    overall["invented_detail"] = [name for name, r in images.items()
                                  if r["invented_detail"]["flagged"]]
    invented = [r["invented_detail"]["invented"] for r in records]
    overall["invented_detail_max"] = float(np.nanmax(invented)) if np.any(np.isfinite(invented)) else None
    for key in ("sr", "hr"):
        overall[f"consistency_{key}_rsp"] = float(np.mean([r["consistency"][key]["rsp"] for r in records]))
    stds = [r["uncertainty"]["mean_std"] for r in records if r["uncertainty"]]
    overall["tta_mean_std"] = float(np.mean(stds)) if stds else None
    return overall


def _json_safe(value):
    """NaN/inf -> None (strict JSON); numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and out_dir.is_dir() and not overwrite:  # even an empty one: it is replaced
        raise FileExistsError(f"report folder {out_dir} already exists; pass --overwrite "
                              "(overwrite=True) to replace it")
    check_output_dir(out_dir, overwrite=overwrite, what="report folder",
                     flag="--overwrite (overwrite=True)")


def flat_metrics(overall: dict) -> dict:
    """The report's overall numbers as flat MLflow metric names (``model_psnr``,
    ``bicubic_ssim_fg``, ...), finite values only."""
    flat = {}
    for label in ("model", "bicubic"):
        for region, suffix in (("whole", ""), ("foreground", "_fg")):
            for key, value in overall[label][region].items():
                flat[f"{label}_{key}{suffix}"] = value
    for key, value in overall.items():
        if isinstance(value, float):
            flat[key] = value
    if "invented_detail" in overall:  # reports before v3 carried the FRC flag instead
        flat["invented_detail_count"] = float(len(overall["invented_detail"]))
    return {k: v for k, v in flat.items() if v is not None and math.isfinite(v)}


def log_to_mlflow(report_dir: Path, report: dict, tracking_uri: str) -> str:
    """Log the overall numbers and the report folder to a new run of experiment ``EXPERIMENT``.

    Uses an explicit client, so an MLflow run already active in the caller (training) is untouched.
    Returns the run id.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = experiment_id(client, EXPERIMENT, tracking_uri)
    run = client.create_run(experiment, run_name=f"evaluate {Path(str(report['model'])).name}")
    now = int(datetime.datetime.now().timestamp() * 1000)
    client.log_batch(run.info.run_id,
                     metrics=[Metric(k, v, now, 0) for k, v in flat_metrics(report["overall"]).items()],
                     params=[Param("model", str(report["model"])[:500]),
                             Param("images", str(len(report["images"])))])
    client.log_artifacts(run.info.run_id, str(report_dir), artifact_path="report")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def evaluate_arrays(pairs: Iterable, predict_fn: Callable[[np.ndarray], np.ndarray], out_dir, *,
                    overwrite: bool = False, tracking_uri: str | None = None,
                    model_name: str = "predict callable", tta: bool = False,
                    score_tta_mean: bool = True, calibration: Calibration | None = None,
                    output_scale: Callable = error_bar.camera_scale, data: str = "") -> Path:
    """Write the full report for in-memory pairs and a predict callable; return ``summary.md``.

    Parameters
    ----------
    pairs : iterable of EvalPair or tuples (name, lr, hr[, lr_repeat[, hr_repeat]])
        LR (M, N) and HR (2M, 2N) arrays; repeats are second noise realisations of the same field
        (enable the two-image FRC). Names become file names.
    predict_fn : callable
        (M, N) LR array -> (2M, 2N) prediction. Any intensity scale (metrics fit gain/offset).
    out_dir : path
        Report folder; must not exist unless ``overwrite``.
    tracking_uri : str, optional
        Also log to MLflow (experiment "srunet-evaluate").
    model_name : str
        What the report names the model.
    tta : bool
        Also compute the 8-fold test-time-augmentation spread and its calibration, per image
        and pooled, with a calibration plot (8 predictions per image instead of 1).
    score_tta_mean : bool
        With ``tta``: score the TTA mean (training's validation) or, if False, the plain
        prediction, so the metrics do not depend on ``tta``.
    calibration, output_scale, data
        With ``tta``: an error bar (a package's) whose coverage is measured, with a figure;
        LR -> the input's normalisation scale in the prediction's units (default: camera units;
        ``lambda lr: 1.0`` for normalised predictions); what the pairs are. ``tta`` also writes
        ``calibration.json``, an error bar fitted on these pairs (``error_bar.summarise``).
    """
    out_dir = Path(out_dir)
    pairs = _as_pairs(pairs)
    _check_out_dir(out_dir, overwrite)  # fail before the (slow) predictions
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        images, stds, errors = {}, [], []
        pooled = {"tta_std": [], "error_output": [], "sigma": [], "scale": []}
        for pair in pairs:
            try:
                record, arrays = analyse_pair(pair, predict_fn, tta=tta,
                                              score_tta_mean=score_tta_mean,
                                              calibration=calibration, output_scale=output_scale)
            except ValueError as error:  # name the image: the numeric code does not know it
                raise ValueError(f"image {pair.name!r}: {error}") from error
            images[pair.name] = record
            (tmp / "arrays").mkdir(exist_ok=True)
            np.savez_compressed(tmp / record["arrays"], **arrays)
            if tta:
                # std in target units, like the error
                stds.append(abs(record["target_fit"]["gain"]) * arrays["tta_std"])
                errors.append(arrays["error"])
                if record["error_bar"] is not None:
                    for key in ("tta_std", "error_output", "sigma"):
                        pooled[key].append(arrays.get(key))
                    pooled["scale"].append(record["error_bar"]["input_scale"])
        overall = _overall(images)
        report = {"model": model_name,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "settings": {"frc_threshold": FRC_THRESHOLD, "frc_note": FRC_NOTE,
                               "foreground_mask": FOREGROUND_NOTE,
                               "ism_limit_nm": contract.ISM_RESOLUTION_LIMIT_NM,
                               "invented_detail_threshold": frc.INVENTED_THRESHOLD,
                               "invented_detail_note": figures.INVENTED_NOTE,
                               "psf_difference_sigma_nm": contract.psf_difference_sigma_nm(),
                               "lr_pixel_nm": contract.LR_PIXEL_NM, "hr_pixel_nm": contract.HR_PIXEL_NM},
                  "overall": overall, "images": images}
        if tta:
            calib = spread_calibration(stds, errors)
            plot_calibration(calib, tmp / "figures" / "calibration.png")
            report["calibration_figure"] = "figures/calibration.png"
            overall["tta_calibration_ratio"] = calib["ratio"]
            report["calibration"] = {k: np.asarray(v).tolist() for k, v in calib.items()}
            report.update(error_bar.summarise(tmp, pooled, calibration,
                                              data or f"{len(pairs)} pairs, {model_name}"))
            if report["error_bar"]:
                overall["error_bar_coverage"] = report["error_bar"]["coverage"]
        # Figures last: the spread panel quotes the calibration measured over all images.
        for name, record in images.items():
            _draw(tmp, name, record, overall.get("tta_calibration_ratio"))
        report = _json_safe(report)
        (tmp / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
        (tmp / "summary.md").write_text(figures.summary_markdown(report))
        _check_out_dir(out_dir, overwrite)  # another process may have written it meanwhile
        swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if tracking_uri:
        log_to_mlflow(out_dir, report, tracking_uri)
    return out_dir / "summary.md"


def evaluate_folders(predict_fn: Callable[[np.ndarray], np.ndarray], *, lr_dir, hr_dir, out_dir,
                     tracking_uri: str | None = None, overwrite: bool = False,
                     lr_repeat_dir=None, hr_repeat_dir=None,
                     model_name: str = "predict callable", tta: bool = False,
                     calibration: Calibration | None = None,
                     output_scale: Callable = error_bar.camera_scale) -> Path:
    """:func:`evaluate_arrays` on paired TIFF folders (paired by name); returns ``summary.md``.

    ``tta``: also the test-time-augmentation spread and its calibration; the metrics stay those
    of the plain prediction (what ``srunet predict`` writes). ``calibration``, ``output_scale``:
    see :func:`evaluate_arrays`.

    ``lr_repeat_dir`` / ``hr_repeat_dir``: second noise realisations of the same fields (same
    names), for two-image FRC (``srunet simulate --repeats`` writes them). Every pairing error
    is raised before anything is predicted.
    """
    out_dir = Path(out_dir)
    files = find_pairs(lr_dir, hr_dir)  # paired by name; clear errors for unpaired files
    repeats = {}
    if (lr_repeat_dir is None) != (hr_repeat_dir is None):
        raise ValueError("give both lr_repeat_dir and hr_repeat_dir (--lr-repeat, --hr-repeat) "
                         "or neither")
    if lr_repeat_dir is not None:
        repeats = {p.name: p for p in find_pairs(lr_repeat_dir, hr_repeat_dir)}
        missing = sorted({p.name for p in files} - set(repeats))
        if missing:
            raise ValueError(f"no second realisation in {lr_repeat_dir} for: {missing[:5]}")
    _check_out_dir(out_dir, overwrite)

    def pairs():  # consumed whole by _as_pairs: every file is checked before any prediction
        for p in files:
            extra = (read_image(repeats[p.name].lr)[0], read_image(repeats[p.name].hr)[0]) if repeats else ()
            yield (p.name, _not_flat(p.lr, p.name), _not_flat(p.hr, p.name), *extra)

    return evaluate_arrays(pairs(), predict_fn, out_dir, overwrite=overwrite,
                           tracking_uri=tracking_uri, model_name=model_name, tta=tta,
                           score_tta_mean=False, calibration=calibration,
                           output_scale=output_scale,
                           data=f"{len(files)} pairs of {Path(lr_dir).resolve().parent.name}/"
                                f"{Path(lr_dir).name}")
