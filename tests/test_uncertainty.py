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


# --- calibrated error bar -------------------------------------------------------------------

def _synthetic(seed, spread_factor=4.0, floor=0.05, images=4):
    """TTA-like spreads and Gaussian errors of exactly sqrt((a std)^2 + (b scale)^2), each image
    on its own camera scale."""
    rng = np.random.default_rng(seed)
    stds, errors, scales = [], [], []
    for _ in range(images):
        scale = rng.uniform(20.0, 500.0)
        std = rng.gamma(2.0, 0.02, (120, 120)) * scale
        sigma = np.sqrt((spread_factor * std) ** 2 + (floor * scale) ** 2)
        stds.append(std), errors.append(rng.normal(0.0, sigma)), scales.append(scale)
    return stds, errors, scales


def test_fit_recovers_known_parameters_and_holds_90_percent_on_new_draws():
    fitted = uncertainty.fit_calibration(*_synthetic(1), data="synthetic")
    assert fitted.form == "floor" and fitted.pixels == 4 * 120 * 120 and fitted.images == 4
    assert fitted.spread_factor == pytest.approx(4.0, rel=0.05)
    assert fitted.floor == pytest.approx(0.05, rel=0.08)
    assert fitted.coverage == pytest.approx(0.90, abs=1e-3) and fitted.z == 1.64
    stds, errors, scales = _synthetic(2)  # independent draw: a real out-of-sample check
    sigmas = [uncertainty.apply_calibration(fitted, s, k) for s, k in zip(stds, scales)]
    assert uncertainty.coverage(errors, sigmas) == pytest.approx(0.90, abs=0.01)
    curve = uncertainty.coverage_curve(errors, sigmas)
    np.testing.assert_allclose(curve["observed"], curve["gaussian"], atol=0.015)
    # a spread-only model misses the floor: too wide where the spread is large, too narrow
    # where it is small, although its pooled coverage is 90 % by construction
    scaled = uncertainty.fit_calibration(*_synthetic(1), form="scaled")
    assert scaled.floor == 0 and scaled.coverage == pytest.approx(0.90, abs=1e-3)
    from srunet.evaluation.error_bar import binned_coverage

    bins = binned_coverage(errors, [uncertainty.apply_calibration(scaled, s, k)
                                    for s, k in zip(stds, scales)], stds)["coverage"]
    assert bins[0] < 0.8 and bins[-1] > 0.95


def test_coverage_by_hand():
    error = np.array([[0.0, 1.0, -2.0], [3.0, -0.5, 1.64]])
    sigma = np.array([[0.1, 1.0, 1.0], [1.0, 0.0, 1.0]])
    # |e| <= 1.64 sigma: 0 <= 0.164 yes, 1 <= 1.64 yes, 2 no, 3 no, 0.5 <= 0 no, 1.64 yes
    assert uncertainty.coverage(error, sigma) == pytest.approx(3 / 6)
    assert uncertainty.coverage([error, error[:1]], [sigma, sigma[:1]], z=3.0) == pytest.approx(8 / 9)


def test_apply_is_scale_equivariant():
    fitted = uncertainty.Calibration(form="floor", spread_factor=3.0, floor=0.07, z=1.64,
                                     level=0.9, coverage=0.9, pixels=10, images=1, data="x")
    std_norm = np.random.default_rng(3).gamma(2.0, 0.02, (16, 16))
    camera = 137.5  # input std + eps in camera units
    in_camera = uncertainty.apply_calibration(fitted, camera * std_norm, camera)
    normalised = uncertainty.apply_calibration(fitted, std_norm, 1.0)
    np.testing.assert_allclose(in_camera, camera * normalised, rtol=1e-6)
    np.testing.assert_allclose(normalised, np.sqrt((3.0 * std_norm) ** 2 + 0.07**2), rtol=1e-6)


def test_error_bar_input_errors(tmp_path):
    fitted = uncertainty.fit_calibration(*_synthetic(1, images=1))
    with pytest.raises(ValueError, match="1 negative"):
        uncertainty.apply_calibration(fitted, np.array([[0.1, -0.2], [0.3, 0.4]]), 1.0)
    with pytest.raises(ValueError, match="scale .* must be > 0, got 0"):
        uncertainty.apply_calibration(fitted, np.eye(2), 0.0)
    with pytest.raises(ValueError, match=r"shapes differ.*\(2, 3\)"):
        uncertainty.coverage(np.zeros((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="sigmas must be >= 0"):
        uncertainty.coverage(np.zeros(3), -np.ones(3))
    with pytest.raises(ValueError, match="one finite scale > 0 per image"):
        uncertainty.fit_calibration([np.ones((4, 4))], [np.ones((4, 4))], [1.0, 2.0])
    path = uncertainty.write_calibration(tmp_path / "calibration.json", fitted)
    assert uncertainty.load_calibration(path) == fitted
    broken = fitted.model_dump()
    del broken["floor"]
    (tmp_path / "bad.json").write_text(__import__("json").dumps(broken))
    with pytest.raises(ValueError, match=r"(?s)bad\.json.*floor.*Field required"):
        uncertainty.load_calibration(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="nothing.json does not exist"):
        uncertainty.load_calibration(tmp_path / "nothing.json")
