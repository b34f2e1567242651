"""deepImageJ computes the package's preprocessing exactly as bioimageio.core does.

deepImageJ runs packages through JDLL, whose ``zero_mean_unit_variance`` sums in double, takes
the population std, casts mean and std to float and writes ``(x - mean) / (std + eps)`` into a
float image (JDLL ``ZeroMeanUnitVarianceTransformation.java``). Its partner test then compares
the halo-free output with the package's test output element-wise with
``|d| <= 1.5e-4 + 1e-4 * |x|``. These tests emulate that arithmetic in numpy and hold it
against core's preprocessing and the packaged test tensors, with the ONNX weights deepImageJ runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def jdll_zero_mean_unit_variance(image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """JDLL's per-sample zero_mean_unit_variance, operation for operation."""
    values = np.asarray(image, dtype=np.float64).ravel()
    mean = values.sum() / values.size  # double accumulation
    std = np.sqrt(((values - mean) ** 2).sum() / values.size)  # population variance
    mean32, std32 = np.float32(mean), np.float32(std)  # returned as float[] {mean, std}
    out = (np.asarray(image, dtype=np.float64) - float(mean32)) / (float(std32) + eps)
    return out.astype(np.float32)  # FloatType.setReal


def core_preprocessing(descr, image: np.ndarray) -> np.ndarray:
    """bioimageio.core's preprocessing of one (y, x) image, as `srunet predict` runs it."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline

    input_id = descr.inputs[0].id
    sample = Sample(members={input_id: Tensor.from_numpy(
        image.astype(np.float32)[None, None], dims=("batch", "channel", "y", "x"))},
        stat={}, id="image")
    with create_prediction_pipeline(descr, weight_format="onnx") as pipeline:
        pipeline.apply_preprocessing(sample)
    return sample.members[input_id].data.values[0, 0]


def _zero_mean_step(descr):
    """The package's zero_mean_unit_variance step (the spec adds ensure_dtype steps around it)."""
    steps = [p for p in descr.inputs[0].preprocessing if p.id == "zero_mean_unit_variance"]
    return steps[0] if steps else None


def _packages(tiny_package) -> list[Path]:
    from srunet.model.predictor import load_model

    found = [tiny_package]
    release = REPO_ROOT / "rdf.yaml"
    if release.is_file() and _zero_mean_step(load_model(release)) is not None:
        found.append(release)
    return found


def test_emulation_has_power():
    """The emulation is not core by another name: JDLL's float casts are visible at 1e-7, and a
    percentile preprocessing computed the JDLL way (sorted[int(N p)]) misses core's by far more."""
    rng = np.random.default_rng(0)
    image = (rng.gamma(2.0, 300.0, (300, 280)) + 100).astype(np.float32)
    exact = (image - image.astype(np.float64).mean()) / image.astype(np.float64).std()
    assert 0 < np.abs(jdll_zero_mean_unit_variance(image, eps=0.0) - exact).max() < 1e-5
    flat = np.sort(image.ravel())
    jdll_hi = flat[int(flat.size * 0.998)]
    assert abs(jdll_hi - np.percentile(image, 99.8)) / np.ptp(image) > 1e-4


def test_deepimagej_reproduces_the_test_output(tiny_package):
    """JDLL's preprocessing of the test input + the ONNX weights meet deepImageJ's element-wise
    tolerance against the packaged test output (halo stripped, as its partner test does)."""
    import onnxruntime
    from bioimageio.core.digest_spec import get_test_inputs, get_test_outputs

    from srunet.model.predictor import load_model, package_blocks

    for rdf in _packages(tiny_package):
        descr = load_model(rdf)
        test_input = get_test_inputs(descr).members[descr.inputs[0].id].data.values[0, 0]
        expected = get_test_outputs(descr).members[descr.outputs[0].id].data.values[0, 0]
        eps = float(_zero_mean_step(descr).kwargs.eps)
        normalised = jdll_zero_mean_unit_variance(test_input, eps=eps)
        onnx = descr.weights.onnx.source.absolute()
        session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        output = session.run(None, {str(descr.inputs[0].id): normalised[None, None]})[0][0, 0]
        halo = package_blocks(descr).output_halo
        inner = (slice(halo, -halo), slice(halo, -halo))
        difference = np.abs(output[inner] - expected[inner])
        tolerance = 1.5e-4 + 1e-4 * np.abs(expected[inner])
        assert (difference <= tolerance).all(), (
            f"{rdf}: {int((difference > tolerance).sum())} of {difference.size} halo-free elements "
            f"miss deepImageJ's tolerance (largest difference {difference.max():.2e})")


@pytest.mark.slow
def test_preprocessing_agrees_on_a_camera_sized_image(tiny_package):
    """On a 2048 x 2048 camera-like frame, JDLL's and core's preprocessing differ by <= 1e-4 of
    the normalised range."""
    from scipy.ndimage import gaussian_filter

    from srunet.model.predictor import load_model

    rng = np.random.default_rng(1)
    signal = gaussian_filter(rng.random((2048, 2048)), 3.0)
    image = rng.poisson(signal * 4000.0).astype(np.float32) * 1.7 + 100.0  # ADU with offset
    for rdf in _packages(tiny_package):
        core = core_preprocessing(load_model(rdf), image)
        jdll = jdll_zero_mean_unit_variance(image)
        error = float(np.abs(core - jdll).max()) / float(np.ptp(core))
        assert error <= 1e-4, f"{rdf}: preprocessing differs by {error:.2e} of the range"
