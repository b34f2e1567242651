"""Build the bioimage.io model package (format 0.5) from an srunet checkpoint.

The description is built from ``bioimageio.spec`` objects and written with its own savers, never
as hand-formatted YAML. Facts this module relies on are in ``../shared/ZOO-NOTES.md``:

- 2x output = a size reference to the input axis of the same id with input scale 4.0 and output
  scale 2.0 (no unit): bioimage.io (v0.5 meaning) and deepImageJ/JDLL (v0.4 meaning) both read
  that as 2x, with the same input halo.
- Block sizes ``min + n * step`` and the halo are multiples of the network's pooling grid, so
  every block sees the same pooling phase as the whole image (``geometry``).

Layouts written:

- ``build_package(ckpt, "pkg/")``: a folder with ``rdf.yaml`` and the files it names.
- ``build_package(ckpt, "pkg.zip")``: the same as one zip (what the zoo uploads).
- ``export_release(ckpt, repo_root)``: ``repo_root/rdf.yaml`` whose file references point into
  ``repo_root/model/release/`` (the committed release); only one rdf.yaml, so it cannot drift.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from srunet.model import geometry
from srunet.model.unet import SRUNet
from srunet.files import file_sha256 as _sha256, swap_into_place

INPUT_ID, OUTPUT_ID = "input", "output"
INPUT_SCALE, OUTPUT_SCALE = 4.0, 2.0  # encodes 2x for both v0.5 and JDLL, see module docstring
ONNX_OPSET = 17  # JDLL runs opset <= 18
NAME = "srunet confocal-to-ISM 2x super-resolution"
TAGS = ["super-resolution", "fluorescence-light-microscopy", "2d", "pytorch", "unet"]
TOLERANCE = {"relative_tolerance": 1e-3, "absolute_tolerance": 1e-3,
             "mismatched_elements_per_million": 100}
RELEASE_DIR = Path("model") / "release"
WEIGHT_FILES = {"pytorch_state_dict": "weights.pt", "torchscript": "weights_torchscript.pt",
                "onnx": "weights.onnx"}
_EXPORT_CHECK_SIZES = ((97, 131), (33, 17))  # odd, off-grid sizes: padding inside forward


def tiling_geometry(model: SRUNet) -> dict:
    """Block geometry in input pixels: grid, halos, smallest block (``min``) and ``step``.

    ``min = 2 * input_halo + grid``: the smallest block that keeps at least one grid cell after
    the halo is cropped on both sides (the spec needs min output - 2 * halo >= 1).
    """
    grid = model.grid
    radius = model.receptive_radius()
    in_halo = geometry.input_halo(radius, grid)
    out_halo = geometry.output_halo(radius, grid)
    return {"grid": grid, "input_halo": in_halo, "output_halo": out_halo,
            "min": 2 * in_halo + grid, "step": grid}


def valid_size(size: int, geom: dict) -> int:
    """Largest declared block size ``min + n * step`` that is <= ``size`` (ValueError if none)."""
    if size < geom["min"]:
        raise ValueError(f"size {size} is below the smallest block size {geom['min']}")
    return geom["min"] + (size - geom["min"]) // geom["step"] * geom["step"]


def _export_weights(model: SRUNet, state: dict, folder: Path, example_size: int) -> None:
    """Write the three weight formats and check torchscript/ONNX against eager on odd sizes."""
    torch.save(state, folder / WEIGHT_FILES["pytorch_state_dict"])
    example = torch.rand(1, model.in_channels, example_size, example_size)
    with torch.no_grad():
        # trace, not script: script fails on the UNet's control flow (ZOO-NOTES); the padding
        # is computed from x.shape, which tracing keeps symbolic.
        traced = torch.jit.trace(model, example, check_trace=False)
        traced.save(str(folder / WEIGHT_FILES["torchscript"]))
        axes = {0: "batch", 2: "y", 3: "x"}
        torch.onnx.export(model, (example,), str(folder / WEIGHT_FILES["onnx"]), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=[INPUT_ID],
                          output_names=[OUTPUT_ID],
                          dynamic_axes={INPUT_ID: axes, OUTPUT_ID: axes})
    _verify_exports(model, folder)


def _verify_exports(model: SRUNet, folder: Path) -> None:
    import onnxruntime

    scripted = torch.jit.load(str(folder / WEIGHT_FILES["torchscript"]))
    session = onnxruntime.InferenceSession(str(folder / WEIGHT_FILES["onnx"]),
                                           providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch, (height, width) in zip((1, 2), _EXPORT_CHECK_SIZES):
        x = torch.rand(batch, model.in_channels, height, width, generator=generator)
        with torch.no_grad():
            eager = model(x).numpy()
            results = {"torchscript": scripted(x).numpy(),
                       "onnx": session.run(None, {INPUT_ID: x.numpy()})[0]}
        scale = max(float(np.abs(eager).max()), 1e-6)
        for name, result in results.items():
            if result.shape != eager.shape:
                raise RuntimeError(f"{name} export gives shape {result.shape} for input "
                                   f"{tuple(x.shape)}, eager gives {eager.shape}")
            error = float(np.abs(result - eager).max()) / scale
            if error > 1e-4:
                raise RuntimeError(f"{name} export differs from eager by {error:.2e} (relative) "
                                   f"on a {height}x{width} input")


def _default_sample(geom: dict) -> dict:
    # Imported lazily: the simulator is a separate (heavier) module.
    from srunet.training.simulate import simulate_pair

    lr_size = max(128, geom["min"])  # HR field 256 px (contract), or larger for a deep UNet
    lr_size = valid_size(lr_size + geom["step"] - 1, geom)
    return simulate_pair(seed=20240611, hr_size=2 * lr_size)


def _crop_sample(sample: dict, geom: dict) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop the pair to a declared block size (test tensors must fit the axes)."""
    lr = np.asarray(sample["lr"], dtype=np.float32)
    hr = np.asarray(sample["hr"], dtype=np.float32)
    if lr.ndim != 2 or hr.shape != (2 * lr.shape[0], 2 * lr.shape[1]):
        raise ValueError(f"sample needs 2-D 'lr' and 'hr' with hr exactly 2x lr, got "
                         f"{lr.shape} and {hr.shape}")
    if min(lr.shape) < geom["min"]:
        raise ValueError(f"sample 'lr' {lr.shape} is smaller than the model's smallest block "
                         f"{geom['min']}x{geom['min']}; pass a larger sample")
    sizes = [valid_size(s, geom) for s in lr.shape]
    y0, x0 = ((s - c) // 2 for s, c in zip(lr.shape, sizes))
    hy, hx, hh, hw = geometry.lr_to_hr(y0, x0, *sizes)
    return lr[y0:y0 + sizes[0], x0:x0 + sizes[1]], hr[hy:hy + hh, hx:hx + hw]


def describe(src, checkpoint: dict, geom: dict, *, arch_sha256: str,
             with_test_output: bool = True):
    """The ``v0_5.ModelDescr`` of a package whose files are found by ``src(filename)``.

    ``src`` maps a file name to an absolute path (staging) or to a path relative to the
    validation context root (release layout).
    """
    from bioimageio.spec.model import v0_5 as s

    low, high = checkpoint["normalization"]["lr_percentiles"]
    size = s.ParameterizedSize(min=geom["min"], step=geom["step"])
    in_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=["fluorescence"])] + [
        s.SpaceInputAxis(id=a, size=size, scale=INPUT_SCALE) for a in ("y", "x")]
    out_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=["fluorescence"])] + [
        s.SpaceOutputAxisWithHalo(id=a, size=s.SizeReference(tensor_id=INPUT_ID, axis_id=a),
                                  scale=OUTPUT_SCALE, halo=geom["output_halo"])
        for a in ("y", "x")]
    inputs = [s.InputTensorDescr(
        id=INPUT_ID, axes=in_axes, description="raw spinning-disk confocal image (85 nm px)",
        test_tensor=s.FileDescr(source=src("test_input.npy")),
        sample_tensor=s.FileDescr(source=src("sample_input.tif")),
        preprocessing=[s.ScaleRangeDescr(kwargs=s.ScaleRangeKwargs(
            axes=["y", "x"], min_percentile=low, max_percentile=high))])]
    outputs = [s.OutputTensorDescr(
        id=OUTPUT_ID, axes=out_axes, description="ISM-like image, 2x per axis (42.5 nm px)",
        test_tensor=s.FileDescr(source=src("test_output.npy")) if with_test_output else None,
        sample_tensor=s.FileDescr(source=src("sample_output.tif")) if with_test_output else None)]
    torch_version = s.Version(torch.__version__.split("+")[0])
    weights = s.WeightsDescr(
        pytorch_state_dict=s.PytorchStateDictWeightsDescr(
            source=src(WEIGHT_FILES["pytorch_state_dict"]), pytorch_version=torch_version,
            architecture=s.ArchitectureFromFileDescr(
                source=src("unet.py"), sha256=arch_sha256, callable="SRUNet",
                kwargs=dict(checkpoint["model_kwargs"]))),
        torchscript=s.TorchscriptWeightsDescr(source=src(WEIGHT_FILES["torchscript"]),
                                              pytorch_version=torch_version,
                                              parent="pytorch_state_dict"),
        onnx=s.OnnxWeightsDescr(source=src(WEIGHT_FILES["onnx"]), opset_version=ONNX_OPSET,
                                parent="pytorch_state_dict"))
    from srunet.model.card import CITATIONS

    return s.ModelDescr(
        name=NAME,
        description="2x super-resolution UNet: spinning-disk confocal (85 nm px) to ISM "
                    "(42.5 nm px); trained on simulated pairs, see the model card.",
        authors=[s.Author(name="srunet developers")],
        cite=[s.CiteEntry(text=text, doi=doi) for text, doi in CITATIONS],
        license="MIT", tags=TAGS, documentation=s.FileDescr(source=src("README.md")),
        covers=[s.FileDescr(source=src("cover.png"))], inputs=inputs, outputs=outputs, weights=weights,
        config=s.Config(bioimageio=s.BioimageioConfig(
            reproducibility_tolerance=[s.ReproducibilityTolerance(**TOLERANCE)]),
            deepimagej={"allow_tiling": True}))


def _test_output(descr, test_input: np.ndarray) -> np.ndarray:
    """Full 2x output of the test input, computed exactly as ``bioimageio test`` does."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    with create_prediction_pipeline(descr, weight_format="pytorch_state_dict") as pp:
        sample = get_test_input_sample(descr)
        pp.apply_preprocessing(sample)
        out = pp.predict_sample_without_blocking(sample, skip_preprocessing=True,
                                                 skip_input_padding=True,
                                                 skip_output_cropping=True)
    return out.members[OUTPUT_ID].data.values.astype(np.float32)


def _write_files(checkpoint: dict, folder: Path, sample: dict | None) -> tuple[dict, object]:
    """Write every package file into ``folder``; return the tiling geometry and description."""
    import tifffile

    from srunet.evaluation.metrics import all_metrics, upsample_bicubic
    from srunet.model import card
    from srunet.model.predict import predict_image
    from srunet.training.checkpoint import build_model

    model = build_model(checkpoint)
    geom = tiling_geometry(model)
    shutil.copyfile(Path(__file__).with_name("unet.py"), folder / "unet.py")
    _export_weights(model, checkpoint["model_state"], folder, geom["min"])

    lr, hr = _crop_sample(sample if sample is not None else _default_sample(geom), geom)
    np.save(folder / "test_input.npy", lr[None, None])
    tifffile.imwrite(folder / "sample_input.tif", lr[None, None])
    # Placeholder docs/cover so the first (test-output-less) description validates.
    (folder / "README.md").write_text(f"# {NAME}\n")
    card.write_cover(folder / "cover.png", lr=lr, bicubic=lr, sr=lr, hr=hr)
    src = lambda name: folder / name  # noqa: E731 - absolute paths into the staging folder
    arch = _sha256(folder / "unet.py")
    draft = describe(src, checkpoint, geom, arch_sha256=arch, with_test_output=False)
    np.save(folder / "test_output.npy", _test_output(draft, lr))

    sr = predict_image(draft, lr, weights_format="pytorch_state_dict")
    tifffile.imwrite(folder / "sample_output.tif", sr[None, None])
    bicubic = upsample_bicubic(lr)
    metrics = {"model": all_metrics(hr, sr), "bicubic": all_metrics(hr, bicubic)}
    card.write_cover(folder / "cover.png", lr=lr, bicubic=bicubic, sr=sr, hr=hr)
    (folder / "README.md").write_text(card.readme_text(
        name=NAME, checkpoint=checkpoint, input_halo=geom["input_halo"], grid=geom["grid"],
        min_size=geom["min"], metrics=metrics), encoding="utf-8")
    return geom, describe(src, checkpoint, geom, arch_sha256=arch)


def run_bioimageio_test(source: Path) -> None:
    """``bioimageio.core.test_model`` on a written package, all weight formats, offline.

    Raises
    ------
    RuntimeError
        With the full validation summary text when the status is not "passed".
    """
    from bioimageio.core import test_model

    summary = test_model(source)
    if summary.status != "passed":
        raise RuntimeError(f"bioimageio test failed for {source}:\n{summary.format()}")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to "
                              "replace it")


def build_package(checkpoint, out, *, overwrite: bool = False, run_test: bool = True,
                  sample: dict | None = None) -> Path:
    """Write a complete, tested bioimage.io model package from an srunet checkpoint.

    Parameters
    ----------
    checkpoint : path or dict
        Checkpoint file written by ``srunet train`` (or an already loaded checkpoint dict).
    out : path
        Output folder (gets ``rdf.yaml`` and the files it names), or a ``.zip`` file.
    overwrite : bool
        Replace an existing ``out``; otherwise FileExistsError.
    run_test : bool
        Run ``bioimageio.core``'s test (all weight formats) before moving the package into place.
    sample : dict, optional
        ``{"lr": array, "hr": array}`` pair for test/sample tensors, cover and README metrics;
        default: ``srunet.training.simulate.simulate_pair`` with a fixed seed.

    Returns
    -------
    Path
        The folder's ``rdf.yaml``, or the zip file.

    The package is built and tested in a temporary folder beside ``out`` and then renamed, so
    ``out`` is never left half-written.
    """
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    from srunet.training.checkpoint import load_checkpoint

    out = Path(out)
    _check_out(out, overwrite)
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.build-"))
    try:
        files = staging / "files"
        files.mkdir()
        _, descr = _write_files(checkpoint, files, sample)
        if out.suffix.lower() == ".zip":
            written = save_bioimageio_package(descr, output_path=staging / out.name)
        else:
            written = save_bioimageio_package_as_folder(descr, output_path=staging / "package")
        if run_test:
            run_bioimageio_test(written)
        _check_out(out, overwrite)  # another process may have written it meanwhile
        swap_into_place(written, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out if out.suffix.lower() == ".zip" else out / "rdf.yaml"


def export_release(checkpoint, repo_root, *, overwrite: bool = False, run_test: bool = True,
                   sample: dict | None = None) -> Path:
    """Write the committed release: ``repo_root/rdf.yaml`` + files in ``model/release/``.

    The files are first built (and tested) as an ordinary folder package, then moved to
    ``model/release/``; the root ``rdf.yaml`` is the same description re-rooted at
    ``repo_root`` (file references ``model/release/<name>``), validated and tested again.

    Returns
    -------
    Path
        ``repo_root/rdf.yaml``.
    """
    from bioimageio.spec import ValidationContext, save_bioimageio_yaml_only

    from srunet.training.checkpoint import load_checkpoint

    root = Path(repo_root).resolve()
    rdf, release = root / "rdf.yaml", root / RELEASE_DIR
    for path in (rdf, release):
        _check_out(path, overwrite)
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".release.build-"))
    try:
        build_package(checkpoint, staging / "package", run_test=run_test, sample=sample)
        (staging / "package" / "rdf.yaml").unlink()  # one description only: the root one
        release.parent.mkdir(parents=True, exist_ok=True)
        swap_into_place(staging / "package", release)
        model = build_model_geometry(checkpoint)
        with ValidationContext(root=root, perform_io_checks=True):
            descr = describe(lambda name: (RELEASE_DIR / name).as_posix(), checkpoint, model,
                             arch_sha256=_sha256(release / "unet.py"))
        tmp_rdf = staging / "rdf.yaml"
        save_bioimageio_yaml_only(descr, file=tmp_rdf)
        os.replace(tmp_rdf, rdf)
        if run_test:
            run_bioimageio_test(rdf)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rdf


def build_model_geometry(checkpoint: dict) -> dict:
    """Tiling geometry of the network a checkpoint describes (no weights needed)."""
    return tiling_geometry(SRUNet(**checkpoint["model_kwargs"]))
