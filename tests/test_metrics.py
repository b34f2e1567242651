"""Metrics equal their published formulas, computed here independently of the library each
wraps (hand-computable cases, a numpy SSIM); the custom accuracy on known cases."""

import numpy as np
import pytest

from srunet.evaluation import metrics


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    truth = rng.random((48, 40))
    return truth, truth + 0.05 * rng.standard_normal(truth.shape)


def test_psnr_matches_formula(pair):
    truth, test = pair
    mse = np.mean((truth - test) ** 2)
    assert metrics.psnr(truth, test, data_range=1.0) == pytest.approx(10 * np.log10(1.0 / mse))


def test_nrmse_matches_formula(pair):
    truth, test = pair
    expected = np.sqrt(np.mean((truth - test) ** 2)) / np.sqrt(np.mean(truth**2))
    assert metrics.nrmse(truth, test) == pytest.approx(expected)


def ssim_reference(x, y, data_range, window=7):
    """SSIM of Wang et al. (2004), eq. 13, from numpy only: uniform ``window``-px window, sample
    (co)variances (N - 1), K1 = 0.01, K2 = 0.03, averaged over every window inside the image."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    wx = np.lib.stride_tricks.sliding_window_view(x, (window, window)).reshape(-1, window**2)
    wy = np.lib.stride_tricks.sliding_window_view(y, (window, window)).reshape(-1, window**2)
    mx, my = wx.mean(1), wy.mean(1)
    vx, vy = wx.var(1, ddof=1), wy.var(1, ddof=1)
    cov = ((wx - mx[:, None]) * (wy - my[:, None])).sum(1) / (window**2 - 1)
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.mean()


def test_ssim_hand_computed_cases():
    # a constant image against itself plus c: no contrast, so only the luminance term is left,
    # C1 / (c^2 + C1) with C1 = (0.01 L)^2; c = 0.01 L gives exactly 1/2, c = 0.02 L 1/5
    zeros = np.zeros((16, 16))
    assert metrics.ssim(zeros, zeros + 0.01, data_range=1.0) == pytest.approx(0.5)
    assert metrics.ssim(zeros, zeros + 0.02, data_range=1.0) == pytest.approx(0.2)
    assert metrics.ssim(zeros, zeros + 0.5, data_range=1.0) == pytest.approx(1e-4 / (0.25 + 1e-4))
    assert metrics.ssim(zeros, zeros + 0.5, data_range=50.0) == pytest.approx(0.25 / 0.5)
    image = np.random.default_rng(1).random((16, 16))
    assert metrics.ssim(image, image, data_range=1.0) == pytest.approx(1.0)


def test_ssim_matches_the_formula_computed_independently(pair):
    truth, test = pair
    assert metrics.ssim(truth, test, data_range=1.0) == pytest.approx(
        ssim_reference(truth, test, 1.0), rel=1e-9)
    assert metrics.ssim(truth, 2 * test, data_range=3.0) == pytest.approx(
        ssim_reference(truth, 2 * test, 3.0), rel=1e-9)


def test_gain_offset_fit_removes_affine_differences(pair):
    truth, _ = pair
    scaled = 3.0 * truth - 7.0
    assert np.allclose(metrics.fit_gain_offset(truth, scaled), truth)
    assert metrics.psnr(truth, scaled, data_range=1.0, fit=True) > 100
    assert metrics.accuracy(truth, scaled) == pytest.approx(100.0)


def test_accuracy_known_cases():
    truth = np.tile(np.linspace(0.0, 1.0, 100), (10, 1))  # robust range ~0.996
    test = truth.copy()
    test[:, :25] += 0.5  # a quarter of pixels far off -> 75 % exactly (no fit)
    assert metrics.accuracy(truth, test, fit=False) == pytest.approx(75.0)
    test = truth + 0.09  # everything within 10 % of the range
    assert metrics.accuracy(truth, test, fit=False) == pytest.approx(100.0)
    test = truth + 0.11  # everything outside
    assert metrics.accuracy(truth, test, fit=False) == pytest.approx(0.0)


def test_mask_restricts_the_comparison(pair):
    truth, test = pair
    mask = np.zeros(truth.shape, bool)
    mask[:10] = True
    assert metrics.psnr(truth, test, data_range=1.0, mask=mask) == pytest.approx(
        metrics.psnr(truth[:10], test[:10], data_range=1.0))


def test_bicubic_keeps_the_pixel_convention():
    # A linear ramp is reproduced by cubic-spline interpolation away from the borders, and
    # HR pixel k samples LR coordinate (k + 0.5) / 2 - 0.5: LR pixel i covers HR 2i, 2i+1.
    # A convention off by half a pixel would miss by 0.25.
    lr = np.tile(np.arange(32, dtype=float), (16, 1))
    hr = metrics.upsample_bicubic(lr)
    expected = (np.arange(64) + 0.5) / 2 - 0.5
    assert np.abs(hr[8, 10:54] - expected[10:54]).max() < 1e-3


def test_bad_input_is_explained(pair):
    truth, test = pair
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(truth, test, data_range=0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(truth, test[:-1], data_range=1.0)
    bad = test.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.ssim(truth, bad, data_range=1.0)
    with pytest.raises(ValueError, match="constant"):
        metrics.accuracy(np.ones((8, 8)), test[:8, :8])
