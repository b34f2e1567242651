"""Physics consistency of a super-resolved image with its own input, without ground truth.

In the spirit of NanoJ-SQUIRREL (Culley et al. 2018, Nat. Methods 15:263): a faithful ISM-like
prediction, imaged again by the confocal, must give back the confocal image it came from. With
Gaussian PSFs the confocal PSF is the ISM PSF convolved with a Gaussian of sigma
sqrt(sigma_confocal^2 - sigma_ism^2) (``contract.psf_difference_sigma_nm``), so

    predicted LR = 2x2 bin( G_diff * SR ),

and since LR pixel (i, j) covers exactly HR pixels (2i..2i+1, 2j..2j+1) (srunet/geometry.py), the
binning needs no interpolation. A gain and offset are fitted by least squares first, because the
network's and the camera's intensity units differ. Structure the network invented, or moved,
does not survive this round trip and lights up in the error map; missing fine detail below the
confocal's resolution cannot be detected this way (it is invisible in LR by construction).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from srunet.geometry import SCALE
from srunet.evaluation.metrics import gain_offset
from srunet import contract

BINNINGS = ("mean", "sum")


def bin_to_lr(image_hr: np.ndarray, *, binning: str = "mean") -> np.ndarray:
    """Bin an HR-grid image 2x2 onto the LR grid (pixel convention of srunet/geometry.py)."""
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
    image_hr = np.asarray(image_hr, dtype=np.float64)
    height, width = image_hr.shape[0] // SCALE, image_hr.shape[1] // SCALE
    blocks = image_hr[: SCALE * height, : SCALE * width].reshape(height, SCALE, width, SCALE)
    return blocks.sum(axis=(1, 3)) if binning == "sum" else blocks.mean(axis=(1, 3))


def degrade_to_lr(sr: np.ndarray, *, sigma_nm: float | None = None,
                  binning: str = "mean") -> np.ndarray:
    """What the confocal would record of ``sr``: blur by the PSF difference, then bin 2x2.

    ``sigma_nm`` defaults to ``contract.psf_difference_sigma_nm()`` (default optical setting).
    """
    sr = np.asarray(sr, dtype=np.float64)
    if sr.ndim != 2:
        raise ValueError(f"sr must be a 2-D image (y, x), got shape {sr.shape}")
    sigma_nm = contract.psf_difference_sigma_nm() if sigma_nm is None else sigma_nm
    if not np.isfinite(sigma_nm) or sigma_nm < 0:
        raise ValueError(f"sigma_nm must be a finite number >= 0, got {sigma_nm!r}")
    # 'reflect' (half-sample symmetric) adds no step at the border that the LR image lacks.
    blurred = gaussian_filter(sr, sigma_nm / contract.HR_PIXEL_NM, mode="reflect")
    return bin_to_lr(blurred, binning=binning)


def consistency_map(lr: np.ndarray, sr: np.ndarray, *, sigma_nm: float | None = None,
                    binning: str = "mean") -> dict:
    """Round-trip error between an SR prediction, degraded to the LR grid, and the real LR.

    Parameters
    ----------
    lr : (M, N) array
        The confocal input (any intensity unit).
    sr : (2M, 2N) array
        The prediction on the ISM grid.
    sigma_nm : float, optional
        Sigma of the Gaussian that turns the ISM PSF into the confocal PSF; default
        ``contract.psf_difference_sigma_nm()``. Pass the per-image value when it is known.
    binning : {'mean', 'sum'}
        2x2 binning; irrelevant to the scores (the gain absorbs it), kept for map units.

    Returns
    -------
    dict
        ``map``: (M, N) float32, |LR - (gain x degraded SR + offset)| in LR units;
        ``rse``: resolution-scaled error, the RMS of that residual (LR units);
        ``rsp``: resolution-scaled Pearson correlation of degraded SR and LR (1 = consistent);
        ``gain``, ``offset``: the least-squares fit; ``degraded``: the fitted degraded SR
        (float32, LR grid).
    """
    lr = np.asarray(lr, dtype=np.float64)
    sr = np.asarray(sr, dtype=np.float64)
    if lr.ndim != 2:
        raise ValueError(f"lr must be a 2-D image (y, x), got shape {lr.shape}")
    if sr.shape != (SCALE * lr.shape[0], SCALE * lr.shape[1]):
        raise ValueError(f"sr must be {SCALE}x the lr shape {lr.shape}, i.e. "
                         f"{(SCALE * lr.shape[0], SCALE * lr.shape[1])}, got {sr.shape}")
    for name, image in (("lr", lr), ("sr", sr)):
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{name} contains NaN or inf ({np.sum(~np.isfinite(image))} pixels)")
    degraded = degrade_to_lr(sr, sigma_nm=sigma_nm, binning=binning)
    if np.ptp(degraded) == 0 or np.ptp(lr) == 0:
        raise ValueError("lr or the degraded sr is constant; consistency is undefined")
    gain, offset = gain_offset(lr, degraded)
    fitted = gain * degraded + offset
    residual = lr - fitted
    return {
        "map": np.abs(residual).astype(np.float32),
        "rse": float(np.sqrt(np.mean(residual**2))),
        "rsp": float(np.corrcoef(degraded.ravel(), lr.ravel())[0, 1]),
        "gain": gain,
        "offset": offset,
        "degraded": fitted.astype(np.float32),
    }
