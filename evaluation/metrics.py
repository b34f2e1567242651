"""Image-quality metrics for 2x super-resolution, on numpy arrays.

Every metric compares ``image_test`` with ``image_true`` (same shape, 2-D). Because a network, a
bicubic upsampling and an ISM detector each report intensity on their own scale, each metric can
first fit ``image_test`` to ``image_true`` by least squares (gain and offset, ``fit=True``): the
comparison is then about structure, not about units.

The data range of every metric is the target's robust range, the spread between the
:data:`DATA_RANGE_PERCENTILES` (0.2 and 99.8) percentiles (:func:`robust_range`).

The project's **custom accuracy** is the percentage of pixels whose (fitted) value lies within
10 % of the target's robust range of the target value. It is the
successor of the seed project's "93.9 % accuracy", which was never defined; here it is defined
exactly and always reported next to the same number for bicubic upsampling, so it means something.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

ACCURACY_TOLERANCE = 0.10
# The percentile pairs of the evaluation, in one place. DATA_RANGE_PERCENTILES: the target's
# robust range, the data range of every metric (PSNR, SSIM, accuracy; README "Metrics") and the
# flatness check of `srunet evaluate`. DISPLAY_PERCENTILES: the grey-level stretch of figures.
DATA_RANGE_PERCENTILES = (0.2, 99.8)
DISPLAY_PERCENTILES = (0.5, 99.5)
_RANGE_WORDS = f"{DATA_RANGE_PERCENTILES[0]:g}-{DATA_RANGE_PERCENTILES[1]:g} percentile range"


def _check_pair(image_true: np.ndarray, image_test: np.ndarray, mask=None):
    image_true = np.asarray(image_true, dtype=np.float64)
    image_test = np.asarray(image_test, dtype=np.float64)
    if image_true.shape != image_test.shape:
        raise ValueError(
            f"image_true and image_test must have the same shape, got {image_true.shape} "
            f"and {image_test.shape}; upsample the prediction to the target grid first"
        )
    if image_true.ndim != 2:
        raise ValueError(f"expected 2-D images (y, x), got shape {image_true.shape}")
    for name, image in (("image_true", image_true), ("image_test", image_test)):
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{name} contains NaN or inf ({np.sum(~np.isfinite(image))} pixels)")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image_true.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {image_true.shape}")
        if not mask.any():
            raise ValueError("mask selects no pixel")
    return image_true, image_test, mask


def _check_range(data_range: float) -> float:
    if data_range is None or not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    return float(data_range)


def gain_offset(image_true: np.ndarray, image_test: np.ndarray, mask=None) -> tuple[float, float]:
    """Least-squares (gain, offset) with ``gain * image_test + offset ~ image_true``.

    The fit uses the pixels in ``mask`` (all when None).
    """
    image_true, image_test, mask = _check_pair(image_true, image_test, mask)
    t = image_true[mask] if mask is not None else image_true.ravel()
    p = image_test[mask] if mask is not None else image_test.ravel()
    design = np.stack([p, np.ones_like(p)], axis=1)
    (gain, offset), *_ = np.linalg.lstsq(design, t, rcond=None)
    return float(gain), float(offset)


def fit_gain_offset(image_true: np.ndarray, image_test: np.ndarray, mask=None) -> np.ndarray:
    """Return ``a * image_test + b`` with (a, b) from :func:`gain_offset`, over the whole image."""
    gain, offset = gain_offset(image_true, image_test, mask)
    return gain * np.asarray(image_test, dtype=np.float64) + offset


def _prepare(image_true, image_test, fit, mask):
    image_true, image_test, mask = _check_pair(image_true, image_test, mask)
    if fit:
        image_test = fit_gain_offset(image_true, image_test, mask)
    return image_true, image_test, mask


def psnr(image_true, image_test, *, data_range: float, fit: bool = False, mask=None) -> float:
    """Peak signal-to-noise ratio in dB (``skimage.metrics.peak_signal_noise_ratio``)."""
    data_range = _check_range(data_range)
    image_true, image_test, mask = _prepare(image_true, image_test, fit, mask)
    if mask is not None:
        image_true, image_test = image_true[mask], image_test[mask]
    return float(peak_signal_noise_ratio(image_true, image_test, data_range=data_range))


def ssim(image_true, image_test, *, data_range: float, fit: bool = False, mask=None) -> float:
    """Structural similarity (``skimage.metrics.structural_similarity``, 7x7 window).

    With ``mask`` the SSIM map is averaged over the masked pixels.
    """
    data_range = _check_range(data_range)
    image_true, image_test, mask = _prepare(image_true, image_test, fit, mask)
    value, ssim_map = structural_similarity(
        image_true, image_test, data_range=data_range, full=True
    )
    return float(ssim_map[mask].mean()) if mask is not None else float(value)


def nrmse(image_true, image_test, *, fit: bool = False, mask=None) -> float:
    """Root-mean-square error divided by the Euclidean norm of ``image_true`` (skimage default)."""
    image_true, image_test, mask = _prepare(image_true, image_test, fit, mask)
    if mask is not None:
        image_true, image_test = image_true[mask], image_test[mask]
    return float(normalized_root_mse(image_true, image_test))


def robust_range(image: np.ndarray, percentiles=DATA_RANGE_PERCENTILES) -> float:
    """Difference between the high and low percentile of ``image`` (the metrics' data range)."""
    low, high = np.percentile(np.asarray(image, dtype=np.float64), percentiles)
    return float(high - low)


def accuracy(image_true, image_test, *, tolerance: float = ACCURACY_TOLERANCE, fit: bool = True,
             mask=None) -> float:
    """Custom accuracy in percent: pixels with |test - true| <= tolerance x robust range of true.

    The robust range is the :data:`DATA_RANGE_PERCENTILES` range of ``image_true`` (over ``mask`` when
    given). ``fit`` (default True) first fits ``image_test`` to ``image_true`` by gain/offset.
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    image_true, image_test, mask = _prepare(image_true, image_test, fit, mask)
    if mask is not None:
        image_true, image_test = image_true[mask], image_test[mask]
    value_range = robust_range(image_true)
    if value_range <= 0:
        raise ValueError(f"image_true is constant over its {_RANGE_WORDS}; accuracy is undefined")
    return float(100.0 * np.mean(np.abs(image_test - image_true) <= tolerance * value_range))


def upsample_bicubic(image: np.ndarray) -> np.ndarray:
    """Bicubic 2x upsampling with the project's pixel convention (LR pixel i covers HR 2i, 2i+1).

    The baseline every model number is reported against.
    """
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image (y, x), got shape {image.shape}")
    # skimage's resize maps pixel centres with the half-pixel convention (like align_corners=False)
    return resize(image, (2 * image.shape[0], 2 * image.shape[1]), order=3, mode="reflect",
                  anti_aliasing=False, preserve_range=True)


def all_metrics(image_true, image_test, *, mask=None) -> dict:
    """PSNR, SSIM, NRMSE and accuracy after the gain/offset fit; data range = robust range of
    ``image_true``. The set reported everywhere (validation, evaluation, README)."""
    data_range = robust_range(np.asarray(image_true)[mask] if mask is not None else image_true)
    return {
        "psnr": psnr(image_true, image_test, data_range=data_range, fit=True, mask=mask),
        "ssim": ssim(image_true, image_test, data_range=data_range, fit=True, mask=mask),
        "nrmse": nrmse(image_true, image_test, fit=True, mask=mask),
        "accuracy": accuracy(image_true, image_test, fit=True, mask=mask),
    }
