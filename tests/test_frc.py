"""Fourier ring correlation: resolution tracks a known Gaussian PSF, single-image split agrees."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from srunet.evaluation import frc
from srunet.physics import contract

PIXEL_NM = contract.HR_PIXEL_NM
SIZE = 256
# Object spectral SNR before blurring. With a white object and white noise the 1/7 crossing sits
# at k = sqrt(ln(6 SNR)) / (2 pi sigma): for sigma 1.5 / 3 px that is ~0.30 / ~0.15 cycles/px,
# both well inside Nyquist (0.5) and the single-image limit (0.35), and many rings from DC.
SNR = 500.0


def blurred_pair(sigma_px: float, seed: int):
    """Two independent noise realisations of one white-spectrum object blurred by a Gaussian."""
    rng = np.random.default_rng(seed)
    obj = rng.random((SIZE, SIZE))
    clean = gaussian_filter(obj, sigma_px, mode="wrap")
    noise = math.sqrt(obj.var() / SNR)
    return (clean + rng.normal(0, noise, clean.shape), clean + rng.normal(0, noise, clean.shape),
            clean)


def expected_resolution_nm(sigma_px: float) -> float:
    return 2 * math.pi * sigma_px * PIXEL_NM / math.sqrt(math.log(6 * SNR))


def test_two_image_resolution_doubles_with_blur():
    narrow = frc.frc_resolution(*blurred_pair(1.5, 1)[:2], pixel_size_nm=PIXEL_NM)
    wide = frc.frc_resolution(*blurred_pair(3.0, 2)[:2], pixel_size_nm=PIXEL_NM)
    assert wide / narrow == pytest.approx(2.0, rel=0.15)
    # and both sit where theory puts them (white object, white noise, 1/7 -> SNR 1/6)
    assert narrow == pytest.approx(expected_resolution_nm(1.5), rel=0.1)
    assert wide == pytest.approx(expected_resolution_nm(3.0), rel=0.1)


def test_single_image_split_tracks_blur_and_two_image_result():
    results = {}
    for sigma, seed in ((1.5, 3), (3.0, 4)):
        image1, image2, _ = blurred_pair(sigma, seed)
        results[sigma] = (frc.frc_single_image(image1, pixel_size_nm=PIXEL_NM),
                          frc.frc_resolution(image1, image2, pixel_size_nm=PIXEL_NM))
    for single, two in results.values():
        assert single == pytest.approx(two, rel=0.15)
    assert results[3.0][0] / results[1.5][0] == pytest.approx(2.0, rel=0.15)


def test_curve_shape_and_units():
    image1, image2, _ = blurred_pair(2.0, 5)
    freq, corr, counts = frc.frc_curve(image1, image2, pixel_size_nm=PIXEL_NM, return_counts=True)
    assert freq.shape == corr.shape == counts.shape == (SIZE // 2,)
    assert freq[-1] == pytest.approx(0.5 / PIXEL_NM)  # Nyquist in cycles per nm
    assert corr[:10].min() > 0.9 and corr[-10:].mean() < 0.1
    freq_s, corr_s = frc.frc_single_image_curve(image1, pixel_size_nm=PIXEL_NM)
    # the split's rotated halves have sqrt(2) larger pixels
    assert freq_s[-1] == pytest.approx(0.5 / (math.sqrt(2) * PIXEL_NM), rel=0.02)


def test_half_bit_threshold_gives_a_comparable_number():
    image1, image2, _ = blurred_pair(2.0, 6)
    one_seventh = frc.frc_resolution(image1, image2, pixel_size_nm=PIXEL_NM)
    half_bit = frc.frc_resolution(image1, image2, pixel_size_nm=PIXEL_NM, threshold="half-bit")
    assert half_bit == pytest.approx(one_seventh, rel=0.3)


def test_noise_free_image_is_sampling_limited_with_warning():
    _, _, clean = blurred_pair(1.5, 7)
    with pytest.warns(UserWarning, match="sampling-limited"):
        resolution = frc.frc_single_image(clean, pixel_size_nm=PIXEL_NM)
    assert resolution == pytest.approx(2 * math.sqrt(2) * PIXEL_NM, rel=0.02)
    assert frc.beyond_ism_limit(resolution)


def test_checkerboard_split_keeps_every_pixel_once():
    image = np.arange(1, 7 * 9 + 1, dtype=float).reshape(7, 9)
    even, odd = frc.checkerboard_split(image)
    assert even.shape == odd.shape
    assert sorted(np.concatenate([even[even > 0], odd[odd > 0]])) == sorted(image.ravel())


def test_beyond_ism_limit_flag():
    limit = contract.ISM_RESOLUTION_LIMIT_NM
    assert frc.beyond_ism_limit(100.0)
    assert not frc.beyond_ism_limit(limit)
    assert not frc.beyond_ism_limit(limit * 0.97)  # inside the tolerance
    assert frc.beyond_ism_limit(limit * 0.97, tolerance=0.0)
    with pytest.raises(ValueError, match="-3"):
        frc.beyond_ism_limit(-3.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(pixel_size_nm=0.0), "pixel_size_nm"),
    (dict(pixel_size_nm=42.5, threshold="1/8"), "1/8"),
    (dict(pixel_size_nm=42.5, window="kaiser"), "kaiser"),
])
def test_bad_arguments_are_echoed(kwargs, match):
    image = np.random.default_rng(0).random((32, 32))
    with pytest.raises(ValueError, match=match):
        frc.frc_resolution(image, image, **kwargs)


def test_mismatched_or_small_images_rejected():
    with pytest.raises(ValueError, match="same shape"):
        frc.frc_curve(np.zeros((32, 32)), np.zeros((32, 34)), pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="too small"):
        frc.frc_single_image(np.zeros((8, 8)), pixel_size_nm=1.0)
