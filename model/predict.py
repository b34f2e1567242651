"""``srunet predict`` and ``srunet evaluate`` on files: a packaged model over TIFF folders.

:func:`predict_files` super-resolves TIFF/OME-TIFF files through :class:`~srunet.model.predictor.
Predictor` (bioimageio.core, exact tiling) and writes OME-TIFFs atomically, with the input checks
users need (flat images, pixel size, the single-image invented-detail check of ``--consistency``)
and the calibrated error bar of ``--uncertainty``. :func:`evaluate_package` runs a package into
the quality report (``srunet.evaluation.report``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from srunet.evaluation import frc
from srunet.evaluation.consistency import consistency_map
from srunet.evaluation.report import evaluate_folders
from srunet.evaluation.uncertainty import (Calibration, apply_calibration, load_calibration,
                                           tta_std)
from srunet.files import check_output_dir
from srunet.model.record import package_error_bar
from srunet.model.predictor import Predictor, load_model
from srunet.physics import contract
from srunet.tiff import read_image, stem, write_ome_tiff

DEFAULT_PIXEL_UM = 0.085  # contract: spinning-disk confocal pixel size
# An image whose 0.1-99.9 percentile range is below this many ADU (or below 1e-6 of its mean
# level) holds no structure to super-resolve: the percentile normalisation then blows up noise
# or rounding into a meaningless output, so predict warns.
FLAT_RANGE = 1e-6
# Input pixel sizes outside this factor of the contract's 85 nm are warned about: the network
# learned the PSF width in pixels at 85 nm, so at other samplings it sharpens the wrong scale.
PIXEL_TOLERANCE = (0.75, 1.33)


def flat_image_warning(image: np.ndarray, path) -> str | None:
    """Why ``image`` is too flat to super-resolve (constant or near-empty), or None."""
    low, high = np.percentile(image, (0.1, 99.9))
    scale = max(abs(float(low)), abs(float(high)), 1.0)
    if high - low <= FLAT_RANGE * scale:
        kind = "constant" if np.ptp(image) == 0 else "nearly constant (99.8 % of pixels)"
        return (f"{path}: the image is {kind} at {float(np.median(image)):g}; it holds no "
                "structure, so its super-resolved output is meaningless. Check that it is the "
                "right channel/plane and not an empty or saturated frame")
    return None


def pixel_size_warning(pixel_um: float | None, path) -> str | None:
    """Why the input's pixel size does not fit the model (outside ``PIXEL_TOLERANCE`` of the
    contract's input pixel), or None (also when the file has none)."""
    if pixel_um is None:
        return None
    pixel_nm, expected = pixel_um * 1000.0, contract.LR_PIXEL_NM
    if PIXEL_TOLERANCE[0] <= pixel_nm / expected <= PIXEL_TOLERANCE[1]:
        return None
    return (f"{path}: pixel size {pixel_nm:g} nm, but the model expects {expected:g} nm "
            f"confocal pixels (warning outside {PIXEL_TOLERANCE[0]:g}-{PIXEL_TOLERANCE[1]:g}x "
            "of that); its output at this sampling is not what it was trained for. Resample "
            f"the image to {expected:g} nm pixels, or fine-tune on your own pairs (README: "
            "\"Fine-tuning the release\")")


def high_band_warning(sr: np.ndarray, pixel_nm: float, path) -> str | None:
    """The single-image invented-detail check of ``--consistency``, or None when it passes.

    :func:`srunet.evaluation.frc.high_band_fraction` above ``HIGH_BAND_THRESHOLD``: without a
    target or a second noise draw it cannot tell invented detail from passed-through noise, and
    it catches textures of about 10 % of the local brightness (the two-draw test of ``srunet
    evaluate`` catches 5 %). None too when the output grid cannot hold that band.
    """
    if pixel_nm / contract.ISM_RESOLUTION_LIMIT_NM >= frc.AXIS_FREQUENCY_MAX:
        return None
    share = frc.high_band_fraction(sr, pixel_size_nm=pixel_nm)
    if share <= frc.HIGH_BAND_THRESHOLD:
        return None
    return (f"{path}: {share:.1e} of the output's power lies beyond the "
            f"{contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm ISM limit (the release: at most 6.2e-4; "
            f"warning above {frc.HIGH_BAND_THRESHOLD:g}): invented detail or input noise passed "
            "through. Check the model with `srunet evaluate` on pairs with second noise draws "
            "(--lr-repeat/--hr-repeat) before interpreting structures finer than that")


def predict_files(inputs, *, model, out_dir, overwrite: bool = False, consistency: bool = False,
                  uncertainty: bool = False, weights_format: str | None = None,
                  block_lr: int | None = None) -> list[Path]:
    """Super-resolve TIFF/OME-TIFF files; write ``out_dir/NAME_sr.ome.tif`` for each.

    Parameters
    ----------
    inputs : sequence of paths
        2-D images (singleton axes are dropped), raw camera values.
    model : path or ModelDescr
        Package: rdf.yaml, folder or .zip.
    out_dir : path
        Created if missing.
    overwrite : bool
        Replace existing outputs; otherwise FileExistsError before anything is computed.
    consistency, uncertainty : bool
        Also write ``NAME_consistency.ome.tif`` (physics-consistency map on the input grid;
        and warn when the output holds much power beyond the ISM limit, :func:`high_band_warning`)
        and, from the 8-fold test-time augmentation, ``NAME_sigma.ome.tif`` (the package's
        calibrated error bar: sigma in the output's units, +-1.64 sigma a 90 % interval) or,
        for a package without a calibration, ``NAME_tta_spread.ome.tif`` (the raw spread, a
        relative map that underestimates the error several-fold; a warning says so).
    weights_format, block_lr : optional
        As for :class:`Predictor` (default: ONNX when available, its fastest block size).

    Returns
    -------
    list of Path
        Written files, in input order (SR image, then the optional maps).

    Output pixel size is half the input's (OME PhysicalSizeX or TIFF resolution); when the
    input has none, 85 nm is assumed and a warning says so. A constant or nearly empty input
    (:func:`flat_image_warning`) or one whose pixel size is far from the model's 85 nm
    (:func:`pixel_size_warning`) is predicted but warned about. The output folder is checked
    (writable, free space) and the model loaded before the folder is created; a failed run
    removes the folder again if it created it and nothing was written.
    """
    from tqdm import tqdm

    inputs = [Path(p) for p in inputs]
    out_dir = Path(out_dir)
    descr = load_model(model)  # a wrong model path fails before the output folder exists
    error_bar = package_error_bar(descr) if uncertainty else None
    spread_name = "sigma" if error_bar is not None else "tta_spread"
    planned = {}
    for path in inputs:
        name = stem(path)
        names = [f"{name}_sr.ome.tif"] + [f"{name}_consistency.ome.tif"] * consistency + \
            [f"{name}_{spread_name}.ome.tif"] * uncertainty
        planned[path] = [out_dir / n for n in names]
    targets = [t for ts in planned.values() for t in ts]
    if len(set(targets)) != len(targets):
        raise ValueError("two inputs have the same name and would write the same output file")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output exists: {', '.join(existing)}; pass overwrite=True "
                              "(CLI: --overwrite) to replace")
    need = 0
    for path in inputs:  # fail on any bad input before the model runs or anything is written
        pixels = read_image(path)[0].size  # (read again below: one image in memory at a time)
        need += pixels * 4 * (4 + 4 * uncertainty + consistency)  # float32 outputs
    check_output_dir(out_dir, may_exist=True, what="prediction output folder", need_bytes=need)
    if uncertainty and error_bar is None:
        warnings.warn(f"{model}: the package ships no calibrated error bar, so --uncertainty "
                      "writes NAME_tta_spread.ome.tif, the raw test-time-augmentation spread: a "
                      "relative map, not an error bar (it underestimates the error several-fold). "
                      "Calibrate one on your pairs with `srunet evaluate` (REPORT/calibration."
                      "json) and ship it with `srunet package --calibration`", stacklevel=2)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        predictor = Predictor(descr, weights_format=weights_format, block_lr=block_lr)
        _predict_into(predictor, inputs, planned, written, consistency, uncertainty, tqdm,
                      error_bar)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no empty folder behind
        raise
    return written


def _predict_into(predictor, inputs, planned, written, consistency, uncertainty, tqdm,
                  error_bar) -> None:
    """The loop of :func:`predict_files`; appends each written file to ``written``."""
    with predictor:
        for path in tqdm(inputs, desc="srunet predict", unit="image"):
            lr, pixel_um = read_image(path)
            if (message := flat_image_warning(lr, path)) is not None:
                warnings.warn(message, stacklevel=3)
            if (message := pixel_size_warning(pixel_um, path)) is not None:
                warnings.warn(message, stacklevel=3)
            if pixel_um is None:
                warnings.warn(f"{path}: no pixel size in the file; assuming "
                              f"{DEFAULT_PIXEL_UM * 1000:g} nm (spinning-disk confocal)",
                              stacklevel=2)
                pixel_um = DEFAULT_PIXEL_UM
            sr = predictor(lr)
            targets = iter(planned[path])
            written.append(write_ome_tiff(next(targets), sr, pixel_um / 2))
            if consistency:
                written.append(write_ome_tiff(next(targets), consistency_map(lr, sr)["map"].astype(np.float32),
                                              pixel_um))
                if (message := high_band_warning(sr, pixel_um * 500.0, path)) is not None:
                    warnings.warn(message, stacklevel=3)
            if uncertainty:
                _, std = tta_std(predictor, lr)
                if error_bar is not None:  # calibrated sigma, in the output's units
                    std = apply_calibration(error_bar, std, predictor.output_scale(lr))
                written.append(write_ome_tiff(next(targets), std.astype(np.float32), pixel_um / 2))


def evaluate_package(model, *, lr_dir, hr_dir, out_dir, tracking_uri: str | None = None,
                     overwrite: bool = False, lr_repeat_dir=None, hr_repeat_dir=None,
                     uncertainty: bool = True, calibration=None) -> Path:
    """QC report of a packaged model (``rdf.yaml``, folder or ``.zip``) on paired TIFF folders.

    The package runs through bioimageio.core (:class:`Predictor`), as users will run it; the
    report is :func:`srunet.evaluation.report.evaluate_folders` (see there for the folders and
    second realisations). ``uncertainty`` (default): also the test-time-augmentation spread
    and its calibration against the real error (8 predictions per image instead of 1; the
    metrics are those of the plain prediction either way): the coverage of the package's
    calibrated error bar, or of ``calibration`` (a ``Calibration`` or a calibration.json path)
    instead, and ``calibration.json``, one fitted on these pairs. Returns ``summary.md``.
    """
    if calibration is not None and not uncertainty:
        raise ValueError("--calibration measures an error bar's coverage, which needs the "
                         "test-time augmentation: drop --no-uncertainty (uncertainty=False)")
    descr = load_model(model)
    if calibration is not None and not isinstance(calibration, Calibration):
        calibration = load_calibration(calibration)
    with Predictor(descr) as predictor:
        return evaluate_folders(predictor, lr_dir=lr_dir, hr_dir=hr_dir, out_dir=out_dir,
                                tracking_uri=tracking_uri, overwrite=overwrite,
                                lr_repeat_dir=lr_repeat_dir, hr_repeat_dir=hr_repeat_dir,
                                model_name=str(model), tta=uncertainty,
                                calibration=calibration or package_error_bar(descr),
                                output_scale=predictor.output_scale)
