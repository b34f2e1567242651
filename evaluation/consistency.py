"""Physics consistency of a super-resolved image with its own input, without ground truth.

In the spirit of NanoJ-SQUIRREL (Culley et al. 2018, Nat. Methods 15:263): a faithful ISM-like
prediction, imaged again by the confocal, must give back the confocal image it came from. With
Gaussian PSFs the confocal PSF is the ISM PSF convolved with a Gaussian of sigma
sqrt(sigma_confocal^2 - sigma_ism^2) (``srunet.physics.contract.psf_difference_sigma_nm``), so

    predicted LR = 2x2 bin( G_diff * SR ),

and since LR pixel (i, j) covers exactly HR pixels (2i..2i+1, 2j..2j+1) (srunet/geometry.py), the
binning needs no interpolation. The round trip itself is the forward model's
(``srunet.physics.optics.degrade_to_lr``). A gain and offset are fitted by least squares first, because the
network's and the camera's intensity units differ. Structure the network invented, or moved,
does not survive this round trip and lights up in the error map; missing fine detail below the
confocal's resolution cannot be detected this way (it is invisible in LR by construction).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from srunet.evaluation.metrics import gain_offset
from srunet.geometry import SCALE
from srunet.physics.optics import degrade_to_lr

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
