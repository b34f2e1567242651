"""Test-time augmentation: zero spread for an equivariant model, non-zero otherwise; calibration."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from srunet.evaluation import uncertainty
from srunet.geometry import dihedral, inverse_dihedral


def nearest_2x(image):
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


def equivariant_predict(image):
    """Isotropic Gaussian blur (flip-symmetric 'reflect' border), then nearest 2x upsampling."""
    return nearest_2x(gaussian_filter(np.asarray(image, dtype=np.float64), 1.3, mode="reflect"))


def shifted_predict(image):
    """Not equivariant: moves content one LR pixel to the right (a directional bias)."""
    return nearest_2x(np.roll(image, 1, axis=1))


@pytest.fixture
def image():
    return np.random.default_rng(0).random((24, 20)).astype(np.float32)  # non-square on purpose


def test_transforms_are_the_eight_distinct_group_elements(image):
    outputs = {dihedral(image, t).tobytes() + bytes(dihedral(image, t).shape) for t in range(8)}
    assert len(outputs) == 8
    for t in range(8):
        np.testing.assert_array_equal(inverse_dihedral(dihedral(image, t), t), image)


def test_equivariant_model_really_commutes_with_every_transform(image):
    # The premise of the zero-uncertainty test: predict(T_lr x) == T_hr predict(x) for all 8.
    reference = equivariant_predict(image)
    for t in range(8):
        np.testing.assert_allclose(equivariant_predict(dihedral(image, t)), dihedral(reference, t),
                                   atol=1e-12)


def test_zero_uncertainty_for_equivariant_model(image):
    mean, std = uncertainty.tta_std(equivariant_predict, image)
    assert mean.shape == std.shape == (48, 40) and std.dtype == np.float32
    assert std.max() < 1e-6
    np.testing.assert_allclose(mean, equivariant_predict(image), atol=1e-6)


def test_nonzero_uncertainty_for_non_equivariant_model(image):
    _, std = uncertainty.tta_std(shifted_predict, image)
    assert std.mean() > 0.05


def test_wrong_output_shape_is_reported(image):
    with pytest.raises(ValueError, match=r"\(24, 20\)"):
        uncertainty.tta_std(lambda x: x, image)


def test_calibration_of_a_calibrated_and_an_overconfident_predictor(tmp_path):
    rng = np.random.default_rng(2)
    std = rng.uniform(0.1, 2.0, size=(64, 64))
    error = rng.normal(0.0, std)  # errors drawn with exactly the predicted spread
    result = uncertainty.calibration([std], [error], bins=8)
    assert len(result["predicted"]) == 8 and result["counts"].sum() == std.size
    np.testing.assert_allclose(result["actual"], result["predicted"], rtol=0.15)
    assert result["ratio"] == pytest.approx(1.0, abs=0.05) and result["spearman"] > 0.3
    overconfident = uncertainty.calibration(std / 3, error, bins=8)
    assert overconfident["ratio"] == pytest.approx(3.0, rel=0.05)
    path = uncertainty.plot_calibration(result, tmp_path / "calibration.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_calibration_validates_input():
    with pytest.raises(ValueError, match="0"):
        uncertainty.calibration(np.ones((4, 4)), np.ones((4, 4)), bins=0)
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        uncertainty.calibration(np.ones((4, 4)), np.ones((4, 5)))
    constant = uncertainty.calibration(np.zeros((4, 4)), np.ones((4, 4)))
    assert constant["counts"].sum() == 16


def test_spread_is_labelled_relative_with_the_measured_underestimate(tmp_path):
    from matplotlib.figure import Figure

    from srunet.evaluation.figures import spread_label

    assert "~7-fold" in spread_label(6.8) and "not calibrated" in spread_label(6.8)
    assert "not calibrated" in spread_label(None) and "fold" not in spread_label(float("nan"))
    rng = np.random.default_rng(1)
    std = rng.uniform(0.5, 1.5, (32, 32))
    result = uncertainty.calibration(std, rng.normal(0, 7 * std))  # error ~7x the spread
    captured = {}
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        captured["fig"] = self
        return original(self, *args, **kwargs)

    Figure.savefig = keep
    try:
        uncertainty.plot_calibration(result, tmp_path / "c.png")
    finally:
        Figure.savefig = original
    legend = " ".join(t.get_text() for t in captured["fig"].axes[0].get_legend().get_texts())
    assert f"~{result['ratio']:.0f}-fold" in legend and "underestimates" in legend


def test_error_spread_ratio():
    std = np.random.default_rng(1).uniform(0.5, 2.0, (16, 16))
    assert uncertainty.error_spread_ratio(std, -3 * std) == pytest.approx(3.0)
    assert uncertainty.error_spread_ratio(np.zeros((4, 4)), np.ones((4, 4))) == np.inf
