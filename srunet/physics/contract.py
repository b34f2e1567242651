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
