"""Fourier ring correlation (FRC): how fine a detail an image actually carries, in nanometres.

FRC correlates the Fourier coefficients of two images of the same field with *independent noise*
ring by ring (one ring per spatial frequency). Where the correlation falls below a threshold, the
signal has sunk into the noise; the inverse of that frequency is the resolution. With a 1/7
threshold a noise-free Gaussian-blurred object is reported at a frequency where its spectral SNR
is 1/6, so for the same object and noise the number scales linearly with the PSF width.

Two realisations (``frc_curve``, ``frc_resolution``) are the reference method. When only one
image exists, ``frc_single_image`` splits it into two half-images (Koho et al. 2019, "Fourier
ring correlation simplifies image restoration in fluorescence microscopy", Nat. Commun. 10:3103).
Here the split is the true checkerboard (pixels with i + j even vs odd): each half is a square
lattice rotated by 45 degrees with a pixel size of sqrt(2) x the original, which keeps every
frequency up to 1 / (2 sqrt(2) px), finer than the 2x2 sub-image split (1 / (4 px)) can. The
second half sits half a rotated pixel diagonally away from the first; Koho et al. correct the bias
this causes with an empirical calibration curve, here the known shift is removed exactly with the
Fourier shift theorem, and the frequency axis is scaled by the sqrt(2) pixel-size change.

Caveat, stated in every report: both methods assume noise that is independent between the two
images (or between neighbouring pixels). A network output is a deterministic function of its
input and correlates its residual noise across neighbours, so its single-image FRC is optimistic.

An FRC is blind to power: a faint high band that repeats between noise draws correlates as well
as a strong one, and a denoiser's estimate of the signal repeats by construction, so "SR-vs-SR
FRC finer than the ISM limit" flags denoising (20 of 24 release outputs; docs/architecture_study.md).
The invented-detail flag (``invented_detail``) therefore weighs power: it measures the detail
beyond the ISM limit that repeats between two noise draws of the input but is not found in the
independent ISM target, relative to the image's structure power.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.signal import savgol_filter

from srunet.evaluation.metrics import gain_offset
from srunet.physics import contract

THRESHOLDS = ("1/7", "half-bit")
WINDOWS = ("hamming", "hann", "tukey", None)
# Invented-detail flag (see ``invented_detail``), calibrated with bench/flag_controls.py on 24
# held-out phantoms (seeds 900000-23, two draws each): the release holds at most 9.5e-5 of
# unconfirmed reproducible power beyond the limit, bicubic (Keys or spline) at most 9.5e-5, the
# release low-passed at the limit 3e-6; the release plus a fixed texture at 5 % of the local
# brightness at least 2.9e-4, the release with that band boosted 10x at least 1.6e-4 (15x:
# 3.6e-4). The threshold sits near the geometric middle of 9.5e-5 and 2.9e-4.
INVENTED_THRESHOLD = 1.5e-4
# Single-image variant (``high_band_fraction``: no target, no second draw, so passed-through
# noise counts too): the release holds at most 6.2e-4 of its own power beyond the limit, the
# 5 % texture 6.5e-4 to 1.5e-3, a 10 % texture at least 2.0e-3. Weaker: catches strong textures.
HIGH_BAND_THRESHOLD = 1e-3
# Every 2x interpolator leaves images of the input's coarse content next to the output's Nyquist
# frequency (g cycles/px reappears at 0.5 - g): reproducible, not in the target, no texture (Keys
# bicubic: up to 3.7e-4 there). So the band stops 0.1 cycles/px short of Nyquist on each axis.
AXIS_FREQUENCY_MAX = 0.4  # cycles per pixel


def _check_image(image, name: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image (y, x), got shape {image.shape}")
    if min(image.shape) < 16:
        raise ValueError(f"{name} is too small for FRC (shape {image.shape}; need >= 16 px per axis)")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name} contains NaN or inf ({np.sum(~np.isfinite(image))} pixels)")
    return image


def _check_pixel_size(pixel_size_nm) -> float:
    if pixel_size_nm is None or not np.isfinite(pixel_size_nm) or pixel_size_nm <= 0:
        raise ValueError(f"pixel_size_nm must be a positive finite number, got {pixel_size_nm!r}")
    return float(pixel_size_nm)


def _window(shape: tuple[int, int], window: str | None) -> np.ndarray | float:
    """Separable apodisation window: tapers the borders so the FFT's periodic wrap-around does not
    add a bright cross of edge frequencies that correlates perfectly between the two images."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    if window is None:
        return 1.0
    from scipy.signal import windows as sw

    # Periodic (sym=False) windows: the FFT treats the image as one period.
    make = {"hamming": sw.hamming, "hann": sw.hann,
            "tukey": lambda n, sym: sw.tukey(n, alpha=0.25, sym=sym)}[window]
    return np.outer(make(shape[0], sym=False), make(shape[1], sym=False))


def _prepare(image: np.ndarray, window: str | None) -> np.ndarray:
    # Subtracting the mean first keeps the window's own spectrum (scaled by the mean intensity)
    # from dominating the lowest rings.
    return (image - image.mean()) * _window(image.shape, window)


def _ring_correlation(spectrum1: np.ndarray, spectrum2: np.ndarray):
    """Correlation per ring of two unshifted 2-D spectra; rings 1 .. Nyquist of the shorter axis.

    Returns frequency (cycles per pixel), correlation and the number of coefficients per ring.
    """
    shape = spectrum1.shape
    radius = np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :])
    step = 1.0 / min(shape)  # one ring per Fourier sample along the shorter axis
    ring = np.rint(radius / step).astype(np.int64).ravel()
    n_rings = min(shape) // 2
    keep = ring <= n_rings
    ring = ring[keep]
    s1, s2 = spectrum1.ravel()[keep], spectrum2.ravel()[keep]
    cross = np.bincount(ring, weights=np.real(s1 * np.conj(s2)), minlength=n_rings + 1)
    power1 = np.bincount(ring, weights=np.abs(s1) ** 2, minlength=n_rings + 1)
    power2 = np.bincount(ring, weights=np.abs(s2) ** 2, minlength=n_rings + 1)
    counts = np.bincount(ring, minlength=n_rings + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = cross / np.sqrt(power1 * power2)
    correlation = np.nan_to_num(correlation, nan=0.0, posinf=0.0, neginf=0.0)
    # Ring 0 is the (subtracted) mean: no information about resolution.
    return np.arange(1, n_rings + 1) * step, correlation[1:], counts[1:]


def frc_curve(image1, image2, *, pixel_size_nm: float, window: str | None = "hamming",
              return_counts: bool = False):
    """Fourier ring correlation of two independent noise realisations of the same field.

    Parameters
    ----------
    image1, image2 : (M, N) array
        Two acquisitions of the same field, registered, with independent noise.
    pixel_size_nm : float
        Pixel size of both images in nanometres.
    window : {'hamming', 'hann', 'tukey', None}
        Apodisation window applied (after mean subtraction) before the FFT.
    return_counts : bool
        Also return the number of Fourier coefficients per ring (for the half-bit threshold).

    Returns
    -------
    spatial_frequency_per_nm : (R,) ndarray
        Ring frequencies in cycles per nm, up to the Nyquist frequency of the shorter axis.
    correlation : (R,) ndarray
        FRC value per ring, in [-1, 1].
    counts : (R,) ndarray of int, only if ``return_counts``
    """
    image1, image2 = _check_image(image1, "image1"), _check_image(image2, "image2")
    if image1.shape != image2.shape:
        raise ValueError(f"image1 and image2 must have the same shape, got {image1.shape} and {image2.shape}")
    pixel_size_nm = _check_pixel_size(pixel_size_nm)
    freq, corr, counts = _ring_correlation(np.fft.fft2(_prepare(image1, window)),
                                           np.fft.fft2(_prepare(image2, window)))
    freq = freq / pixel_size_nm
    return (freq, corr, counts) if return_counts else (freq, corr)


def checkerboard_split(image) -> tuple[np.ndarray, np.ndarray]:
    """Split an image into its i + j even and i + j odd pixels, each on a 45-degree-rotated grid.

    Pixel (i, j) goes to rotated index (u, v) = ((i + j) // 2, (i - j) // 2 + N // 2); the rotated
    pixel size is sqrt(2) x the original. Positions the image does not cover are zero. The odd
    half sits at (u + 1/2, v + 1/2) in the even half's frame.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image (y, x), got shape {image.shape}")
    i, j = np.indices(image.shape)
    odd = (i + j) % 2 == 1
    u = (i + j - odd) // 2
    v = (i - j - odd) // 2 + image.shape[1] // 2
    size = (int(u.max()) + 1, int(v.max()) + 1)
    halves = []
    for selection in (~odd, odd):
        half = np.zeros(size, dtype=image.dtype)
        half[u[selection], v[selection]] = image[selection]
        halves.append(half)
    return halves[0], halves[1]


def frc_single_image_curve(image, *, pixel_size_nm: float, window: str | None = "hamming",
                           return_counts: bool = False):
    """FRC of one image against itself, split into its checkerboard halves (see module notes).

    Parameters and returns as :func:`frc_curve`; the frequency axis already accounts for the
    sqrt(2) larger pixels of the rotated halves, so it reaches 1 / (2 sqrt(2) ``pixel_size_nm``).
    Assumes noise independent between neighbouring pixels (raw camera or detector data).
    """
    image = _check_image(image, "image")
    pixel_size_nm = _check_pixel_size(pixel_size_nm)
    even, odd = checkerboard_split(_prepare(image, window))
    spectrum_even, spectrum_odd = np.fft.fft2(even), np.fft.fft2(odd)
    # Undo the odd half's known (1/2, 1/2) rotated-pixel offset (Fourier shift theorem), instead
    # of Koho et al.'s empirical calibration of the bias that offset causes.
    ku, kv = np.fft.fftfreq(even.shape[0])[:, None], np.fft.fftfreq(even.shape[1])[None, :]
    spectrum_odd = spectrum_odd * np.exp(-1j * np.pi * (ku + kv))
    freq, corr, counts = _ring_correlation(spectrum_even, spectrum_odd)
    # Each half has half the samples, so the noise of the dropped pixels folds into its band:
    # spectral SNR per half = SNR(full image) / 2. Doubling it back (SNR = FRC / (1 - FRC), as
    # the cryo-EM "full dataset" correction does) makes the curve comparable with a two-image FRC.
    corr = 2.0 * corr / (1.0 + np.abs(corr))
    freq = freq / (math.sqrt(2.0) * pixel_size_nm)
    return (freq, corr, counts) if return_counts else (freq, corr)


def threshold_curve(threshold, counts) -> np.ndarray:
    """Threshold per ring: '1/7' (fixed), 'half-bit' (van Heel & Schatz 2005), or a number."""
    counts = np.asarray(counts, dtype=np.float64)
    if isinstance(threshold, str):
        if threshold == "1/7":
            return np.full(counts.shape, 1.0 / 7.0)
        if threshold == "half-bit":
            root = np.sqrt(np.maximum(counts, 1.0))
            return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)
        raise ValueError(f"threshold must be one of {THRESHOLDS} or a number in (0, 1), got {threshold!r}")
    if not 0 < float(threshold) < 1:
        raise ValueError(f"threshold must be one of {THRESHOLDS} or a number in (0, 1), got {threshold!r}")
    return np.full(counts.shape, float(threshold))


def smooth_curve(correlation) -> np.ndarray:
    """Savitzky-Golay smoothing over ~5 % of the rings: ring-to-ring scatter ~ 1/sqrt(ring size)
    would otherwise make the first crossing jump between noise draws."""
    correlation = np.asarray(correlation, dtype=np.float64)
    length = max(5, 2 * (len(correlation) // 40) + 1)
    if len(correlation) < length:
        return correlation.copy()
    return savgol_filter(correlation, length, polyorder=2, mode="interp")


def resolution_from_curve(spatial_frequency_per_nm, correlation, *, threshold="1/7", counts=None):
    """Resolution (nm) at the smoothed curve's first crossing of the threshold.

    Returns
    -------
    resolution_nm : float
        1 / (crossing frequency), linearly interpolated between rings.
    crossed : bool
        False when the curve stays above the threshold up to the highest measurable frequency;
        ``resolution_nm`` is then that frequency's period, an upper bound (sampling-limited).
    """
    freq = np.asarray(spatial_frequency_per_nm, dtype=np.float64)
    corr = np.asarray(correlation, dtype=np.float64)
    if freq.shape != corr.shape or freq.ndim != 1 or len(freq) < 2:
        raise ValueError(f"need matching 1-D frequency and correlation arrays, got {freq.shape} and {corr.shape}")
    if threshold == "half-bit" and counts is None:
        raise ValueError("the 'half-bit' threshold needs the ring counts (return_counts=True)")
    limit = threshold_curve(threshold, counts if counts is not None else np.ones_like(freq))
    excess = smooth_curve(corr) - limit
    below = np.flatnonzero(excess < 0)
    if len(below) == 0:
        return float(1.0 / freq[-1]), False
    k = int(below[0])
    if k == 0:
        return float(1.0 / freq[0]), True
    # Linear interpolation of the crossing between ring k-1 (above) and ring k (below).
    t = excess[k - 1] / (excess[k - 1] - excess[k])
    return float(1.0 / (freq[k - 1] + t * (freq[k] - freq[k - 1]))), True


def _resolution(curve, threshold, what: str) -> float:
    freq, corr, counts = curve
    resolution, crossed = resolution_from_curve(freq, corr, threshold=threshold, counts=counts)
    if not crossed:
        warnings.warn(f"{what}: FRC stays above the {threshold} threshold up to the highest "
                      f"measurable frequency; resolution is at most {resolution:.1f} nm "
                      "(sampling-limited, or noise that is not independent)", stacklevel=3)
    return resolution


def frc_resolution(image1, image2, *, pixel_size_nm: float, threshold="1/7",
                   window: str | None = "hamming") -> float:
    """Resolution in nm from two independent noise realisations (smoothed FRC, first crossing).

    Parameters
    ----------
    image1, image2 : (M, N) array
        Two registered acquisitions of the same field with independent noise.
    pixel_size_nm : float
    threshold : {'1/7', 'half-bit'} or float
        Fixed 1/7 (default) or the half-bit information criterion.
    window : {'hamming', 'hann', 'tukey', None}

    Returns
    -------
    float
        Resolution in nm. If the curve never crosses, the sampling-limited bound is returned and
        a warning says so.
    """
    threshold_curve(threshold, [1])  # validate before the FFTs
    curve = frc_curve(image1, image2, pixel_size_nm=pixel_size_nm, window=window, return_counts=True)
    return _resolution(curve, threshold, "two-image FRC")


def frc_single_image(image, *, pixel_size_nm: float, threshold="1/7",
                     window: str | None = "hamming") -> float:
    """Resolution in nm of one image, by the single-image checkerboard split (see module notes).

    Parameters as :func:`frc_resolution`. The finest measurable value is 2 sqrt(2)
    ``pixel_size_nm`` (120 nm on the 42.5 nm ISM grid, below the 139 nm ISM limit).
    """
    threshold_curve(threshold, [1])
    curve = frc_single_image_curve(image, pixel_size_nm=pixel_size_nm, window=window,
                                   return_counts=True)
    return _resolution(curve, threshold, "single-image FRC")


def _spectrum(image, window) -> np.ndarray:
    return np.fft.fft2(_prepare(np.asarray(image, dtype=np.float64), window))


def _bands(shape, pixel_size_nm: float, limit_nm: float):
    """Masks of the coefficients beyond the limit (short of the Nyquist strip) and of every
    non-DC coefficient."""
    if pixel_size_nm / limit_nm >= AXIS_FREQUENCY_MAX:
        raise ValueError(f"pixel size {pixel_size_nm} nm cannot sample detail finer than "
                         f"{limit_nm} nm (Nyquist period {2 * pixel_size_nm} nm)")
    fy, fx = np.abs(np.fft.fftfreq(shape[0]))[:, None], np.abs(np.fft.fftfreq(shape[1]))[None, :]
    radius = np.hypot(fy, fx)
    inside = np.maximum(fy, fx) <= AXIS_FREQUENCY_MAX
    return (radius > pixel_size_nm / limit_nm) & inside, radius > 0


def _cross(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sum(np.real(a[mask] * np.conj(b[mask]))))


def invented_detail(sr, hr, *, sr_repeat=None, hr_repeat=None,
                    pixel_size_nm: float = contract.HR_PIXEL_NM,
                    limit_nm: float = contract.ISM_RESOLUTION_LIMIT_NM,
                    threshold: float = INVENTED_THRESHOLD, window: str | None = "hamming") -> dict:
    """Power beyond the ISM limit that repeats between noise draws but is not in the target.

    With two predictions (from two noise draws of the input), their cross-spectrum beyond
    ``limit_nm`` is the prediction's *reproducible* high band: an invented texture and a boosted
    band repeat, input noise does not. The part of it the independent ISM target *confirms*
    (cross-spectrum prediction x target, averaged over the draws) is real detail a denoiser
    estimated; for a posterior-mean estimator the two are equal in expectation. The flag is
    their difference, as a share of the *structure power* (the prediction x target cross-power
    at every non-zero frequency), above ``threshold``. The prediction is scaled by its
    least-squares gain to the target first, so units do not matter.

    Parameters
    ----------
    sr, hr : (M, N) array
        Prediction and ISM target of one field (independent noise).
    sr_repeat, hr_repeat : (M, N) array, optional
        Prediction from a second noise draw of the input; second target draw. Without
        ``sr_repeat`` the prediction's own high-band power stands in for the reproducible one,
        so the prediction's noise counts as invented too (an upper bound).
    pixel_size_nm, limit_nm, threshold, window
        Grid of both images; the band starts at 1 / ``limit_nm``.

    Returns
    -------
    dict
        ``invented``, ``reproducible``, ``confirmed`` (fractions of ``structure``), the
        absolute ``structure`` power, ``flagged`` (bool), ``threshold`` and ``method``
        ("two draws" or "one draw"). ``invented`` is NaN, not flagged, when the prediction
        shares no structure with the target.
    """
    sr = _check_image(sr, "sr")
    draws = [sr] + ([] if sr_repeat is None else [_check_image(sr_repeat, "sr_repeat")])
    targets = [_check_image(hr, "hr")] + ([] if hr_repeat is None else
                                          [_check_image(hr_repeat, "hr_repeat")])
    for name, image in (("sr_repeat", sr_repeat), ("hr", hr), ("hr_repeat", hr_repeat)):
        if image is not None and np.shape(image) != sr.shape:
            raise ValueError(f"{name} shape {np.shape(image)} differs from sr {sr.shape}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    beyond, ac = _bands(sr.shape, _check_pixel_size(pixel_size_nm), float(limit_nm))
    gain = gain_offset(targets[0], sr)[0]
    s = [_spectrum(gain * d, window) for d in draws]
    h = [_spectrum(t, window) for t in targets]
    pairs = [(a, b) for a in s for b in h]  # every prediction-target pair: independent noise
    structure = float(np.mean([_cross(a, b, ac) for a, b in pairs]))
    confirmed = float(np.mean([_cross(a, b, beyond) for a, b in pairs]))
    reproducible = _cross(s[0], s[-1], beyond)  # own power when there is one draw only
    if structure <= 0:
        invented = float("nan")
    else:
        invented, reproducible, confirmed = ((reproducible - confirmed) / structure,
                                             reproducible / structure, confirmed / structure)
    return {"invented": invented, "reproducible": reproducible, "confirmed": confirmed,
            "structure": structure, "flagged": bool(invented > threshold),
            "threshold": float(threshold), "method": "two draws" if len(s) == 2 else "one draw"}


def high_band_fraction(image, *, pixel_size_nm: float,
                       limit_nm: float = contract.ISM_RESOLUTION_LIMIT_NM,
                       window: str | None = "hamming") -> float:
    """Share of one image's power (mean removed) at frequencies beyond 1 / ``limit_nm``.

    The single-image variant of :func:`invented_detail` (no target, no second draw): it cannot
    tell invented detail from noise the model passes, so above ``HIGH_BAND_THRESHOLD`` it says
    "look", not "invented".
    """
    image = _check_image(image, "image")
    beyond, ac = _bands(image.shape, _check_pixel_size(pixel_size_nm), float(limit_nm))
    power = np.abs(_spectrum(image, window)) ** 2
    total = float(power[ac].sum())
    return float(power[beyond].sum()) / total if total > 0 else 0.0
