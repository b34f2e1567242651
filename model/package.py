"""Build the bioimage.io model package (format 0.5) from an srunet checkpoint.

The description is built from ``bioimageio.spec`` objects and written with its own savers, never
as hand-formatted YAML. Facts this module relies on are in docs/packaging.md:

- 2x output = a size reference to the input axis of the same id with input scale 4.0 and output
  scale 2.0 (no unit): bioimage.io (v0.5 meaning) and deepImageJ/JDLL (v0.4 meaning) both read
  that as 2x, with the same input halo.
- The halo is the measured receptive radius of the weights. Block sizes ``min + n * step`` are
  pleasant to tile (:func:`tiling_geometry`): the smallest keeps ``MIN_KEPT`` px beyond the halo
  per side, and the step (``SIZE_STEP``, 1) makes every size from min on a declared size. Halo, min and step
  are multiples of the network's ``grid`` (1 for the phase-free v2 network, 2**depth for v1's
  pooling UNet), so every block sees the same phase as the whole image (``geometry``).

Layouts written:

- ``build_package(ckpt, "pkg/")``: a folder with ``rdf.yaml`` and the files it names.
- ``build_package(ckpt, "pkg.zip")``: the same as one zip (what the zoo uploads).
- ``export_release(ckpt, repo_root)``: ``repo_root/rdf.yaml`` whose file references point into
  ``repo_root/model/release/`` (the committed release), and ``model/release/rdf.yaml``, the same
  description with plain file names (what an installed wheel runs); both from one description.

Every ``rdf.yaml`` is rewritten as format 0.5.10 so the zoo's runner reads it too
(``zoo_format``). Publication metadata (authors, maintainers, git_repo, cite, tags, training
data) comes from a YAML file (``publication``), by default the project's own.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from srunet.evaluation.metrics import all_metrics, upsample_bicubic
from srunet.files import file_sha256 as _sha256, swap_into_place
from srunet.geometry import (Blocks, block_geometry, largest_block, lr_to_hr, round_up,
                             smallest_block)
from srunet.model import card
from srunet.model.checkpoint import build_model, load_checkpoint
from srunet.model.export import (INPUT_ID, ONNX_OPSET, OUTPUT_ID, WEIGHT_FILES, export_weights,
                                 verify_exports)
from srunet.model.predictor import load_model, predict_image
from srunet.model.record import METRICS_FILE, card_record, write_record
from srunet.normalization import EPS, MEAN_STD, method_of
from srunet.model.publication import Publication, load_publication
from srunet.model.unet import SRUNet
from srunet.model.zoo_format import (make_runner_compatible, reproducible_torchscript, reroot_rdf,
                                     run_bioimageio_test, zip_folder)
from srunet.simulation.simulator import simulate_pair
from srunet.tiff import write_tensor_tiff

INPUT_SCALE, OUTPUT_SCALE = 4.0, 2.0  # encodes 2x for both v0.5 and JDLL, see module docstring
NAME = "srunet confocal-to-ISM 2x super-resolution"
# The site's vocabulary first (image-restoration is the category super-resolution sits in);
# a publication file adds its own tags after these.
TAGS = ["super-resolution", "image-restoration", "fluorescence-light-microscopy", "confocal",
        "2d", "unet", "pytorch", "torchscript", "onnx"]
TOLERANCE = {"relative_tolerance": 1e-3, "absolute_tolerance": 1e-3,
             "mismatched_elements_per_million": 100}
# Block sizes (input px, halo included). A consumer that asks for the smallest block
# (bioimageio.core blocksize_parameter=0) should still keep a useful interior: with
# min = 2 * halo + 1 (the v2 release had min 95 for halo 47) each block kept ~1 px, 147,456
# blocks for a 384x384 image. The step stays 1: bioimageio.core accepts a numpy/TIFF image
# (`bioimageio predict`) only at a declared size, so every size from min on must be one (with a
# step of 32, a 1000x700 image was refused). Consumers choose larger blocks with n (core:
# blocksize_parameter=352 gives 512 px blocks); bench/tiling_sizes.py, docs/packaging.md.
MIN_KEPT = 64   # input px a smallest block keeps per axis, beyond the halo on both sides
SIZE_STEP = 1   # any size from min on is a declared size
RELEASE_DIR = Path("model") / "release"
SAMPLE_SEED = 20240611  # simulator seed of the package's default sample pair
# The project's own publication metadata: training/publication.yaml in a checkout, and the same
# file as package data of srunet.training in an installed wheel (same relative place).
PROJECT_PUBLICATION = Path(__file__).resolve().parent.parent / "training" / "publication.yaml"


def project_publication() -> Publication:
    """The project's own publication metadata (``PROJECT_PUBLICATION``)."""
    return load_publication(PROJECT_PUBLICATION)


def measured_radius(model: SRUNet) -> int:
    """How far, in input pixels, the network's output really depends on its input.

    The gradient support, in float64 on a random input: the largest Chebyshev distance from
    input pixel c to an input pixel with a nonzero gradient of the output block (2c..2c+1)^2,
    maximised over the ``grid`` positions of c. The input is large enough that the support
    never reaches its border (zero padding there would truncate it).

    Raises
    ------
    RuntimeError
        If the support exceeds ``model.receptive_radius()``: the formula would under-declare
        the halo and tiles would show seams.
    """
    formula, grid = int(model.receptive_radius()), int(model.grid)
    size = 2 * (formula + grid) + 16
    probe = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(0)
    radius = 0
    for phase in range(grid):
        c = size // 2 + phase
        x = torch.randn(1, 1, size, size, dtype=torch.float64, generator=generator,
                        requires_grad=True)
        probe(x)[0, 0, 2 * c:2 * c + 2, 2 * c:2 * c + 2].sum().backward()
        ys, xs = np.nonzero(x.grad[0, 0].numpy())
        radius = max(radius, int(max(np.abs(ys - c).max(), np.abs(xs - c).max())))
    if radius > formula:
        raise RuntimeError(f"the network's output depends on input pixels {radius} px away, but "
                           f"its receptive_radius() says {formula}: fix the formula")
    return radius


def tiling_geometry(model: SRUNet) -> Blocks:
    """Block sizes and halo (input pixels) of a network, as the package declares them.

    The halo is its measured receptive radius (:func:`measured_radius`) rounded up to its grid,
    the exact need of its weights. The step is ``SIZE_STEP`` (or the grid, if coarser) and
    min is the smallest multiple of it that keeps ``MIN_KEPT`` px beyond the halo.
    """
    halo = block_geometry(measured_radius(model), model.grid).halo
    step = math.lcm(SIZE_STEP, int(model.grid))
    return Blocks(min=round_up(2 * halo + MIN_KEPT, step), step=step, halo=halo)


def sample_lr_size(blocks: Blocks) -> int:
    """LR side of the sample pair a package needs: 128 px (a 256 px ISM field, as in the
    contract), or the smallest block of a deep network, rounded up to a declared block size."""
    return smallest_block(max(128, blocks.min), blocks)


def _crop_sample(sample: dict, blocks: Blocks) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop the pair to a declared block size (test tensors must fit the axes)."""
    lr = np.asarray(sample["lr"], dtype=np.float32)
    hr = np.asarray(sample["hr"], dtype=np.float32)
    if lr.ndim != 2 or hr.shape != (2 * lr.shape[0], 2 * lr.shape[1]):
        raise ValueError(f"sample needs 2-D 'lr' and 'hr' with hr exactly 2x lr, got "
                         f"{lr.shape} and {hr.shape}")
    if min(lr.shape) < blocks.min:
        raise ValueError(f"sample 'lr' {lr.shape} is smaller than the model's smallest block "
                         f"{blocks.min}x{blocks.min}; pass a larger sample")
    sizes = [largest_block(s, blocks) for s in lr.shape]
    y0, x0 = ((s - c) // 2 for s, c in zip(lr.shape, sizes))
    hy, hx, hh, hw = lr_to_hr(y0, x0, *sizes)
    return lr[y0:y0 + sizes[0], x0:x0 + sizes[1]], hr[hy:hy + hh, hx:hx + hw]


def _optional(**fields) -> dict:
    """Only the fields that have a value: unset ones stay out of rdf.yaml (no ``null``/``[]``)."""
    return {key: value for key, value in fields.items() if value}


def _preprocessing(s, normalization: dict):
    """The zoo preprocessing step that reproduces the checkpoint's input normalisation."""
    if method_of(normalization) == MEAN_STD:
        # computed identically by bioimageio.core and deepImageJ/JDLL (srunet.normalization)
        return s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs(
            axes=["y", "x"], eps=EPS))
    low, high = normalization["lr_percentiles"]
    return s.ScaleRangeDescr(kwargs=s.ScaleRangeKwargs(
        axes=["y", "x"], min_percentile=low, max_percentile=high))


def describe(src, checkpoint: dict, blocks: Blocks, *, arch_sha256: str,
             publication: Publication, with_test_output: bool = True):
    """The ``v0_5.ModelDescr`` of a package whose files are found by ``src(filename)``.

    ``src`` maps a file name to an absolute path (staging) or to a path relative to the
    validation context root; ``publication`` gives authors, maintainers, git_repo, cite, extra
    tags and license. ``with_test_output=False`` describes a draft (no test/sample outputs, no
    ``metrics.json`` yet) that can already run.
    """
    from bioimageio.spec.model import v0_5 as s

    size = s.ParameterizedSize(min=blocks.min, step=blocks.step)
    in_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=["fluorescence"])] + [
        s.SpaceInputAxis(id=a, size=size, scale=INPUT_SCALE) for a in ("y", "x")]
    out_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=["fluorescence"])] + [
        s.SpaceOutputAxisWithHalo(id=a, size=s.SizeReference(tensor_id=INPUT_ID, axis_id=a),
                                  scale=OUTPUT_SCALE, halo=blocks.output_halo)
        for a in ("y", "x")]
    inputs = [s.InputTensorDescr(
        id=INPUT_ID, axes=in_axes, description="raw spinning-disk confocal image (85 nm px)",
        test_tensor=s.FileDescr(source=src("test_input.npy")),
        sample_tensor=s.FileDescr(source=src("sample_input.tif")),
        preprocessing=[_preprocessing(s, checkpoint["normalization"])])]
    outputs = [s.OutputTensorDescr(
        id=OUTPUT_ID, axes=out_axes, description="ISM-like image, 2x per axis (42.5 nm px)",
        test_tensor=s.FileDescr(source=src("test_output.npy")) if with_test_output else None,
        sample_tensor=s.FileDescr(source=src("sample_output.tif")) if with_test_output else None)]
    # pytorch_version: the version that wrote these files (the spec's meaning), not an older
    # one they might load in: the traced torchscript of this architecture loaded in torch 2.0.1
    # in a check, but these exact files were not run there, so declaring 2.0 would claim an
    # untested fact. Consumers limited to older engines (deepImageJ: PyTorch <= 2.0) use the
    # ONNX weights (opset 17), see the card's Consumers table.
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
    return s.ModelDescr(
        name=NAME,
        description="2x super-resolution UNet: spinning-disk confocal (85 nm px) to ISM "
                    "(42.5 nm px); trained on simulated pairs, see the model card.",
        authors=[s.Author(**a.model_dump(exclude_none=True)) for a in publication.authors],
        **_optional(maintainers=[s.Maintainer(**m.model_dump(exclude_none=True))
                                 for m in publication.maintainers],
                    git_repo=publication.git_repo),
        cite=[s.CiteEntry(**c.model_dump(exclude_none=True)) for c in publication.cite],
        license=publication.license, tags=list(dict.fromkeys(TAGS + publication.tags)),
        documentation=s.FileDescr(source=src("README.md")),
        covers=[s.FileDescr(source=src("cover.png"))], inputs=inputs, outputs=outputs, weights=weights,
        # the card's numbers, machine-readable (METRICS_FILE; from_package reads them)
        attachments=[s.FileDescr(source=src(METRICS_FILE))] if with_test_output else [],
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


def _write_files(checkpoint: dict, folder: Path, sample: dict | None, publication: Publication):
    """Write every package file into ``folder``; return the description."""
    model = build_model(checkpoint)
    blocks = tiling_geometry(model)
    shutil.copyfile(Path(__file__).with_name("unet.py"), folder / "unet.py")
    export_weights(model, checkpoint["model_state"], folder, blocks.min)
    reproducible_torchscript(folder / WEIGHT_FILES["torchscript"])
    verify_exports(model, folder)  # the rewritten archive still reproduces the network

    if sample is None:  # the project's own sample: one simulated pair, the same every time
        sample = simulate_pair(seed=SAMPLE_SEED, hr_size=2 * sample_lr_size(blocks))
    lr, hr = _crop_sample(sample, blocks)
    np.save(folder / "test_input.npy", lr[None, None])
    write_tensor_tiff(folder / "sample_input.tif", lr[None, None])
    # Placeholder docs/cover so the first (test-output-less) description validates.
    (folder / "README.md").write_text(f"# {NAME}\n")
    card.write_cover(folder / "cover.png", lr=lr, sr=hr)
    src = lambda name: folder / name  # noqa: E731 - absolute paths into the staging folder
    arch = _sha256(folder / "unet.py")
    draft = describe(src, checkpoint, blocks, arch_sha256=arch, publication=publication,
                     with_test_output=False)
    np.save(folder / "test_output.npy", _test_output(draft, lr))

    sr = predict_image(draft, lr, weights_format="pytorch_state_dict")
    write_tensor_tiff(folder / "sample_output.tif", sr[None, None])
    bicubic = upsample_bicubic(lr)
    record = card_record(
        checkpoint=checkpoint, input_halo=blocks.halo, min_size=blocks.min, step=blocks.step,
        grid=model.grid, sample_metrics={"model": all_metrics(hr, sr), "bicubic": all_metrics(hr, bicubic)},
        error_bar=checkpoint.get("error_bar"))  # a calibrated error bar (srunet package --calibration)
    write_record(folder / METRICS_FILE, record)
    card.write_cover(folder / "cover.png", lr=lr, sr=sr)
    (folder / "README.md").write_text(card.readme_text(
        name=NAME, checkpoint=checkpoint, record=record, publication=publication),
        encoding="utf-8")
    return describe(src, checkpoint, blocks, arch_sha256=arch, publication=publication)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to "
                              "replace it")


def build_package(checkpoint, out, *, sample: dict | None = None, overwrite: bool = False,
                  run_test: bool = True, publication: Publication | None = None) -> Path:
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
        ``{"lr": array, "hr": array}`` pair (HR exactly 2x) for the test/sample tensors, cover
        and README metrics, at least :func:`sample_lr_size` LR px per side (centre-cropped to
        a block size); default: the simulated pair of seed ``SAMPLE_SEED``.
    publication : Publication, optional
        Authors, maintainers, git_repo, cite, tags, training data (:mod:`publication`);
        default: the project's own (``PROJECT_PUBLICATION``).

    Returns
    -------
    Path
        The folder's ``rdf.yaml``, or the zip file.

    The package is built and tested in a temporary folder beside ``out`` and then renamed, so
    ``out`` is never left half-written.
    """
    from bioimageio.spec import save_bioimageio_package_as_folder

    out = Path(out)
    _check_out(out, overwrite)
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    publication = publication or project_publication()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.build-"))
    try:
        files = staging / "files"
        files.mkdir()
        descr = _write_files(checkpoint, files, sample, publication)
        written = save_bioimageio_package_as_folder(descr, output_path=staging / "package")
        make_runner_compatible(written / "rdf.yaml")
        if out.suffix.lower() == ".zip":
            written = zip_folder(written, staging / out.name)
        if run_test:
            run_bioimageio_test(written)
        _check_out(out, overwrite)  # another process may have written it meanwhile
        swap_into_place(written, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out if out.suffix.lower() == ".zip" else out / "rdf.yaml"


def export_release(checkpoint, repo_root, *, sample: dict | None = None, overwrite: bool = False,
                   run_test: bool = True, publication: Publication | None = None) -> Path:
    """Write the committed release: ``repo_root/rdf.yaml`` + files in ``model/release/``.

    The files are first built (and tested) as an ordinary folder package, then moved to
    ``model/release/`` with their own ``rdf.yaml`` (plain file names: what the wheel ships).
    The root ``rdf.yaml`` is generated from that one by :func:`root_rdf` (file references
    re-rooted under ``model/release/``, nothing else changed), then validated and tested again.

    Returns
    -------
    Path
        ``repo_root/rdf.yaml``.
    """
    root = Path(repo_root).resolve()
    rdf, release = root / "rdf.yaml", root / RELEASE_DIR
    for path in (rdf, release):
        _check_out(path, overwrite)
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    publication = publication or project_publication()
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".release.build-"))
    try:
        build_package(checkpoint, staging / "package", run_test=run_test, sample=sample,
                      publication=publication)
        release.parent.mkdir(parents=True, exist_ok=True)
        swap_into_place(staging / "package", release)
        root_rdf(root)
        if run_test:
            run_bioimageio_test(rdf)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rdf


def root_rdf(repo_root) -> Path:
    """Write ``repo_root/rdf.yaml`` from ``model/release/rdf.yaml`` (its one source): the same
    description with each file reference re-rooted under ``model/release/``; validated.

    Raises
    ------
    ValueError
        If the written description does not validate with its files (hashes included).
    """
    root = Path(repo_root).resolve()
    tmp = reroot_rdf(root / RELEASE_DIR / "rdf.yaml", root / ".new.rdf.yaml",
                     RELEASE_DIR.as_posix())
    try:
        load_model(tmp)  # checks every file and sha256 from the root
        os.replace(tmp, root / "rdf.yaml")
    finally:
        tmp.unlink(missing_ok=True)
    return root / "rdf.yaml"
