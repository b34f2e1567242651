"""The wide domain's per-pair draw (domain randomisation, #17): instruments beyond the contract.

:func:`sample_wide_params` returns the same keys as the contract's
:func:`srunet.simulation.simulator.sample_params` (so the forward model, the exposure and the
noise functions are shared), plus what only the wide domain varies: ``domain``,
``wavelength_scale``, ``ism_detector_au``, ``ism_reconstruction``, ``rotation_deg``. Every
range is a named entry of ``contract.WIDE``; docs/acquisition.md ("Wide domain (training v3)")
says why each is as wide as it is. Drawing touches no image, so it is cheap to check.
"""

from __future__ import annotations

import math

import numpy as np

from srunet.physics import contract, optics
from srunet.simulation import structures

W = contract.WIDE


def draw(rng: np.random.Generator, key: str) -> float:
    """One value from ``contract.WIDE[key]``: log-uniform if listed in WIDE_LOG_UNIFORM."""
    lo, hi = W[key]
    if key in contract.WIDE_LOG_UNIFORM:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def _choice(rng, table: dict) -> str:
    return str(rng.choice(list(table), p=list(table.values())))


def _ism_psf(rng, recon: str, fwhm: float) -> dict:
    """The ISM PSF shape of a reconstruction: plain reassignment keeps a wide tail (the outer
    detector elements' light, not reweighted); reweighting and deconvolution narrow the core
    and add side lobes, deconvolution also ringing (a dark ring)."""
    tail_scale = draw(rng, "psf_tail_scale")
    if recon == "reassignment":
        return optics.psf_spec(fwhm, tail_weight=draw(rng, "reassignment_tail_weight"),
                               tail_scale=tail_scale)
    return optics.psf_spec(fwhm, tail_weight=draw(rng, f"{recon}_tail_weight"),
                           tail_scale=tail_scale, ring_weight=draw(rng, f"{recon}_ring_weight"))


def sample_wide_params(rng: np.random.Generator, hr_size: int) -> dict:
    """Draw one pair's instrument, registration, noise, background and content (wide domain).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the pair's content stream).
    hr_size : int
        HR field size, already drawn or checked by the caller.

    Returns
    -------
    dict
        JSON-serialisable parameters; lengths in nm unless named ``_um``/``_px``/``_au``/``_deg``.
    """
    scale, pinhole = draw(rng, "wavelength_scale"), draw(rng, "pinhole_au")
    detector, reassignment = draw(rng, "ism_detector_au"), draw(rng, "reassignment")
    recon = _choice(rng, W["ism_reconstruction"])
    conf0, ism0 = (f * scale for f in contract.PSF_FWHM_NM[contract.DEFAULT_SETTING])
    j = W["fwhm_jitter"]
    lr_fwhm = float(np.clip(conf0 * optics.confocal_fwhm_factor(pinhole) * (1 + rng.uniform(-j, j)),
                            *W["lr_fwhm_nm"]))
    recon_factor = 1.0 if recon == "reassignment" else draw(rng, f"{recon}_fwhm_factor")
    ism_nominal = ism0 * optics.ism_fwhm_factor(reassignment, ism0, detector) * recon_factor
    hr_fwhm = float(np.clip(ism_nominal * (1 + rng.uniform(-j, j)), *W["hr_fwhm_nm"]))
    hr_fwhm = min(hr_fwhm, W["max_hr_over_lr_fwhm"] * lr_fwhm)  # the target stays sharper
    if rng.uniform() < W["non_gaussian_probability"]:
        lr_psf = optics.psf_spec(lr_fwhm, tail_weight=draw(rng, "lr_tail_weight"),
                                 tail_scale=draw(rng, "psf_tail_scale"),
                                 ring_weight=draw(rng, "lr_ring_weight"))
    else:
        lr_psf = optics.psf_spec(lr_fwhm)
    hr_psf = _ism_psf(rng, recon, hr_fwhm)
    magnitude, angle = draw(rng, "shift_lr_px"), rng.uniform(0, 2 * math.pi)
    rotation = draw(rng, "rotation_deg")
    params = {
        "domain": "wide", "hr_size": hr_size, "lr_size": hr_size // 2,
        "hr_pixel_nm": contract.HR_PIXEL_NM, "lr_pixel_nm": contract.LR_PIXEL_NM,
        "setting": "wide", "wavelength_scale": scale, "pinhole_au": pinhole,
        "reassignment": reassignment, "ism_detector_au": detector, "ism_reconstruction": recon,
        "lr_psf": lr_psf, "hr_psf": hr_psf,
        "shift_lr_px": [magnitude * math.sin(angle), magnitude * math.cos(angle)],
        "shift_magnitude_lr_px": magnitude, "rotation_deg": rotation,
    }
    for key in ("qe", "read_noise_e", "gain_adu_per_e", "offset_adu", "lr_peak_e",
                "hr_peak_photons", "haze_fraction", "haze_sigma_um", "autofluorescence",
                "hr_haze_factor"):
        params[key] = draw(rng, key)
    content = structures.family_content(rng, _choice(rng, W["families"]))
    if rng.uniform() < W["overlay_probability"]:  # a second structure family layered on top
        content["overlay"] = {"weight": draw(rng, "overlay_weight"),
                              "content": structures.family_content(rng, _choice(rng, W["families"]))}
    params["content"] = content
    return params
