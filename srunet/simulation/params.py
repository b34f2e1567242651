"""The typed record of one simulated pair's parameters: what ``simulator.sample_params`` draws,
``overrides`` may replace, and ``manifest.json`` records per pair.

The record stays a plain JSON-safe dict at run time (the manifest, the tests and the benches
read it by key); :class:`PairParams` says which keys exist, what type each has and what it
means, and :func:`check_params` holds a dict to it (unknown keys, wrong types), naming the key,
the value and where it came from. Lengths in nm unless the name says ``_um`` or ``_px``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import Annotated, TypedDict


def _about(text: str):
    return Field(description=text)


class PsfSpec(TypedDict, total=False):
    """A PSF as ``srunet.physics.optics.psf_spec`` describes it (main Gaussian, optional wide
    tail and Airy-like ring, normalised to unit integral)."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    fwhm_nm: Annotated[float, _about("FWHM of the whole PSF (the number the contract quotes)")]
    sigma_nm: Annotated[float, _about("sigma of the main Gaussian, solved for that FWHM")]
    tail_weight: Annotated[float, _about("share of the wide Gaussian tail (scatter, aberrations)")]
    tail_scale: Annotated[float, _about("tail width / main width")]
    ring_weight: Annotated[float, _about("side-lobe weight; negative: a dark ring (ringing)")]
    ring_radius_nm: Annotated[float, _about("radius of the ring")]
    ring_width_nm: Annotated[float, _about("radial width of the ring")]


class PairParams(TypedDict, total=False):
    """Every drawn parameter of one pair (``domain`` and the keys after it: wide domain only)."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    hr_size: Annotated[int, _about("ISM field, HR px (even)")]
    lr_size: Annotated[int, _about("confocal field, LR px (hr_size / 2)")]
    hr_pixel_nm: Annotated[float, _about("ISM pixel size")]
    lr_pixel_nm: Annotated[float, _about("confocal pixel size")]
    setting: Annotated[str, _about("optical setting of contract.PSF_FWHM_NM (excitation/"
                                   "emission, NA, immersion)")]
    pinhole_au: Annotated[float, _about("confocal pinhole diameter, Airy units")]
    reassignment: Annotated[float, _about("ISM pixel-reassignment factor")]
    lr_psf: Annotated[PsfSpec, _about("confocal PSF")]
    hr_psf: Annotated[PsfSpec, _about("ISM PSF")]
    shift_lr_px: Annotated[list[float], _about("(dy, dx) of the LR content against the HR "
                                               "image, LR px")]
    shift_magnitude_lr_px: Annotated[float, _about("length of that shift, LR px")]
    qe: Annotated[float, _about("LR camera quantum efficiency")]
    read_noise_e: Annotated[float, _about("LR camera read noise, electrons RMS")]
    gain_adu_per_e: Annotated[float, _about("LR camera conversion gain, ADU per electron")]
    offset_adu: Annotated[float, _about("LR camera offset, ADU")]
    lr_peak_e: Annotated[float, _about("LR in-focus peak signal, electrons")]
    hr_peak_photons: Annotated[float, _about("ISM in-focus peak, photons")]
    haze_fraction: Annotated[float, _about("out-of-focus haze relative to the in-focus signal")]
    haze_sigma_um: Annotated[float, _about("Gaussian blur of the haze, um")]
    autofluorescence: Annotated[float, _about("flat background, share of the in-focus peak")]
    hr_haze_factor: Annotated[float, _about("share of haze and background the ISM image keeps")]
    content: Annotated[dict[str, Any], _about("what the specimen generator drew (family, "
                                              "structures, their seeds and counts)")]
    domain: Annotated[Literal["wide"], _about("the wide domain's marker (contract pairs omit it)")]
    wavelength_scale: Annotated[float, _about("lambda/NA relative to 520 nm at NA 1.4")]
    ism_detector_au: Annotated[float, _about("ISM detector diameter, Airy units")]
    ism_reconstruction: Annotated[Literal["reassignment", "reweighted", "deconvolved"],
                                  _about("how the ISM image was reconstructed")]
    rotation_deg: Annotated[float, _about("rotation of the LR image against the HR one")]


_ADAPTER = TypeAdapter(PairParams)


def check_params(params: dict, source: str = "simulator parameters") -> dict:
    """Raise ValueError naming ``source``, the key and the value when ``params`` is not a
    :class:`PairParams` (unknown key, wrong type); return ``params`` itself, unchanged."""
    try:
        _ADAPTER.validate_python(params, strict=False)
    except ValidationError as error:
        lines = [f"{source} do not fit srunet.simulation.params.PairParams:"]
        for err in error.errors():
            where = ".".join(str(part) for part in err["loc"])
            lines.append(f"  {where}: {err['msg']} (given: {err.get('input')!r})")
        lines.append(f"  known keys: {sorted(PairParams.__annotations__)}")
        raise ValueError("\n".join(lines)) from None
    return params
