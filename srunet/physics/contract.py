"""The acquisition contract (docs/acquisition.md) as numbers, in one place.

The simulator draws from these ranges, the model card quotes them, and the physics-consistency
check uses the PSF widths. Lengths in nanometres unless the name says otherwise.
"""

from __future__ import annotations

import math

LR_PIXEL_NM = 85.0  # spinning-disk confocal (input) pixel size
HR_PIXEL_NM = 42.5  # ISM (target) pixel size: exactly half
SCALE = 2  # LR / HR pixel size; srunet.geometry maps LR pixel (i, j) onto HR pixels (2i..2i+1, 2j..2j+1)
FINE_PIXEL_NM = 21.25  # rendering grid: HR / 2, LR / 4

# Lateral PSF FWHM (nm) per optical setting: (confocal, ISM)
PSF_FWHM_NM = {
    "488/520 NA1.4 oil": (192.0, 139.0),
    "561/600 NA1.4 oil": (212.0, 160.0),
    "488/520 NA1.2 water": (214.0, 161.0),
}
DEFAULT_SETTING = "488/520 NA1.4 oil"
FWHM_JITTER = 0.15  # +-15 % per image
PINHOLE_AU = (0.8, 2.0)
REASSIGNMENT = (0.45, 0.5)
ISM_RESOLUTION_LIMIT_NM = 139.0  # finer claimed detail than this is invented

REGISTRATION_SHIFT_LR_PX = (0.1, 0.3)  # sub-pixel misregistration between LR and HR

# LR sCMOS camera
QE = (0.7, 0.95)
READ_NOISE_E = (0.7, 1.6)
OFFSET_ADU = 100.0
LR_PEAK_E = (30.0, 3000.0)  # log-uniform
# HR photon-counting array detector
HR_PEAK_PHOTONS = (300.0, 1500.0)

HAZE_FRACTION = (0.05, 0.30)
HAZE_SIGMA_UM = (1.5, 4.0)
AUTOFLUORESCENCE = 0.02
HR_HAZE_FACTOR = 1.0 / 3.0

HR_FIELD_PX = (256, 512)  # ISM field of view, 11-22 um


def fwhm_to_sigma(fwhm: float) -> float:
    """Gaussian standard deviation for a full width at half maximum (same unit)."""
    return fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def psf_difference_sigma_nm(setting: str = DEFAULT_SETTING) -> float:
    """Sigma (nm) of the Gaussian that blurs an ISM image into a confocal one (Gaussian PSFs)."""
    confocal, ism = PSF_FWHM_NM[setting]
    return math.sqrt(fwhm_to_sigma(confocal) ** 2 - fwhm_to_sigma(ism) ** 2)


# --- Simulator (srunet/simulation/simulator.py, optics.py); from the optics table of docs/acquisition.md ---
DEFAULT_PINHOLE_AU = 1.1  # the table's confocal FWHMs are quoted for a ~1.1 AU pinhole
DEFAULT_REASSIGNMENT = 0.47  # the table's ISM FWHMs are quoted for reassignment ~0.47
ISM_DETECTOR_AU = 1.25  # ISM detector diameter
# sCMOS conversion gain (ADU per electron): not in docs/acquisition.md; camera-typical range
LR_GAIN_ADU_PER_E = (0.5, 2.5)


# --- Wide domain (training v3, #17): per-pair ranges BEYOND the contract's nominal values ---
# `srunet simulate --domain wide` draws every pair's instrument from these ranges (domain
# randomisation), so a model trained on it covers the instruments users bring. Each range and
# why: docs/acquisition.md, "Wide domain (training v3)". The contract domain above is unchanged.
# (lo, hi) pairs are drawn uniformly unless listed in WIDE_LOG_UNIFORM. Lengths in nm.
WIDE = {
    # lambda_em / NA relative to the default setting (520 nm, NA 1.4): 405-450 nm dyes at NA 1.45
    # (~0.83) up to far-red 680 nm emission at NA 1.2 water (~1.42); scales both PSFs.
    "wavelength_scale": (0.82, 1.45),
    "pinhole_au": (0.5, 2.0),  # confocal pinhole, Airy units (contract 0.8-2)
    "fwhm_jitter": 0.10,  # +-10 % per modality on top: aberrations, index mismatch, focus
    "lr_fwhm_nm": (150.0, 330.0),  # confocal FWHM bounds the draw is held inside
    "hr_fwhm_nm": (90.0, 230.0),  # ISM FWHM bounds (90 nm ~ 2 HR px: finer would alias)
    "max_hr_over_lr_fwhm": 0.9,  # the target stays sharper than the input (as the contract)
    "lr_tail_weight": (0.0, 0.15),  # wide-scatter tail of the confocal PSF (half of the images)
    "lr_ring_weight": (0.0, 0.04),  # Airy-like side lobe of the confocal PSF
    "psf_tail_scale": (2.0, 3.5),  # tail width / main width, both modalities
    "non_gaussian_probability": 0.5,  # share of confocal PSFs with a tail and/or side lobe
    # ISM detector: Airyscan-like arrays of 0.8-1.8 AU (Airyscan 1.25 AU, "Fast" modes larger)
    "ism_detector_au": (0.8, 1.8),
    "reassignment": (0.35, 0.6),  # reassignment factor set by the instrument (optimum ~0.47)
    # ISM reconstruction: plain pixel reassignment (wide tail), Fourier reweighting (narrower,
    # small side lobes), deconvolution (narrowest, ringing = a signed ring)
    "ism_reconstruction": {"reassignment": 0.4, "reweighted": 0.3, "deconvolved": 0.3},
    "reassignment_tail_weight": (0.05, 0.25),
    "reweighted_fwhm_factor": (0.88, 0.97),
    "reweighted_tail_weight": (0.0, 0.08),
    "reweighted_ring_weight": (0.0, 0.04),
    "deconvolved_fwhm_factor": (0.75, 0.9),
    "deconvolved_tail_weight": (0.0, 0.05),
    "deconvolved_ring_weight": (-0.10, 0.06),  # negative: dark ring (ringing); positive: side lobe
    # registration of the LR image against the HR one: shift magnitude and rotation (degrees)
    "shift_lr_px": (0.0, 0.5),
    "rotation_deg": (-1.0, 1.0),
    # LR camera (sCMOS and CCD-like), HR detector
    "qe": (0.5, 0.95),
    "read_noise_e": (0.5, 3.0),
    "gain_adu_per_e": (0.2, 5.0),
    "offset_adu": (0.0, 400.0),
    "lr_peak_e": (15.0, 5000.0),
    "hr_peak_photons": (100.0, 3000.0),
    # background
    "haze_fraction": (0.0, 0.6),
    "haze_sigma_um": (1.0, 6.0),
    "autofluorescence": (0.0, 0.08),
    "hr_haze_factor": (0.15, 0.6),
    # structure families (srunet/simulation/structures.py) and an optional second layer
    "families": {"kidney": 0.4, "cytoskeleton": 0.2, "vesicles": 0.15, "texture": 0.25},
    "overlay_probability": 0.3,
    "overlay_weight": (0.05, 0.5),
}
WIDE_LOG_UNIFORM = ("gain_adu_per_e", "lr_peak_e", "hr_peak_photons")
DOMAINS = ("contract", "wide")
# Seeds: training sets use seeds < TRAINING_SEED_LIMIT; held-out sets use seeds at or above it
# (own held-out 900000-900023, robustness set bench/robustness_heldout.py from 950000).
TRAINING_SEED_LIMIT = 900000
