"""The prediction pipeline of a packaged srunet model, through ``bioimageio.core``.

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

from pathlib import Path

import numpy as np

from srunet.geometry import Blocks, largest_block, smallest_block
from srunet.normalization import denormalize, mean_std_range

# Input px per block side, halo included, by weight format (bench/predict_blocks.py, 2048^2
# input, v2, 2 CPU cores). onnxruntime: 1.9 / 2.6 / 2.6 / 1.8 output Mpx/s at 384 / 512 / 640 /
# 1024 (Intel Xeon). PyTorch with the channels_last weights of SRUNet (2-core AMD EPYC): state
# dict 0.86 / 1.20 / 0.46 at 256 / 512 / 768, TorchScript 0.89 / 1.06 at 256 / 512; before
# channels_last its plain-layout convolutions slowed down on large planes and 256 was fastest.
DEFAULT_BLOCK_LR = {"onnx": 512, "pytorch_state_dict": 512, "torchscript": 512}
# A wider halo (v3: 95 px) wastes most of such blocks (a 512 px block keeps 40 %, 256 px 7 %):
# blocks are at least this many halos wide, so at least (1 - 2 / 8)^2 = 56 % is kept.
MIN_BLOCK_HALOS = 8


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
            block_lr = max(DEFAULT_BLOCK_LR.get(self.weights_format or "pytorch_state_dict", 512),
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
