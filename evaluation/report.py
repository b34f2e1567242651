"""Quality-control report of a 2x model on paired LR/HR data: numbers, trust checks, figures.

``evaluate_arrays`` scores in-memory pairs with any predict callable (training calls it on its
validation images); ``evaluate_folders`` does the same for LR TIFFs and the HR TIFFs of the same
names. Each pair is analysed by ``srunet.evaluation.analysis``; this module aggregates, draws and
writes. ``srunet.model.predict.evaluate_package`` runs a BioImage Model Zoo package through
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

import numpy as np

from srunet.physics import contract
from srunet.evaluation import error_bar, figures, frc
from srunet.evaluation.analysis import (FOREGROUND_NOTE, FRC_NOTE, FRC_THRESHOLD, analyse_pair,
                                        as_pairs)
from srunet.evaluation.metrics import DATA_RANGE_PERCENTILES, fit_gain_offset
from srunet.evaluation.uncertainty import Calibration, plot_calibration
from srunet.evaluation.uncertainty import calibration as spread_calibration
from srunet.files import check_output_dir, swap_into_place
from srunet.store import experiment_id
from srunet.tiff import find_pairs, read_image

EXPERIMENT = "srunet-evaluate"


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
    pairs : iterable of ``analysis.EvalPair`` or tuples (name, lr, hr[, lr_repeat[, hr_repeat]])
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
    pairs = as_pairs(pairs)
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

    def pairs():  # consumed whole by as_pairs: every file is checked before any prediction
        for p in files:
            extra = (read_image(repeats[p.name].lr)[0], read_image(repeats[p.name].hr)[0]) if repeats else ()
            yield (p.name, _not_flat(p.lr, p.name), _not_flat(p.hr, p.name), *extra)

    return evaluate_arrays(pairs(), predict_fn, out_dir, overwrite=overwrite,
                           tracking_uri=tracking_uri, model_name=model_name, tta=tta,
                           score_tta_mean=False, calibration=calibration,
                           output_scale=output_scale,
                           data=f"{len(files)} pairs of {Path(lr_dir).resolve().parent.name}/"
                                f"{Path(lr_dir).name}")
