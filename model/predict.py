"""Prediction with a packaged srunet model, through ``bioimageio.core``.

The package, not this module, owns preprocessing and weights: images go through core's own
preprocessing operator (``zero_mean_unit_variance`` for v2, ``scale_range`` for v1) and model
adapters, so the result is what any bioimage.io consumer computes. What this module adds is
exact tiling for any image size, and speed:

1. core's preprocessing runs once on the *unpadded* image, so the statistics are those of the
   image itself (core's untiled path would take them of a halo-padded image);
2. the normalised image is padded (symmetric, bottom/right) to a declared block size, because
   core places its last block at ``size - inner`` (and v1's pooling phase is anchored at a
   block's top-left, so its blocks must start on its grid; v2 has grid 1);
3. core predicts blocks of ``min + n * step`` input pixels with the declared halo, and the
   padding is cropped off again.

Tiled output then equals whole-image output to float rounding, whatever the block size.
Weights: the package's ONNX weights when it has them and onnxruntime is installed (the same
numbers as PyTorch to ~1e-7, tested; 2.6 vs 0.7-1.1 output Mpx/s on 2 CPU cores, see the
README's benchmarks), else core's choice.
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
from srunet.geometry import Blocks, largest_block, smallest_block
from srunet.model.card import package_error_bar
from srunet.normalization import denormalize, mean_std_range
from srunet.physics import contract
from srunet.tiff import read_image, stem, write_ome_tiff

# Input px per block side, halo included, by weight format. Measured on 2 CPU cores (2048^2
# input, v2): onnxruntime 1.9 / 2.6 / 2.6 / 1.8 output Mpx/s at 384 / 512 / 640 / 1024; PyTorch
# (state dict) 0.7 / 1.1 / 0.9 / 0.7 / 0.4 at 192 / 256 / 320 / 512 / 1024: its CPU convolutions
# slow down on large planes more than the halo overhead (1.5x at 512, 2.3x at 256) costs.
DEFAULT_BLOCK_LR = {"onnx": 512, "pytorch_state_dict": 256, "torchscript": 256}
# A wider halo (v3: 95 px) wastes most of such blocks (a 512 px block keeps 40 %, 256 px 7 %):
# blocks are at least this many halos wide, so at least (1 - 2 / 8)^2 = 56 % is kept.
MIN_BLOCK_HALOS = 8
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


def load_model(source):
    """Load and validate a packaged model: ``rdf.yaml`` path, package folder or ``.zip``.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr

    Raises
    ------
    FileNotFoundError
        If nothing is at ``source`` (or a folder holds no rdf.yaml/bioimageio.yaml).
    ValueError
        If the description is invalid (with the validation summary) or not a v0.5 model.
    """
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    if isinstance(source, v0_5.ModelDescr):
        return source
    path = Path(source)
    if path.is_dir():
        found = [path / n for n in ("rdf.yaml", "bioimageio.yaml") if (path / n).is_file()]
        if not found:
            raise FileNotFoundError(f"model folder {path} holds no rdf.yaml or bioimageio.yaml")
        path = found[0]
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist; pass an rdf.yaml, a package "
                                "folder or a .zip written by `srunet package`")
    descr = load_description(path)
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{path} is not a valid bioimage.io description:\n"
                         f"{descr.validation_summary.format()}")
    if not isinstance(descr, v0_5.ModelDescr):
        raise ValueError(f"{path} describes a {type(descr).__name__}, expected a model in "
                         "format 0.5")
    return descr


def package_blocks(descr) -> Blocks:
    """Block sizes and input halo declared by a package (the same for y and x)."""
    from bioimageio.spec.model import v0_5

    in_axes = {str(a.id): a for a in descr.inputs[0].axes}
    found = {}
    for axis in descr.outputs[0].axes:
        if str(axis.id) not in ("y", "x"):
            continue
        in_axis = in_axes[str(axis.id)]
        if not isinstance(in_axis.size, v0_5.ParameterizedSize):
            raise ValueError(f"input axis {axis.id} has a fixed size; srunet packages declare "
                             "a parameterized size")
        # spec: input halo = output halo x output scale / referenced input scale
        halo = getattr(axis, "halo", 0) * axis.scale / in_axis.scale
        if halo != int(halo):
            raise ValueError(f"axis {axis.id}: input halo {halo} is not a whole number")
        found[str(axis.id)] = Blocks(in_axis.size.min, in_axis.size.step, int(halo))
    if set(found) != {"y", "x"} or found["y"] != found["x"]:
        raise ValueError(f"expected the same block geometry on y and x, got {found}")
    return found["y"]


def preferred_format(descr) -> str | None:
    """"onnx" when the package has ONNX weights and onnxruntime is installed (the fastest on
    CPU, measured), else None: core's own priority order (PyTorch state dict first)."""
    import importlib.util

    if descr.weights.onnx is not None and importlib.util.find_spec("onnxruntime") is not None:
        return "onnx"
    return None


class Predictor:
    """A loaded prediction pipeline, reusable for many images (and for test-time augmentation).

    Parameters
    ----------
    model_descr : ModelDescr or path
        Loaded description or anything :func:`load_model` accepts.
    tiled : bool
        Predict in blocks (bounded memory); False runs the whole image at once.
    block_lr : int, optional
        Largest block side in input pixels, halo included (default: the fastest measured for
        the weight format, ``DEFAULT_BLOCK_LR``); rounded down to a declared block size
        ``min + n * step``.
    weights_format : str, optional
        "pytorch_state_dict", "torchscript" or "onnx"; default: :func:`preferred_format`.
    """

    def __init__(self, model_descr, *, tiled: bool = True, block_lr: int | None = None,
                 weights_format: str | None = None):
        self.descr = load_model(model_descr)
        self.blocks = package_blocks(self.descr)
        self.weights_format = weights_format or preferred_format(self.descr)
        if block_lr is None:
            block_lr = max(DEFAULT_BLOCK_LR.get(self.weights_format or "pytorch_state_dict", 256),
                           MIN_BLOCK_HALOS * self.blocks.halo)
        self.tiled, self.block_lr = tiled, block_lr
        if self.tiled and self.block_lr < self.blocks.min:
            raise ValueError(f"block_lr={self.block_lr} is below the model's smallest block "
                             f"({self.blocks.min} input px)")
        self._pipeline = None
        self.input_units = any(p.id == "zero_mean_unit_variance"
                               for p in self.descr.inputs[0].preprocessing)

    @property
    def pipeline(self):
        """core's prediction pipeline, weights loaded on first use (so input checks run first)."""
        if self._pipeline is None:
            from bioimageio.core import create_prediction_pipeline

            self._pipeline = create_prediction_pipeline(self.descr, weight_format=self.weights_format)
            self._pipeline.load()
        return self._pipeline

    def close(self) -> None:
        """Release the model weights."""
        if self._pipeline is not None:
            self._pipeline.unload()
            self._pipeline = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def output_scale(self, image: np.ndarray) -> float:
        """The input's normalisation scale in the units of this predictor's output (the error
        bar's floor unit): its std + eps in camera units, or 1 for a normalised output (v1)."""
        low, high = mean_std_range(image) if self.input_units else (0.0, 1.0)
        return high - low

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """2x prediction of a raw 2-D image (y, x); returns float32 (2y, 2x)."""
        from bioimageio.core import Sample, Tensor
        from bioimageio.spec.model.v0_5 import AxisId

        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D image (y, x), got shape {image.shape}")
        if not np.all(np.isfinite(image)):
            raise ValueError(f"image contains {np.sum(~np.isfinite(image))} NaN/inf pixels")
        dims = ("batch", "channel", "y", "x")
        in_id, out_id = self.descr.inputs[0].id, self.descr.outputs[0].id
        sample = Sample(members={in_id: Tensor.from_numpy(
            image.astype(np.float32)[None, None], dims=dims)}, stat={}, id="image")
        self.pipeline.apply_preprocessing(sample)  # percentiles of the unpadded image
        normalised = sample.members[in_id].data.values[0, 0]
        height, width = image.shape
        pad = (smallest_block(height, self.blocks) - height, smallest_block(width, self.blocks) - width)
        padded = np.pad(normalised, ((0, pad[0]), (0, pad[1])), mode="symmetric")
        sample = Sample(members={in_id: Tensor.from_numpy(padded[None, None], dims=dims)},
                        stat=sample.stat, id="image")
        # One block that holds the whole padded image is exactly the untiled computation;
        # run it as such (core would otherwise need image >= block and use tiny inner blocks).
        fits = max(padded.shape) + 2 * self.blocks.halo <= self.block_lr
        if self.tiled and not fits:
            block = {AxisId(a): largest_block(min(padded.shape[i], self.block_lr), self.blocks)
                     for i, a in enumerate(("y", "x"))}
            result = self.pipeline.predict_sample_with_fixed_blocking(
                sample, input_block_shape={in_id: block}, skip_preprocessing=True)
        else:
            result = self.pipeline.predict_sample_without_blocking(sample,
                                                                   skip_preprocessing=True)
        out = result.members[out_id].data.values[0, 0, : 2 * height, : 2 * width]
        if self.input_units:
            # v2 networks predict in the input's normalised units (srunet.normalization):
            # undo the zero-mean/unit-variance step, so the output is in camera units.
            return denormalize(out, *mean_std_range(image))
        return np.ascontiguousarray(out, dtype=np.float32)


def predict_image(model_descr, image: np.ndarray, *, tiled: bool = True,
                  block_lr: int | None = None, weights_format: str | None = None) -> np.ndarray:
    """Super-resolve one raw 2-D image (y, x) through bioimageio.core; returns (2y, 2x) float32.

    Any size works. With ``tiled`` (default) memory is bounded by the block size
    (``block_lr`` input pixels per side, default ``DEFAULT_BLOCK_LR``). See :class:`Predictor` for the
    parameters; use it directly to predict many images without reloading the weights.
    """
    with Predictor(model_descr, tiled=tiled, block_lr=block_lr,
                   weights_format=weights_format) as predictor:
        return predictor(image)


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
