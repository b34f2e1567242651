"""A robustness held-out set: instruments OUTSIDE the wide training domain, foreign structures.

Training never draws from it (#17 deliverable 4): every instrument below lies outside
``contract.WIDE`` (the wide domain, docs/acquisition.md "Wide domain (training v3)") in at least
one quantity, checked when the set is written (:func:`outside_wide`), and the specimens are the
foreign held-out set's real images (``bench/foreign_heldout.py``: cell, stained tissue, retina,
deep-field sky), which the training textures exclude. Seeds start at ``SEED`` (950000): training
sets use seeds below ``contract.TRAINING_SEED_LIMIT`` (900000), the own held-out set 900000-23.

Instruments (pairs cycle through them, specimens cycle within each):

* ``sharp``: 405 nm excitation at NA 1.49 with a 0.3 AU pinhole, confocal 130 nm, and a
  deconvolved ISM of 80 nm with strong ringing (both PSFs and the pinhole below the ranges);
* ``blurry``: far-red through a water-dipping NA 1.0 objective, 3 AU pinhole, confocal 380 nm,
  plain-reassignment ISM 260 nm with a 35 % tail (above the ranges);
* ``emccd``: an EMCCD input camera (excess noise factor 2, EM gain 200, offset 1000 ADU,
  8 e- peak) and a photon-starved ISM target (40 photons peak); contract optics;
* ``misregistered``: 0.8 LR px shift and a 2 degree rotation between the two, 80 % haze of
  8 um; contract optics and cameras.
* ``finetune_microscope`` (not in the default set: its PSFs are INSIDE the wide ranges; only
  its nominal reassignment factor 1.0 is not, and that number does not shape its PSF here): the
  out-of-contract microscope of ``bench/finetune.py`` (0.5 AU confocal 169 nm, plain
  reassignment 150 nm + 20 % tail), for comparison with that bench.

    python bench/robustness_heldout.py runs/robust --pairs 24
    srunet evaluate --model rdf.yaml --lr runs/robust/lr --hr runs/robust/hr \\
        --lr-repeat runs/robust/lr_repeat --hr-repeat runs/robust/hr_repeat --out runs/robust_report

Writes ``OUT/lr``, ``OUT/hr``, ``OUT/lr_repeat``, ``OUT/hr_repeat`` (a second, independent
noise realisation, for two-image FRC) and ``OUT/robustness.json`` (instrument, specimen, seed,
parameters and the wide ranges each pair is outside of), atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from srunet.files import check_output_dir, swap_into_place
from srunet.physics import contract, optics
from srunet.simulation.simulator import add_hr_noise, add_lr_noise, simulate_pair
from srunet.tiff import write_ome_tiff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foreign_heldout import _specimens, object_from  # noqa: E402  (the foreign set's specimens)

SEED = 950000
W = contract.WIDE
NOMINAL_LR, NOMINAL_HR = contract.PSF_FWHM_NM[contract.DEFAULT_SETTING]


def _shift(dy: float, dx: float) -> dict:
    return {"shift_lr_px": [dy, dx], "shift_magnitude_lr_px": math.hypot(dy, dx)}


# The contract's nominal optics (a Gaussian ISM spot: inside the wide "reweighted" shapes), so
# that the noise and registration instruments are outside the wide domain in nothing else.
CONTRACT_OPTICS = {"lr_psf": optics.psf_spec(NOMINAL_LR), "hr_psf": optics.psf_spec(NOMINAL_HR),
                   "pinhole_au": contract.DEFAULT_PINHOLE_AU, "wavelength_scale": 1.0,
                   "reassignment": contract.DEFAULT_REASSIGNMENT,
                   "ism_detector_au": contract.ISM_DETECTOR_AU, "ism_reconstruction": "reweighted"}
INSTRUMENTS = {
    "sharp": {"pinhole_au": 0.3, "wavelength_scale": 0.72, "ism_reconstruction": "deconvolved",
              "lr_psf": optics.psf_spec(130.0),
              "hr_psf": optics.psf_spec(80.0, tail_weight=0.02, ring_weight=-0.15)},
    "blurry": {"pinhole_au": 3.0, "wavelength_scale": 1.75, "ism_reconstruction": "reassignment",
               "lr_psf": optics.psf_spec(380.0, tail_weight=0.1, tail_scale=3.0),
               "hr_psf": optics.psf_spec(260.0, tail_weight=0.35, tail_scale=3.0)},
    "emccd": {**CONTRACT_OPTICS,
              "qe": 0.92, "read_noise_e": 40.0, "gain_adu_per_e": 0.02, "offset_adu": 1000.0,
              "lr_peak_e": 8.0, "hr_peak_photons": 40.0, "em_gain": 200.0},
    "misregistered": {**CONTRACT_OPTICS, **_shift(0.6, -0.53), "rotation_deg": 2.0,
                      "haze_fraction": 0.8, "haze_sigma_um": 8.0},
    "finetune_microscope": {"pinhole_au": 0.5, "reassignment": 1.0, "wavelength_scale": 1.0,
                            "ism_reconstruction": "reassignment",
                            "lr_psf": optics.psf_spec(NOMINAL_LR * optics.confocal_fwhm_factor(0.5)),
                            "hr_psf": optics.psf_spec(150.0, tail_weight=0.2, tail_scale=2.5),
                            **_shift(0.15, -0.1), "qe": 0.8, "read_noise_e": 1.2,
                            "gain_adu_per_e": 1.0, "lr_peak_e": 300.0, "hr_peak_photons": 600.0,
                            "haze_fraction": 0.15, "haze_sigma_um": 2.5},
}
DEFAULT_INSTRUMENTS = ("sharp", "blurry", "emccd", "misregistered")


def outside_wide(params: dict) -> list[str]:
    """The wide-domain quantities (``contract.WIDE`` keys) a pair's parameters lie outside of."""
    out = [key for key in ("pinhole_au", "wavelength_scale", "reassignment", "rotation_deg", "qe",
                           "read_noise_e", "gain_adu_per_e", "offset_adu", "lr_peak_e",
                           "hr_peak_photons", "haze_fraction", "haze_sigma_um")
           if not W[key][0] <= params[key] <= W[key][1]]
    if not W["shift_lr_px"][0] <= params["shift_magnitude_lr_px"] <= W["shift_lr_px"][1]:
        out.append("shift_lr_px")
    if not W["lr_fwhm_nm"][0] <= params["lr_psf"]["fwhm_nm"] <= W["lr_fwhm_nm"][1]:
        out.append("lr_fwhm_nm")
    if not W["hr_fwhm_nm"][0] <= params["hr_psf"]["fwhm_nm"] <= W["hr_fwhm_nm"][1]:
        out.append("hr_fwhm_nm")
    hr = params["hr_psf"]
    recon = params["ism_reconstruction"]
    tails = W["reassignment_tail_weight"] if recon == "reassignment" else W[f"{recon}_tail_weight"]
    rings = (0.0, 0.0) if recon == "reassignment" else W[f"{recon}_ring_weight"]
    if not tails[0] <= hr["tail_weight"] <= tails[1]:
        out.append(f"{recon}_tail_weight")
    if not rings[0] <= hr["ring_weight"] <= rings[1]:
        out.append(f"{recon}_ring_weight")
    if "em_gain" in params:
        out.append("camera: EMCCD (excess noise), not sCMOS")
    return out


def simulate(seed: int, instrument: str, image: np.ndarray, hr_size: int) -> dict:
    """Two noise realisations of one foreign specimen through one instrument."""
    overrides = {k: v for k, v in INSTRUMENTS[instrument].items() if k != "em_gain"}
    pair = simulate_pair(seed, hr_size=hr_size, noise=False, domain="wide",
                         obj=object_from(image), overrides=overrides)
    params = {**pair["params"], **({"em_gain": INSTRUMENTS[instrument]["em_gain"]}
                                   if "em_gain" in INSTRUMENTS[instrument] else {})}
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))  # noise stream of this set
    out = {"params": params, "lr": [], "hr": []}
    for _ in range(2):
        if "em_gain" in params:
            photons = (pair["lr_clean"].astype(np.float64) - params["offset_adu"]) / (
                params["qe"] * params["gain_adu_per_e"])
            out["lr"].append(optics.emccd_noise(
                photons, qe=params["qe"], em_gain=params["em_gain"],
                read_noise_e=params["read_noise_e"], gain=params["gain_adu_per_e"],
                offset=params["offset_adu"], rng=rng))
        else:
            out["lr"].append(add_lr_noise(pair["lr_clean"], params, rng))
        out["hr"].append(add_hr_noise(pair["hr_clean"], params, rng))
    return out


def write_set(out: Path, pairs: int, hr_size: int, instruments: tuple[str, ...],
              overwrite: bool = False) -> Path:
    """Write the set to ``out`` atomically; returns the path of ``robustness.json``."""
    check_output_dir(out, overwrite=overwrite, what="robustness set folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for kind in ("lr", "hr", "lr_repeat", "hr_repeat"):
            (tmp / kind).mkdir()
        specimens = _specimens()
        names = sorted(specimens)
        entries = []
        for k in range(pairs):
            instrument = instruments[k % len(instruments)]
            # a Latin square: each instrument meets every specimen, all specimens come early
            specimen = names[(k % len(instruments) + k // len(instruments)) % len(names)]
            seed = SEED + k
            result = simulate(seed, instrument, specimens[specimen], hr_size)
            outside = outside_wide(result["params"])
            if not outside and instrument != "finetune_microscope":
                raise AssertionError(f"instrument {instrument} lies inside the wide domain")
            name = f"{instrument}_{specimen}{k:03d}"
            for kind, index in (("lr", 0), ("hr", 0), ("lr_repeat", 1), ("hr_repeat", 1)):
                pixel = contract.LR_PIXEL_NM if kind.startswith("lr") else contract.HR_PIXEL_NM
                write_ome_tiff(tmp / kind / f"{name}.tif", result[kind.split("_")[0]][index],
                               pixel / 1000.0)
            entries.append({"name": name, "instrument": instrument, "specimen": specimen,
                            "seed": seed, "outside_wide": outside, "params": result["params"]})
            print(f"{name}: outside the wide domain in {', '.join(outside) or 'nothing'}")
        (tmp / "robustness.json").write_text(json.dumps(
            {"seed": SEED, "hr_size": hr_size, "instruments": list(instruments),
             "pairs": entries}, indent=1))
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "robustness.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--hr-size", type=int, default=384)
    parser.add_argument("--instruments", nargs="+", choices=sorted(INSTRUMENTS),
                        default=list(DEFAULT_INSTRUMENTS))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs must be >= 1, got {args.pairs}")
    path = write_set(args.out, args.pairs, args.hr_size, tuple(args.instruments), args.overwrite)
    print(f"wrote {args.pairs} pairs; {path}")


if __name__ == "__main__":
    main()
