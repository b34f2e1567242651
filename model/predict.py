"""Prediction with a packaged srunet model, through ``bioimageio.core``.

The package, not this module, owns preprocessing and weights: images go through core's own
``scale_range`` operator and model adapters, so the result is what any bioimage.io consumer
computes. What this module adds is exact tiling for any image size:

1. core's preprocessing runs once on the *unpadded* image, so the percentiles are those of the
   image itself (core's untiled path would take them of a halo-padded image, ~0.3 % off);
2. the normalised image is padded (symmetric, bottom/right) to the block grid, because core
   places its last block at ``size - inner`` and the UNet's pooling phase is anchored at a
   block's top-left: a block start off the grid would change the result;
3. core predicts blocks of ``min + n * step`` input pixels with the declared halo, and the
   padding is cropped off again.

Tiled output then equals whole-image output to float rounding, whatever the block size.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

DEFAULT_BLOCK_LR = 512  # input px per block side: ~100 MB of activations for the default UNet
DEFAULT_PIXEL_UM = 0.085  # contract: spinning-disk confocal pixel size
_TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")


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


def _block_geometry(descr) -> dict:
    """min, step and input halo of the y/x axes, read from the description (input pixels)."""
    from bioimageio.spec.model import v0_5

    ipt, out = descr.inputs[0], descr.outputs[0]
    in_axes = {str(a.id): a for a in ipt.axes}
    geom = {}
    for axis in out.axes:
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
        geom[str(axis.id)] = {"min": in_axis.size.min, "step": in_axis.size.step,
                              "halo": int(halo)}
    return geom


class Predictor:
    """A loaded prediction pipeline, reusable for many images (and for test-time augmentation).

    Parameters
    ----------
    model_descr : ModelDescr or path
        Loaded description or anything :func:`load_model` accepts.
    tiled : bool
        Predict in blocks (bounded memory); False runs the whole image at once.
    block_lr : int, optional
        Largest block side in input pixels, halo included (default 512); rounded down to a
        declared block size ``min + n * step``.
    weights_format : str, optional
        "pytorch_state_dict", "torchscript" or "onnx"; default: core's choice.
    """

    def __init__(self, model_descr, *, tiled: bool = True, block_lr: int | None = None,
                 weights_format: str | None = None):
        from bioimageio.core import create_prediction_pipeline

        self.descr = load_model(model_descr)
        self.geom = _block_geometry(self.descr)
        self.tiled, self.block_lr = tiled, DEFAULT_BLOCK_LR if block_lr is None else block_lr
        smallest = max(g["min"] for g in self.geom.values())
        if self.tiled and self.block_lr < smallest:
            raise ValueError(f"block_lr={self.block_lr} is below the model's smallest block "
                             f"({smallest} input px)")
        self.pipeline = create_prediction_pipeline(self.descr, weight_format=weights_format)
        self.pipeline.load()

    def close(self) -> None:
        """Release the model weights."""
        self.pipeline.unload()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _padded_size(self, size: int, axis: str) -> int:
        g = self.geom[axis]
        return max(-(-size // g["step"]) * g["step"], g["min"])

    def _block_size(self, padded: int, axis: str) -> int:
        g = self.geom[axis]
        limit = min(padded, self.block_lr)
        return g["min"] + (limit - g["min"]) // g["step"] * g["step"]

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
        pad = (self._padded_size(height, "y") - height, self._padded_size(width, "x") - width)
        padded = np.pad(normalised, ((0, pad[0]), (0, pad[1])), mode="symmetric")
        sample = Sample(members={in_id: Tensor.from_numpy(padded[None, None], dims=dims)},
                        stat=sample.stat, id="image")
        # One block that holds the whole padded image is exactly the untiled computation;
        # run it as such (core would otherwise need image >= block and use tiny inner blocks).
        fits = all(padded.shape[i] + 2 * self.geom[a]["halo"] <= self.block_lr
                   for i, a in enumerate(("y", "x")))
        if self.tiled and not fits:
            block = {AxisId(a): self._block_size(padded.shape[i], a)
                     for i, a in enumerate(("y", "x"))}
            result = self.pipeline.predict_sample_with_fixed_blocking(
                sample, input_block_shape={in_id: block}, skip_preprocessing=True)
        else:
            result = self.pipeline.predict_sample_without_blocking(sample,
                                                                   skip_preprocessing=True)
        out = result.members[out_id].data.values[0, 0, : 2 * height, : 2 * width]
        return np.ascontiguousarray(out, dtype=np.float32)


def predict_image(model_descr, image: np.ndarray, *, tiled: bool = True,
                  block_lr: int | None = None, weights_format: str | None = None) -> np.ndarray:
    """Super-resolve one raw 2-D image (y, x) through bioimageio.core; returns (2y, 2x) float32.

    Any size works. With ``tiled`` (default) memory is bounded by the block size
    (``block_lr`` input pixels per side, default 512). See :class:`Predictor` for the
    parameters; use it directly to predict many images without reloading the weights.
    """
    with Predictor(model_descr, tiled=tiled, block_lr=block_lr,
                   weights_format=weights_format) as predictor:
        return predictor(image)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _TIFF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _ome_pixel_size(xml: str) -> float | None:
    """PhysicalSizeX/Y of the first OME Pixels element, in micrometres (None if absent)."""
    units = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6, "Å": 1e-4}
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    if "PhysicalSizeX" not in attrs:
        return None
    unit = attrs.get("PhysicalSizeXUnit", "µm")
    if unit not in units:
        return None
    return float(attrs["PhysicalSizeX"]) * units[unit]


def read_image(path: Path) -> tuple[np.ndarray, float | None]:
    """Read a 2-D TIFF/OME-TIFF plane and its pixel size (um, None if the file has none)."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            axes = tif.series[0].axes if tif.series else "?"
            pixel_um = _ome_pixel_size(tif.ome_metadata) if tif.ome_metadata else None
            page = tif.pages[0]
            if pixel_um is None and "XResolution" in page.tags:
                num, den = page.tags["XResolution"].value
                per_unit = num / den if den else 0.0
                unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 1
                ij_unit = (tif.imagej_metadata or {}).get("unit", "")
                scale = {2: 25400.0, 3: 1e4}.get(unit)  # inch, cm -> um
                if scale is None and ij_unit in ("micron", "um", "µm", "\\u00B5m"):
                    scale = 1.0
                if scale and per_unit > 0:
                    pixel_um = scale / per_unit
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: cannot read as TIFF ({type(error).__name__}: {error})") from error
    image = np.squeeze(data)
    if image.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D plane (y, x) after dropping singleton axes, "
                         f"got shape {data.shape} (axes '{axes}'); split channels, z-slices or "
                         "time points into separate 2-D files first")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{path}: contains {int(np.sum(~np.isfinite(image)))} NaN/inf pixels; "
                         "fix or mask them before prediction")
    return image.astype(np.float32), pixel_um


def write_ome_tiff(path: Path, image: np.ndarray, pixel_um: float) -> Path:
    """Write a float32 2-D OME-TIFF with its physical pixel size, atomically (temp + rename)."""
    import tifffile

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tifffile.imwrite(
            tmp, np.asarray(image, dtype=np.float32), ome=True, photometric="minisblack",
            metadata={"axes": "YX", "PhysicalSizeX": pixel_um, "PhysicalSizeXUnit": "µm",
                      "PhysicalSizeY": pixel_um, "PhysicalSizeYUnit": "µm"},
            # TIFF resolution too, for readers that ignore OME-XML
            resolution=(1e4 / pixel_um, 1e4 / pixel_um), resolutionunit="CENTIMETER")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def predict_files(inputs, *, model, out_dir, overwrite: bool = False, consistency: bool = False,
                  uncertainty: bool = False) -> list[Path]:
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
        Also write ``NAME_consistency.ome.tif`` (physics-consistency map on the input grid)
        and ``NAME_uncertainty.ome.tif`` (test-time-augmentation std on the output grid).

    Returns
    -------
    list of Path
        Written files, in input order (SR image, then the optional maps).

    Output pixel size is half the input's (OME PhysicalSizeX or TIFF resolution); when the
    input has none, 85 nm is assumed and a warning says so.
    """
    from tqdm import tqdm

    inputs = [Path(p) for p in inputs]
    out_dir = Path(out_dir)
    planned = {}
    for path in inputs:
        stem = _stem(path)
        names = [f"{stem}_sr.ome.tif"] + [f"{stem}_consistency.ome.tif"] * consistency + \
            [f"{stem}_uncertainty.ome.tif"] * uncertainty
        planned[path] = [out_dir / n for n in names]
    targets = [t for ts in planned.values() for t in ts]
    if len(set(targets)) != len(targets):
        raise ValueError("two inputs have the same name and would write the same output file")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output exists: {', '.join(existing)}; pass overwrite=True "
                              "(CLI: --overwrite) to replace")
    for path in inputs:  # fail on any bad input before the model runs or anything is written
        read_image(path)  # (read again below: one image in memory at a time)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with Predictor(model) as predictor:
        for path in tqdm(inputs, desc="srunet predict", unit="image"):
            lr, pixel_um = read_image(path)
            if pixel_um is None:
                warnings.warn(f"{path}: no pixel size in the file; assuming "
                              f"{DEFAULT_PIXEL_UM * 1000:g} nm (spinning-disk confocal)",
                              stacklevel=2)
                pixel_um = DEFAULT_PIXEL_UM
            sr = predictor(lr)
            targets = iter(planned[path])
            written.append(write_ome_tiff(next(targets), sr, pixel_um / 2))
            if consistency:
                from srunet.evaluation.consistency import consistency_map

                written.append(write_ome_tiff(next(targets), consistency_map(lr, sr)["map"],
                                              pixel_um))
            if uncertainty:
                from srunet.evaluation.uncertainty import tta_std

                _, std = tta_std(predictor, lr)
                written.append(write_ome_tiff(next(targets), std, pixel_um / 2))
    return written
