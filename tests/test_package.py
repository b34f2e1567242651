"""Validation harness for the bioimage.io package: what `bioimageio test` does not check.

`bioimageio test` only reproduces the test tensors and runs a few shapes. Here: the package
passes that test (folder, zip, CLI); tiled prediction through bioimageio.core equals
whole-image prediction for every weight format and several block sizes; odd sizes give exactly
2x; the formats agree; blocks leave no seams; any tile offset gives the same output (the halo
itself: tests/test_halo.py). The same harness runs on the committed release (rdf.yaml at the
repository root).

What "whole" means: `srunet.model.predictor` runs core's preprocessing once on the unpadded image
and then either core's blockwise or core's untiled prediction on the *same* normalised tensor,
so tiled-vs-whole compares the same normalisation (core's own untiled path would take
percentiles of a halo-padded image, ~0.3 % off). Independently, the interior is compared with
the eager PyTorch network on an image normalised by hand with the same statistics.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from srunet.model.package import MIN_KEPT, SIZE_STEP, build_package, tiling_geometry
from srunet.geometry import smallest_block
from srunet.model.predictor import Predictor, load_model, package_blocks, predict_image

FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _image(shape=(150, 170), seed=3) -> np.ndarray:
    """A smooth random raw image with an offset, like a camera frame."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.random(shape), 1.5) * 1000.0 + 100.0).astype(np.float32)


def _block_sizes(descr) -> list[int]:
    """Three block sizes: the smallest (min, which keeps MIN_KEPT px beyond the halo: many
    blocks), one step larger, and a large one (a 97x131 image then fits one block)."""
    g = package_blocks(descr)
    return [g.min, g.min + g.step, g.min + 4 * g.step]


def check_tiled_equals_whole(descr, weights_format: str, image: np.ndarray) -> np.ndarray:
    """Tiled (several block sizes) == untiled to < 1e-4 of the output range; returns whole."""
    with Predictor(descr, weights_format=weights_format, tiled=False) as predictor:
        whole = predictor(image)
        value_range = float(whole.max() - whole.min())
        predictor.tiled = True
        for block in _block_sizes(descr):
            predictor.block_lr = block
            tiled = predictor(image)
            error = float(np.abs(tiled - whole).max()) / value_range
            assert error < 1e-4, f"{weights_format}, block {block}: tiled differs by {error:.2e}"
    return whole


def check_formats(descr, image: np.ndarray) -> dict:
    """Every format: exactly 2x, tiled == whole; all formats agree with each other."""
    outputs = {}
    for weights_format in FORMATS:
        if getattr(descr.weights, weights_format) is None:
            continue
        outputs[weights_format] = check_tiled_equals_whole(descr, weights_format, image)
        assert outputs[weights_format].shape == (2 * image.shape[0], 2 * image.shape[1])
        assert outputs[weights_format].dtype == np.float32
    reference = outputs["pytorch_state_dict"]
    scale = float(reference.max() - reference.min())
    for name, output in outputs.items():
        assert np.abs(output - reference).max() / scale < 1e-4, f"{name} disagrees with state dict"
    return outputs


def _bioimageio_test(source) -> None:
    from bioimageio.core import test_model

    summary = test_model(source)  # all weight formats
    assert summary.status == "passed", summary.format()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_bioimageio_test_passes(kind, tiny_package, tiny_zip):
    _bioimageio_test(tiny_package if kind == "folder" else tiny_zip)


def _bioimageio_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("bioimageio")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "bioimageio.core"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=900, cwd=cwd)


def jump_seam_score(diff: np.ndarray, period: int) -> float:
    """Largest ratio, over block phases, of the mean pixel-to-pixel jump of ``diff`` at one
    phase to the mean jump everywhere (1 = no seam). Insensitive to a smooth offset, such as
    the one core's untiled path adds by taking percentiles of a halo-padded image."""
    ratios = []
    for axis in (0, 1):
        jumps = np.abs(np.diff(diff, axis=axis)).mean(axis=1 - axis)
        ratios.append(max(jumps[phase::period].mean() for phase in range(period)) / jumps.mean())
    return float(max(ratios))


def check_block_artifacts(rdf: Path, tmp_path: Path, n: int, blocks_per_axis: int) -> float:
    """Run `bioimageio predict-block-artifacts` (core's own blocking with blocksize parameter
    ``n``) on an image of about ``blocks_per_axis`` blocks per side and return the seam score
    of its whole-minus-blockwise difference."""
    descr = load_model(rdf)
    blocks = package_blocks(descr)
    kept = blocks.min + n * blocks.step - 2 * blocks.halo
    side = smallest_block(blocks_per_axis * kept - kept // 2, blocks)  # numpy: on the size grid
    shape = (side, side + blocks.step)
    np.save(tmp_path / "input.npy", _image(shape)[None, None])
    # n >= 1: the CLI reads --blockwise 0 as "no blocking" (and core's predict reads a plain
    # blocksize_parameter=0 as its default 10), so n = 0 is not reachable through it.
    assert n >= 1
    result = _bioimageio_cli("predict-block-artifacts", str(rdf), "--inputs", "input.npy",
                             "--outputs", "diff.npy", "--blockwise", str(n), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    diff = np.load(tmp_path / "diff.npy")[0, 0]
    assert diff.shape == (2 * shape[0], 2 * shape[1])
    assert -(-shape[0] // kept) >= min(blocks_per_axis, 3)  # the blocks really are many
    return jump_seam_score(diff, 2 * kept)


def test_jump_seam_score_has_power():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 1e-4, (200, 256)), axis=1)
    assert jump_seam_score(smooth, 16) < 1.3
    stepped = smooth.copy()
    for start in range(0, 256, 32):  # a 3e-4 step every 16 px: a faint seam
        stepped[:, start:start + 16] += 3e-4
    assert jump_seam_score(stepped, 16) > 1.5


@pytest.mark.slow
@pytest.mark.parametrize("n, blocks_per_axis", [(1, 6), (3, 3)])
def test_bioimageio_predict_block_artifacts_shows_no_seams(tiny_package, tmp_path, n,
                                                           blocks_per_axis):
    assert check_block_artifacts(tiny_package, tmp_path, n, blocks_per_axis) < 1.3


@pytest.mark.slow
def test_bioimageio_cli_test_passes(tiny_package):
    result = _bioimageio_cli("test", str(tiny_package))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "passed" in result.stdout


def test_description_geometry(tiny_descr, tiny_checkpoint):
    """Scale encoding 4.0/2.0, halo from geometry, block grid = network grid, and the
    zero-mean/unit-variance preprocessing every consumer computes alike."""
    from srunet.model.checkpoint import build_model, load_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    blocks = tiling_geometry(build_model(checkpoint))
    in_axes = {str(a.id): a for a in tiny_descr.inputs[0].axes}
    for axis in tiny_descr.outputs[0].axes[2:]:
        assert axis.halo == blocks.output_halo
        assert (axis.scale, in_axes[str(axis.id)].scale) == (2.0, 4.0)
        assert str(axis.size.axis_id) == str(axis.id)
        size = in_axes[str(axis.id)].size
        assert size.step % build_model(checkpoint).grid == 0 and size.min == blocks.min
        # the smallest block keeps MIN_KEPT px beyond the halo; every multiple of the step
        # from min on is a block size (what deepImageJ's default tile is)
        assert size.min - 2 * blocks.halo >= MIN_KEPT and size.min % size.step == 0
        assert size.step == SIZE_STEP
    (step,) = [p for p in tiny_descr.inputs[0].preprocessing if p.id != "ensure_dtype"]
    assert step.id == "zero_mean_unit_variance" and checkpoint["normalization"]["method"] == "mean_std"
    assert [str(a) for a in step.kwargs.axes] == ["y", "x"] and step.kwargs.eps == 1e-6
    assert tiny_descr.config.model_extra["deepimagej"]["allow_tiling"] is True
    assert tiny_descr.weights.onnx.opset_version <= 18


@pytest.mark.slow
def test_tiled_equals_whole_all_formats_odd_size(tiny_descr):
    check_formats(tiny_descr, _image((97, 131)))


@pytest.mark.slow
def test_matches_eager_network_in_interior(tiny_descr, tiny_checkpoint):
    """Independent of core: eager SRUNet on a hand-normalised image, away from the border; the
    package's output, back in the input's units, is the eager output times (std + eps) plus
    the mean."""
    from srunet.model.checkpoint import build_model, load_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    model = build_model(checkpoint)
    image = _image((150, 170))
    mean, std = image.astype(np.float64).mean(), image.astype(np.float64).std()
    normalised = (image - mean) / (std + 1e-6)  # zero_mean_unit_variance (eps 1e-6)
    with torch.no_grad():
        eager = model(torch.from_numpy(normalised.astype(np.float32))[None, None])[0, 0].numpy()
    eager = eager * (std + 1e-6) + mean
    border = tiling_geometry(model).output_halo
    core = predict_image(tiny_descr, image, block_lr=_block_sizes(tiny_descr)[1])
    inner = (slice(border, -border), slice(border, -border))
    error = np.abs(core[inner] - eager[inner]).max() / np.ptp(eager)
    assert error < 1e-4, f"core tiled prediction differs from eager by {error:.2e} in the interior"


def test_default_weights_are_onnx_when_available_else_cores_choice(tiny_descr, monkeypatch):
    """srunet predict runs the ONNX weights by default (measured fastest on CPU) with their own
    block size; without onnxruntime it falls back to core's order (PyTorch state dict)."""
    import importlib.util

    from srunet.model.predictor import DEFAULT_BLOCK_LR

    predictor = Predictor(tiny_descr)
    assert (predictor.weights_format, predictor.block_lr) == ("onnx", DEFAULT_BLOCK_LR["onnx"])
    assert Predictor(tiny_descr, block_lr=300).block_lr == 300
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else real(name, *args))
    predictor = Predictor(tiny_descr)
    assert predictor.weights_format is None
    assert predictor.block_lr == DEFAULT_BLOCK_LR["pytorch_state_dict"]


def seam_score(diff: np.ndarray, period: int) -> float:
    """How much larger |diff| is on block-boundary rows/columns than elsewhere (1 = no seam)."""
    scores = []
    for axis in (0, 1):
        profile = np.abs(diff).mean(axis=1 - axis)
        phase = np.arange(profile.size) % period
        boundary = (phase == 0) | (phase == period - 1)
        scores.append(profile[boundary].mean() / max(profile[~boundary].mean(), 1e-30))
    return max(scores)


def test_seam_detector_has_power(tiny_checkpoint):
    """Naive halo-less tiling of the eager network is flagged; the detector is not vacuous."""
    from srunet.model.checkpoint import build_model, load_checkpoint

    model = build_model(load_checkpoint(tiny_checkpoint))
    image = torch.from_numpy(_image((128, 128)) / 1000.0)[None, None].float()
    with torch.no_grad():
        whole = model(image)[0, 0].numpy()
        tiled = np.block([[model(image[..., y:y + 32, x:x + 32])[0, 0].numpy()
                           for x in range(0, 128, 32)] for y in range(0, 128, 32)])
    assert seam_score(tiled - whole, 64) > 3


@pytest.mark.slow
def test_no_block_seams(tiny_descr):
    """In the spirit of `bioimageio predict-block-artifacts`: tiled - whole shows no seams."""
    image = _image((256, 256))
    block = _block_sizes(tiny_descr)[0]  # the smallest: 4 x 4 blocks
    inner_out = 2 * (block - 2 * package_blocks(tiny_descr).halo)
    whole = predict_image(tiny_descr, image, tiled=False)
    tiled = predict_image(tiny_descr, image, block_lr=block)
    diff = tiled - whole
    assert np.abs(diff).max() / np.ptp(whole) < 1e-5
    # float rounding noise only: no excess on the block boundaries
    if np.abs(diff).max() > 0:
        assert seam_score(diff, inner_out) < 3


@pytest.mark.parametrize("weights_format", FORMATS)
def test_tile_offset_exact_in_every_weight_format(tiny_package, weights_format):
    """A tile may start at any pixel: the output of an input shifted by s = 1..7 px equals the
    shifted output in the interior (< 1e-3 of the range; the network is phase-free, so this
    is float rounding), for the weight files consumers actually run."""
    from srunet.model.export import WEIGHT_FILES

    folder = tiny_package.parent
    path = folder / WEIGHT_FILES[weights_format]
    if weights_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {"input": x[None, None]})[0][0, 0]  # noqa: E731
    else:
        from srunet.model.unet import SRUNet

        if weights_format == "torchscript":
            network = torch.jit.load(str(path))
        else:  # what a consumer does: the architecture file's class, the rdf's kwargs
            kwargs = load_model(tiny_package).weights.pytorch_state_dict.architecture.kwargs
            network = SRUNet(**kwargs).eval()
            network.load_state_dict(torch.load(path, weights_only=True))
        run = lambda x: network(torch.from_numpy(x)[None, None])[0, 0].detach().numpy()  # noqa: E731
    image = (_image((120, 130)) / 1000.0).astype(np.float32)
    whole = run(image)
    margin = 2 * (package_blocks(load_model(tiny_package)).halo + 8)  # output px
    worst = 0.0
    for s in range(1, 8):
        shifted = run(np.ascontiguousarray(image[s:, s:]))
        a = whole[2 * s:, 2 * s:][margin:-margin, margin:-margin]
        b = shifted[margin:-margin, margin:-margin]
        worst = max(worst, float(np.abs(a - b).max()) / float(np.ptp(whole)))
    assert worst < 1e-3, f"{weights_format}: shifted input changes the output by {worst:.2e}"


def test_build_refuses_overwrite(tiny_checkpoint, tiny_package, make_pair):
    with pytest.raises(FileExistsError, match="overwrite"):
        build_package(tiny_checkpoint, tiny_package.parent, run_test=False, sample=make_pair(1))


def test_zip_and_folder_load(tiny_zip, tiny_package):
    assert load_model(tiny_zip).name == load_model(tiny_package).name
    assert len(list(tiny_package.parent.iterdir())) == 12  # rdf.yaml + 11 referenced files


@pytest.mark.slow
def test_release_at_repository_root(tmp_path):
    """The committed release (rdf.yaml at the root, files in model/release/) passes the harness."""
    rdf = REPO_ROOT / "rdf.yaml"
    assert rdf.is_file(), f"the committed release lacks {rdf}"
    _bioimageio_test(rdf)
    descr = load_model(rdf)
    check_formats(descr, _image((97, 131)))
    assert check_block_artifacts(rdf, tmp_path, 1, 5) < 1.3
