"""Fourier ring correlation: resolution tracks a known Gaussian PSF, single-image split agrees;
the invented-detail flag fires on added texture and boosts, not on denoising or bicubic."""

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


def test_checkerboard_split_keeps_every_pixel_once():
    image = np.arange(1, 7 * 9 + 1, dtype=float).reshape(7, 9)
    even, odd = frc.checkerboard_split(image)
    assert even.shape == odd.shape
    assert sorted(np.concatenate([even[even > 0], odd[odd > 0]])) == sorted(image.ravel())


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


# --- invented-detail flag -------------------------------------------------------------------

def _wave(k: int, amplitude: float, size: int = 64) -> np.ndarray:
    """A cosine with exactly k cycles across the image along x (a single pair of FFT bins)."""
    return amplitude * np.cos(2 * np.pi * k * np.arange(size) / size)[None, :] * np.ones((size, 1))


def test_invented_detail_numbers_of_a_hand_made_case():
    # k = 2 of 64 px (0.03 cycles/px) is structure; k = 24 (0.375 cycles/px = 113 nm) is
    # beyond the ISM limit (0.306 cycles/px). Without a window every power is exact.
    low, high = _wave(2, 10.0), _wave(24, 1.0)
    # A texture the target lacks, identical in both draws: the gain fit shrinks the prediction
    # by 100/101 (least squares of target on prediction), so invented = (100/101) * 1/100.
    textured = frc.invented_detail(low + high, low, sr_repeat=low + high, hr_repeat=low,
                                   window=None)
    assert textured["invented"] == pytest.approx(100 / 101 / 100, rel=1e-9)
    assert textured["reproducible"] == pytest.approx(textured["invented"], rel=1e-9)
    assert textured["confirmed"] == pytest.approx(0.0, abs=1e-12)
    assert textured["flagged"] and textured["method"] == "two draws"
    # The same fine detail present in the target is confirmed: nothing is invented.
    real = frc.invented_detail(low + high, low + high, sr_repeat=low + high, window=None)
    assert real["invented"] == pytest.approx(0.0, abs=1e-12) and not real["flagged"]
    assert real["reproducible"] == pytest.approx(1 / 101, rel=1e-9)
    # That detail boosted 3x: gain g = (100 + 3) / (100 + 9); invented = (3 g - 1) 3 / 103.
    boosted = frc.invented_detail(low + 3 * high, low + high, window=None)
    gain = 103 / 109
    assert boosted["invented"] == pytest.approx((9 * gain - 3) / 103, rel=1e-9)
    assert boosted["method"] == "one draw"


def _field(seed: int, size: int = 128):
    """Blobs under an ISM-like blur (little power beyond the limit); a noise-free target, two
    noisy LR draws (extra confocal blur, 2x2 binning, Poisson) and two noisy target draws."""
    from srunet.physics.optics import bin_to_lr

    rng = np.random.default_rng(seed)
    obj = np.zeros((size, size))
    y, x = rng.integers(4, size - 4, (2, 60))
    obj[y, x] = rng.uniform(50, 150, 60)
    clean = gaussian_filter(obj, 1.5) * 20 + 5.0
    lr_clean = bin_to_lr(gaussian_filter(clean, 1.3), binning="sum")
    lrs = [rng.poisson(lr_clean).astype(float) for _ in range(2)]
    hrs = [rng.poisson(clean).astype(float) for _ in range(2)]
    return clean, lrs, hrs


def _texture(shape, seed: int = 7) -> np.ndarray:
    """A fixed unit-RMS random pattern band-passed to 0.33-0.5 cycles/px (beyond 139 nm)."""
    noise = np.random.default_rng(seed).normal(size=shape)
    radius = np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :])
    pattern = np.real(np.fft.ifft2(np.fft.fft2(noise) * ((radius > 0.33) & (radius <= 0.5))))
    return pattern / pattern.std()


@pytest.mark.parametrize("two_draws", [True, False])
def test_texture_is_flagged_denoising_and_bicubic_are_not(two_draws):
    from srunet.evaluation.metrics import upsample_bicubic

    def denoise(lr):  # a denoiser without super-resolution
        return gaussian_filter(upsample_bicubic(lr), 1.0)

    def textured(lr):  # the same plus a fixed texture at 5 % of the local brightness
        out = denoise(lr)
        return out + 0.05 * np.maximum(gaussian_filter(out, 2) - out.mean(), 0) * texture

    clean, lrs, hrs = _field(3)
    texture = _texture(clean.shape)
    results = {}
    for name, model in (("bicubic", upsample_bicubic), ("denoised", denoise),
                        ("textured", textured)):
        preds = [model(lr) for lr in lrs]
        results[name] = frc.invented_detail(preds[0], hrs[0], sr_repeat=preds[1] if two_draws else None,
                                            hr_repeat=hrs[1])
    assert results["textured"]["flagged"]
    assert results["textured"]["invented"] > 2 * frc.INVENTED_THRESHOLD
    if two_draws:  # one draw counts the prediction's noise: bicubic's is beyond the limit
        assert not results["bicubic"]["flagged"]
        assert abs(results["bicubic"]["invented"]) < frc.INVENTED_THRESHOLD / 3
    assert not results["denoised"]["flagged"]
    assert abs(results["denoised"]["invented"]) < frc.INVENTED_THRESHOLD / 3



def test_single_image_variant_warns_on_strong_texture_only():
    from srunet.evaluation.metrics import upsample_bicubic
    from srunet.model.predict import high_band_warning

    clean, lrs, _ = _field(4)
    denoised = gaussian_filter(upsample_bicubic(lrs[0]), 1.0)
    brightness = np.maximum(gaussian_filter(denoised, 2) - denoised.mean(), 0)
    textured = denoised + 0.1 * brightness * _texture(clean.shape)
    single = {name: frc.high_band_fraction(image, pixel_size_nm=PIXEL_NM)
              for name, image in (("denoised", denoised), ("textured", textured))}
    assert single["textured"] > frc.HIGH_BAND_THRESHOLD > 10 * single["denoised"]
    assert "invented detail" in high_band_warning(textured, PIXEL_NM, "x.tif")
    assert high_band_warning(denoised, PIXEL_NM, "x.tif") is None
    assert high_band_warning(textured, 60.0, "x.tif") is None  # grid too coarse for the band


def test_invented_detail_rejects_bad_input():
    image = np.random.default_rng(0).random((32, 32))
    with pytest.raises(ValueError, match="differs from sr"):
        frc.invented_detail(image, image[:30])
    with pytest.raises(ValueError, match="threshold"):
        frc.invented_detail(image, image, threshold=2.0)
    with pytest.raises(ValueError, match="cannot sample"):
        frc.high_band_fraction(image, pixel_size_nm=80.0)
