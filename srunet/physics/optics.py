"""Optics and detectors of the simulator: PSFs, FFT blur, box-sum binning, sub-pixel shift, noise.

Conventions
-----------
* Images on the fine grid (``contract.FINE_PIXEL_NM``) are float64; pixel (i, j) covers the
  square [i, i+1) x [j, j+1) in fine-pixel units, so box-summing 2x2 fine pixels gives HR pixel
  (i, j) and 4x4 gives LR pixel (i, j): LR pixel (i, j) covers HR pixels (2i..2i+1, 2j..2j+1),
  the convention of ``srunet.geometry``.
* PSFs are described by a small dict (see :func:`psf_spec`) and applied through their *analytic*
  OTF sampled on the ``rfft2`` frequency grid. Blurring is then one multiplication of the object
  spectrum, the PSF never has to be rasterised, and the same spectrum serves both modalities.
* A PSF is a mixture, normalised to unit integral, of a main Gaussian, an optional wide Gaussian
  tail (scatter, aberrations) and an optional Airy-like first side lobe (a thin ring convolved
  with a Gaussian). The main width is solved so that the *mixture's* FWHM equals the drawn FWHM:
  the contract numbers are FWHMs, whatever the shape.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.optimize
import scipy.special

from srunet.physics import contract

# Airy-like side lobe: the first ring of an Airy pattern peaks at ~0.82 lambda/NA while its FWHM
# is ~0.51 lambda/NA, hence radius = 1.6 FWHM; the ring's radial width is a fraction of the FWHM.
RING_RADIUS_PER_FWHM = 1.6
RING_WIDTH_PER_FWHM = 0.2
# Gaussian approximations of the Airy pattern, in units of lambda/NA: widefield sigma ~0.21,
# one Airy unit (disc diameter) = 1.22. Used only for the *relative* pinhole/reassignment effects.
WIDEFIELD_SIGMA_LAMBDA_NA = 0.21
AIRY_UNIT_LAMBDA_NA = 1.22
UINT16_MAX = 65535
MAX_DARK_RING = 0.2  # most negative ring weight: a deconvolution's ringing, not a new PSF


# ----------------------------------------------------------------------------------- PSF widths
def _confocal_sigma_au(pinhole_au: float) -> float:
    """Confocal sigma (in Airy units) for Gaussian excitation/emission and a disc pinhole.

    Confocal PSF = excitation x (emission convolved with the pinhole); for Gaussians the product
    has 1/s^2 = 1/s_ex^2 + 1/(s_em^2 + s_pin^2), with the disc's per-axis variance (r/2)^2.
    """
    w = WIDEFIELD_SIGMA_LAMBDA_NA / AIRY_UNIT_LAMBDA_NA
    s_pin = pinhole_au / 4.0  # disc radius pinhole/2 AU, per-axis std = radius/2
    return 1.0 / math.sqrt(1.0 / w**2 + 1.0 / (w**2 + s_pin**2))


def confocal_fwhm_factor(pinhole_au: float) -> float:
    """FWHM scale of the confocal PSF relative to the table's pinhole (``DEFAULT_PINHOLE_AU``).

    Parameters
    ----------
    pinhole_au : float
        Pinhole diameter in Airy units.

    Returns
    -------
    float
        1.0 at the default pinhole; about 0.95 at 0.8 AU and 1.08 at 2 AU.
    """
    return _confocal_sigma_au(pinhole_au) / _confocal_sigma_au(contract.DEFAULT_PINHOLE_AU)


def ism_fwhm_factor(reassignment: float, fwhm_nm: float,
                    detector_au: float = contract.ISM_DETECTOR_AU) -> float:
    """FWHM scale of the ISM PSF for a reassignment factor off the table's (optimal) value.

    A detector element at offset d sees a PSF centred at ``r_opt * d``; reassigning by ``r``
    leaves a residual ``(r_opt - r) * d`` that adds in quadrature to the ISM width, with d spread
    over the detector disc (``detector_au``, default ``ISM_DETECTOR_AU``). The effect is small
    (< 1 % over 0.45-0.5), as it is physically; the per-image FWHM jitter dominates.

    Parameters
    ----------
    reassignment : float
        Reassignment factor used by the (virtual) instrument.
    fwhm_nm : float
        ISM FWHM at the default reassignment, nm.
    detector_au : float
        Diameter of the detector array in Airy units (Airyscan-like geometries: 0.8-1.8).

    Returns
    -------
    float
        >= 1.0, exactly 1.0 at ``DEFAULT_REASSIGNMENT``.
    """
    # The ISM FWHM is ~confocal-widefield / sqrt(2): lambda/NA ~ FWHM * sqrt(2) / 0.51.
    au_nm = AIRY_UNIT_LAMBDA_NA * fwhm_nm * math.sqrt(2.0) / 0.51
    d_rms = detector_au * au_nm / 4.0  # per-axis std over the detector disc
    sigma = contract.fwhm_to_sigma(fwhm_nm)
    residual = (reassignment - contract.DEFAULT_REASSIGNMENT) * d_rms
    return math.sqrt(sigma**2 + residual**2) / sigma


# ------------------------------------------------------------------------------------ PSF shape
def _gauss2d(r: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (r / sigma) ** 2) / (2.0 * math.pi * sigma**2)


def _ring2d(r: np.ndarray, radius: float, width: float) -> np.ndarray:
    # Thin ring of unit mass convolved with a 2D Gaussian: exact radial profile via I0,
    # written with the exponentially scaled i0e so it does not overflow.
    return (np.exp(-0.5 * ((r - radius) / width) ** 2) * scipy.special.i0e(r * radius / width**2)
            / (2.0 * math.pi * width**2))


def psf_profile(r_nm: np.ndarray, spec: dict) -> np.ndarray:
    """Radial PSF profile (unit 2D integral, per nm^2) of a PSF spec at radii ``r_nm``."""
    r = np.asarray(r_nm, dtype=float)
    a, b = spec["tail_weight"], spec["ring_weight"]
    s = spec["sigma_nm"]
    return ((1.0 - a - b) * _gauss2d(r, s) + a * _gauss2d(r, spec["tail_scale"] * s)
            + b * _ring2d(r, spec["ring_radius_nm"], spec["ring_width_nm"]))


def psf_spec(fwhm_nm: float, tail_weight: float = 0.0, tail_scale: float = 2.5,
             ring_weight: float = 0.0) -> dict:
    """PSF description whose radial profile has exactly the requested FWHM.

    Parameters
    ----------
    fwhm_nm : float
        Full width at half maximum of the whole (mixture) PSF, nm.
    tail_weight : float
        Fraction of the energy in a wide Gaussian tail of width ``tail_scale`` x main sigma.
    tail_scale : float
        Width of the tail relative to the main Gaussian.
    ring_weight : float
        Fraction of the energy in an Airy-like first side lobe; negative (down to
        ``-MAX_DARK_RING``) gives a dark ring, the ringing of a deconvolved image.

    Returns
    -------
    dict
        JSON-serialisable: ``fwhm_nm``, ``sigma_nm`` (main Gaussian, solved), ``tail_weight``,
        ``tail_scale``, ``ring_weight``, ``ring_radius_nm``, ``ring_width_nm``.
    """
    if not (fwhm_nm > 0 and tail_weight >= 0 and ring_weight >= -MAX_DARK_RING
            and tail_weight + abs(ring_weight) < 0.5):
        raise ValueError(f"invalid PSF: fwhm={fwhm_nm}, tail={tail_weight}, ring={ring_weight}")
    spec = {"fwhm_nm": float(fwhm_nm), "sigma_nm": contract.fwhm_to_sigma(fwhm_nm),
            "tail_weight": float(tail_weight), "tail_scale": float(tail_scale),
            "ring_weight": float(ring_weight),
            "ring_radius_nm": RING_RADIUS_PER_FWHM * fwhm_nm,
            "ring_width_nm": RING_WIDTH_PER_FWHM * fwhm_nm}
    if tail_weight == 0 and ring_weight == 0:
        return spec  # pure Gaussian: sigma is exact

    def half_max_gap(sigma: float) -> float:
        trial = {**spec, "sigma_nm": sigma}
        return float(psf_profile(fwhm_nm / 2, trial) - psf_profile(0.0, trial) / 2)

    s0 = spec["sigma_nm"]
    spec["sigma_nm"] = float(scipy.optimize.brentq(half_max_gap, 0.3 * s0, 1.5 * s0, xtol=1e-6))
    return spec


def measured_fwhm_nm(spec: dict) -> float:
    """FWHM of a PSF spec's radial profile, found numerically (for tests and reports)."""
    peak = psf_profile(0.0, spec)
    hi = 3.0 * spec["fwhm_nm"]
    r_half = scipy.optimize.brentq(lambda r: float(psf_profile(r, spec) - peak / 2), 0.0, hi)
    return 2.0 * r_half


def _freq_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles per fine pixel) of the rfft2 grid of a real image of ``shape``."""
    ky = scipy.fft.fftfreq(shape[0])[:, None]
    kx = scipy.fft.rfftfreq(shape[1])[None, :]
    return ky, kx


def otf(shape: tuple[int, int], spec: dict, pixel_nm: float = contract.FINE_PIXEL_NM) -> np.ndarray:
    """Analytic OTF of a PSF spec on the ``rfft2`` grid of an image of ``shape``.

    Returns
    -------
    numpy.ndarray
        Real array of shape ``(shape[0], shape[1] // 2 + 1)``, 1 at zero frequency.
    """
    ky, kx = _freq_grid(shape)
    k = np.hypot(ky, kx) / pixel_nm  # cycles per nm
    s = spec["sigma_nm"]
    a, b = spec["tail_weight"], spec["ring_weight"]
    gauss = lambda sig: np.exp(-2.0 * (math.pi * sig * k) ** 2)  # noqa: E731
    out = (1.0 - a - b) * gauss(s)
    if a:
        out = out + a * gauss(spec["tail_scale"] * s)
    if b:
        ring = scipy.special.j0(2.0 * math.pi * spec["ring_radius_nm"] * k)
        out = out + b * ring * gauss(spec["ring_width_nm"])
    return out


def shift_phase(shape: tuple[int, int], dy: float, dx: float) -> np.ndarray:
    """Fourier phase ramp that moves image content by (+dy, +dx) fine pixels (periodic)."""
    ky, kx = _freq_grid(shape)
    return np.exp(-2j * math.pi * (ky * dy + kx * dx))


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """2x2 matrix acting on (dy, dx): ``[[cos, -sin], [sin, cos]]`` (clockwise on screen, y down)."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s], [s, c]])


def rotate_about_centre(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """Move the content at offset p from the image centre to ``rotation_matrix(angle) @ p``.

    Linear interpolation: used on the fine grid (21.25 nm), where its ~1 px smoothing is far
    below any PSF. Beyond the border the nearest pixel is repeated (it falls in the margin).
    """
    rot = rotation_matrix(angle_deg)
    centre = (np.array(image.shape, dtype=float) - 1.0) / 2.0  # index coords of the centre
    inverse = rot.T  # output o takes input centre + R^-1 (o - centre)
    return scipy.ndimage.affine_transform(image, inverse, offset=centre - inverse @ centre,
                                          order=1, mode="nearest")


def box_sum(image: np.ndarray, factor: int) -> np.ndarray:
    """Integrate ``factor`` x ``factor`` blocks: out (i, j) = sum of rows/cols f*i..f*i+f-1."""
    h, w = image.shape
    if h % factor or w % factor:
        raise ValueError(f"image shape {image.shape} is not a multiple of {factor}")
    return image.reshape(h // factor, factor, w // factor, factor).sum(axis=(1, 3))


def haze_field(obj: np.ndarray, sigma_nm: float, pixel_nm: float = contract.FINE_PIXEL_NM,
               coarse: int = 8) -> np.ndarray:
    """The object blurred by a wide Gaussian (out-of-focus haze), mass-preserving.

    Computed on a ``coarse``-times coarser grid with reflecting borders (a 1.5-4 um blur is far
    smoother than that grid, and reflecting avoids the wrap-around a periodic FFT would give),
    then brought back to the fine grid with linear interpolation.
    """
    h, w = obj.shape
    padded = np.pad(obj, ((0, -h % coarse), (0, -w % coarse)), mode="reflect")
    small = box_sum(padded, coarse)
    small = scipy.ndimage.gaussian_filter(small, sigma_nm / (pixel_nm * coarse), mode="reflect")
    big = scipy.ndimage.zoom(small, coarse, order=1, grid_mode=True, mode="nearest")
    return big[:h, :w] / coarse**2


# --------------------------------------------------------------------------------------- noise
def scmos_noise(photons: np.ndarray, *, qe: float, read_noise_e: float, gain: float,
                offset: float, rng: np.random.Generator) -> np.ndarray:
    """One sCMOS exposure: Poisson(QE x photons) + Normal(0, read noise), to ADU, uint16.

    Parameters
    ----------
    photons : numpy.ndarray
        Expected photons per pixel at the camera (signal + background), >= 0.
    qe, read_noise_e, gain, offset : float
        Quantum efficiency, read noise (e- rms), conversion gain (ADU/e-) and offset (ADU).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        uint16 ADU, rounded and clipped to 0..65535.
    """
    electrons = rng.poisson(qe * np.maximum(photons, 0.0)).astype(np.float64)
    electrons += rng.normal(0.0, read_noise_e, size=electrons.shape)
    adu = np.rint(electrons * gain + offset)
    return np.clip(adu, 0, UINT16_MAX).astype(np.uint16)


def scmos_expected_adu(photons: np.ndarray, *, qe: float, gain: float, offset: float) -> np.ndarray:
    """Noise-free sCMOS image: the expectation of :func:`scmos_noise` (before clipping), float32."""
    return (qe * gain * np.asarray(photons, dtype=np.float64) + offset).astype(np.float32)


def emccd_noise(photons: np.ndarray, *, qe: float, em_gain: float, read_noise_e: float,
                gain: float, offset: float, rng: np.random.Generator) -> np.ndarray:
    """One EMCCD exposure: Poisson photo-electrons, Gamma-distributed electron multiplication.

    The multiplication register's output for n input electrons is Gamma(n, em_gain), whose
    variance doubles the shot noise (excess noise factor 2); then read noise (e- rms, after
    multiplication), conversion ``gain`` (ADU/e-) and ``offset``. A noise regime no sCMOS has:
    used by ``bench/robustness_heldout.py``, never by the training draws.

    Returns
    -------
    numpy.ndarray
        uint16 ADU, rounded and clipped to 0..65535.
    """
    n = rng.poisson(qe * np.maximum(photons, 0.0))
    electrons = rng.gamma(np.maximum(n, 1), em_gain) * (n > 0)
    electrons += rng.normal(0.0, read_noise_e, size=electrons.shape)
    adu = np.rint(electrons * gain + offset)
    return np.clip(adu, 0, UINT16_MAX).astype(np.uint16)


def photon_counting_noise(photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon-counting detector: Poisson counts, uint16 (clipped at 65535)."""
    return np.clip(rng.poisson(np.maximum(photons, 0.0)), 0, UINT16_MAX).astype(np.uint16)


# ------------------------------------------------------------------------------ image formation
def blur_and_bin(obj: np.ndarray, lr_psf: dict, hr_psf: dict, shift_lr_px: tuple[float, float],
                 haze_sigma_nm: float, margin: int, rotation_deg: float = 0.0) -> dict:
    """Image one fine-grid object through both modalities, integrated onto the LR and HR grids.

    The object spectrum is computed once; each modality multiplies it by its OTF, the LR one
    also by a phase ramp that moves its content by ``shift_lr_px`` (LR pixels, (dy, dx)) relative
    to the HR image. The haze field (object blurred by ``haze_sigma_nm``) gets the same shift on
    LR. After cropping ``margin`` fine pixels per side (the margin absorbs periodic wrap-around of
    the PSF tails and the shift), fine pixels are box-summed 2x2 (HR) and 4x4 (LR). So with equal
    PSFs and zero shift, ``lr_focus == box_sum(hr_focus, 2)`` exactly (float rounding aside).

    With ``rotation_deg`` the LR image also sees the object rotated about the field centre c:
    content at HR position p appears on LR at ``c + R (p - c) + shift`` (R =
    :func:`rotation_matrix`), in focus and haze alike. The (radially symmetric) PSFs commute
    with the rotation, so rotating the object once is the same as rotating the LR image.

    Parameters
    ----------
    obj : numpy.ndarray
        Fine-grid object, shape (n + 2 margin, m + 2 margin) with n, m multiples of 4.
    lr_psf, hr_psf : dict
        PSF specs (:func:`psf_spec`).
    shift_lr_px : tuple of float
        Misregistration of the LR image relative to the HR one, LR pixels: LR content appears at
        ``+shift`` relative to where the HR image has it.
    haze_sigma_nm : float
        Out-of-focus haze blur (Gaussian sigma, nm).
    margin : int
        Fine pixels cropped from each side after blurring.
    rotation_deg : float
        Rotation of the LR image relative to the HR one, degrees (0: the contract's pairs; the
        margin must absorb it: a degree turns a 1152 px grid's corner by ~14 fine px).

    Returns
    -------
    dict
        ``lr_focus``, ``lr_haze`` (n/4, m/4) and ``hr_focus``, ``hr_haze`` (n/2, m/2), float64, in
        object units per pixel (mass-preserving: the haze has the object's total mass).
    """
    per_lr = contract.LR_PIXEL_NM / contract.FINE_PIXEL_NM
    shape = obj.shape
    crop = (slice(margin, shape[0] - margin), slice(margin, shape[1] - margin))
    phase = shift_phase(shape, shift_lr_px[0] * per_lr, shift_lr_px[1] * per_lr)
    spectrum = scipy.fft.rfft2(obj)
    back = lambda spec: scipy.fft.irfft2(spec, s=shape)[crop]  # noqa: E731
    hr_focus = back(spectrum * otf(shape, hr_psf))
    haze = haze_field(obj, haze_sigma_nm)
    hr_haze = haze[crop]
    if rotation_deg:  # the LR path images the rotated object (focus and haze)
        obj = rotate_about_centre(obj, rotation_deg)
        spectrum, haze = scipy.fft.rfft2(obj), haze_field(obj, haze_sigma_nm)
    lr_focus = back(spectrum * (otf(shape, lr_psf) * phase))
    lr_haze = back(scipy.fft.rfft2(haze) * phase)
    lr_f, hr_f = round(per_lr), round(contract.HR_PIXEL_NM / contract.FINE_PIXEL_NM)
    return {"lr_focus": box_sum(lr_focus, lr_f), "lr_haze": box_sum(lr_haze, lr_f),
            "hr_focus": box_sum(hr_focus, hr_f), "hr_haze": box_sum(hr_haze, hr_f)}


# ------------------------------------------------------------ HR grid -> LR grid (consistency)
BINNINGS = ("mean", "sum")


def bin_to_lr(image_hr: np.ndarray, *, binning: str = "mean") -> np.ndarray:
    """Bin an HR-grid image 2x2 onto the LR grid (LR pixel (i, j) covers HR pixels (2i..2i+1, 2j..2j+1))."""
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
    image_hr = np.asarray(image_hr, dtype=np.float64)
    height, width = image_hr.shape[0] // contract.SCALE, image_hr.shape[1] // contract.SCALE
    blocks = image_hr[: contract.SCALE * height, : contract.SCALE * width].reshape(height, contract.SCALE, width, contract.SCALE)
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
    blurred = scipy.ndimage.gaussian_filter(sr, sigma_nm / contract.HR_PIXEL_NM, mode="reflect")
    return bin_to_lr(blurred, binning=binning)
