"""Simulated (spinning-disk confocal LR, ISM HR) training pairs under docs/acquisition.md.

One pair: draw every parameter (:func:`sample_params`), render a kidney-like / generic object on
the fine grid (:mod:`.phantom`), image it through both PSFs with out-of-focus haze and a sub-pixel
LR/HR misregistration, box-sum onto the 85 nm and 42.5 nm grids (:mod:`.optics`), scale to the
drawn photon budgets and add detector noise. :func:`simulate_dataset` writes many pairs as
OME-TIFF plus ``manifest.json``.

Domains: ``domain="contract"`` (default) draws inside docs/acquisition.md's ranges, exactly as
simulator 1.0 did (same seed, same bytes); ``domain="wide"`` draws beyond them
(:mod:`.wide`, ranges in ``contract.WIDE``: wider PSFs, ISM reconstructions, LR/HR rotation,
camera and background, the structure families of :mod:`.structures`).

Units and conventions
---------------------
* ``lr``: sCMOS ADU, uint16, offset ``contract.OFFSET_ADU`` included. ``lr_clean`` is its
  expectation (float32 ADU, offset included): QE x gain x photons + offset.
* ``hr``: photon counts, uint16. ``hr_clean`` is its expectation (float32 photons).
* LR pixel (i, j) covers HR pixels (2i..2i+1, 2j..2j+1) (``srunet.geometry``), except for
  the drawn misregistration ``params["shift_lr_px"] = (dy, dx)``: LR content sits at +shift LR
  pixels relative to the HR image (so ``lr(y) ~ box2(hr)(y - dy)``).
* Seeds: pair ``k`` of a dataset with master seed ``s`` is ``simulate_pair(s + k)``; the seed's
  ``np.random.SeedSequence`` is split into a content stream and a noise stream, so the noise-free
  images do not depend on ``noise`` and each pair is independent of the worker count.

Independent noise realisations (for Fourier ring correlation)
-------------------------------------------------------------
``simulate_pair(seed, realisations=n)`` returns ``lr_repeats`` / ``hr_repeats``: lists of ``n``
independent noisy images of the same clean pair (``lr``/``hr`` are element 0; realisation ``i``
is the same whatever ``n``). For other uses, :func:`add_lr_noise` and :func:`add_hr_noise` turn
``lr_clean`` / ``hr_clean`` plus ``params`` into a fresh noisy image with any generator.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from srunet.files import check_output_dir, swap_into_place
from srunet.physics import contract
from srunet.tiff import write_ome_tiff
from srunet.physics import optics
from srunet.simulation.params import check_params
from srunet.simulation import phantom, structures, wide
from srunet.simulation.structures import SCENES, STAIN_PROBABILITY  # noqa: F401 (public names)

SIMULATOR_VERSION = "1.1"  # 1.1: the opt-in wide domain; the contract domain is unchanged
MARGIN_FINE_PX = 64  # fine px rendered around the field: absorbs PSF-tail wrap and the shift
DEFAULT_SETTING_PROBABILITY = 0.7  # "mostly the default" optical setting
NON_GAUSSIAN_PROBABILITY = 0.5  # share of images whose PSFs get a tail and/or side lobe
PEAK_PERCENTILE = 99.9  # "peak signal" = this percentile of the in-focus signal
EMPTY_FIELD_PEAK = 0.05  # lower bound of that peak, object units per LR pixel (see expose)


def _uniform(rng, bounds) -> float:
    return float(rng.uniform(*bounds))


def _psf_params(rng, fwhm: float, max_ring: float) -> dict:
    if rng.uniform() >= NON_GAUSSIAN_PROBABILITY:
        return optics.psf_spec(fwhm)
    return optics.psf_spec(fwhm, tail_weight=float(rng.uniform(0, 0.08)),
                           tail_scale=float(rng.uniform(2.0, 3.5)),
                           ring_weight=float(rng.uniform(0, max_ring)))


MIXED = "mixed"  # a dataset of both domains: even seeds contract, odd seeds wide
DATASET_DOMAINS = contract.DOMAINS + (MIXED,)  # what simulate_dataset (--domain) accepts


def _check_domain(domain, choices=contract.DOMAINS) -> str:
    if domain not in choices:
        raise ValueError(f"domain must be one of {list(choices)}, got {domain!r}: "
                         "'contract' draws inside docs/acquisition.md's ranges (the release's "
                         "training data), 'wide' beyond them (domain randomisation)"
                         + (", 'mixed' alternates the two" if MIXED in choices else ""))
    return domain


def pair_domain(domain: str, seed: int) -> str:
    """The domain pair ``seed`` of a dataset drawn in ``domain`` uses (``"mixed"``: by parity).

    A mixed dataset's pair ``s`` is byte-identical to pair ``s`` of the single-domain dataset
    it comes from, so pools can be compared pair by pair.
    """
    if domain != MIXED:
        return domain
    return "contract" if seed % 2 == 0 else "wide"


def sample_params(rng: np.random.Generator, hr_size: int | None = None,
                  domain: str = "contract") -> dict:
    """Draw every per-image parameter of one pair from the contract's (or the wide) ranges.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    hr_size : int, optional
        HR field size (even, >= 32). Default: drawn from ``contract.HR_FIELD_PX`` in steps of 16.
    domain : {"contract", "wide"}
        "contract": docs/acquisition.md's ranges (today's draw, unchanged); "wide":
        ``contract.WIDE`` (:func:`srunet.simulation.wide.sample_wide_params`).

    Returns
    -------
    dict
        JSON-serialisable parameters, a :class:`srunet.simulation.params.PairParams` (each key
        typed and described there; lengths in nm unless named ``_um``/``_px``).
    """
    if hr_size is None:
        lo, hi = contract.HR_FIELD_PX
        hr_size = int(rng.integers(lo // 16, hi // 16 + 1)) * 16
    elif int(hr_size) != hr_size or hr_size < 32 or hr_size % 2:
        raise ValueError(f"hr_size must be an even integer >= 32, got {hr_size!r}")
    if _check_domain(domain) == "wide":
        return wide.sample_wide_params(rng, int(hr_size))
    others = [s for s in contract.PSF_FWHM_NM if s != contract.DEFAULT_SETTING]
    setting = (contract.DEFAULT_SETTING if rng.uniform() < DEFAULT_SETTING_PROBABILITY
               else others[rng.integers(len(others))])
    conf0, ism0 = contract.PSF_FWHM_NM[setting]
    pinhole, reassignment = _uniform(rng, contract.PINHOLE_AU), _uniform(rng, contract.REASSIGNMENT)
    j = contract.FWHM_JITTER
    lr_fwhm = conf0 * optics.confocal_fwhm_factor(pinhole) * (1 + rng.uniform(-j, j))
    for _ in range(100):  # the target must stay sharper than the input (redraw its jitter)
        hr_fwhm = ism0 * optics.ism_fwhm_factor(reassignment, ism0) * (1 + rng.uniform(-j, j))
        if hr_fwhm <= 0.9 * lr_fwhm:
            break
    magnitude, angle = _uniform(rng, contract.REGISTRATION_SHIFT_LR_PX), rng.uniform(0, 2 * math.pi)
    content = structures.kidney_content(rng)
    log_peak = np.log(contract.LR_PEAK_E)
    return {
        "hr_size": hr_size, "lr_size": hr_size // 2,
        "hr_pixel_nm": contract.HR_PIXEL_NM, "lr_pixel_nm": contract.LR_PIXEL_NM,
        "setting": setting, "pinhole_au": pinhole, "reassignment": reassignment,
        "lr_psf": _psf_params(rng, float(lr_fwhm), 0.04),
        "hr_psf": _psf_params(rng, float(hr_fwhm), 0.02),
        "shift_lr_px": [magnitude * math.sin(angle), magnitude * math.cos(angle)],
        "shift_magnitude_lr_px": magnitude,
        "qe": _uniform(rng, contract.QE), "read_noise_e": _uniform(rng, contract.READ_NOISE_E),
        "gain_adu_per_e": _uniform(rng, contract.LR_GAIN_ADU_PER_E),
        "offset_adu": contract.OFFSET_ADU,
        "lr_peak_e": float(np.exp(rng.uniform(*log_peak))),
        "hr_peak_photons": _uniform(rng, contract.HR_PEAK_PHOTONS),
        "haze_fraction": _uniform(rng, contract.HAZE_FRACTION),
        "haze_sigma_um": _uniform(rng, contract.HAZE_SIGMA_UM),
        "autofluorescence": contract.AUTOFLUORESCENCE, "hr_haze_factor": contract.HR_HAZE_FACTOR,
        "content": content,
    }


def _peak(signal: np.ndarray, floor: float) -> float:
    # Robust peak; at least 10 % of the max so sparse images (few puncta) are not over-scaled,
    # and at least ``floor`` (object units) so a nearly empty field stays dark instead of
    # having its faint haze amplified to the full photon budget.
    return max(float(np.percentile(signal, PEAK_PERCENTILE)), 0.1 * float(signal.max()), floor)


def expose(components: dict, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Scale blurred components to expected photons: (LR photons at the camera, HR photons).

    LR: in-focus + haze + flat autofluorescence, scaled so QE x the in-focus peak equals the
    drawn ``lr_peak_e``. HR: the same with haze and autofluorescence times ``hr_haze_factor``,
    in-focus peak = ``hr_peak_photons``. Autofluorescence is a fraction of each in-focus peak.
    """
    f, k, af = params["haze_fraction"], params["hr_haze_factor"], params["autofluorescence"]
    # phantom.render_object scales the object's bright end to ~1 per LR pixel (1/4 per HR pixel)
    lr_ref = _peak(components["lr_focus"], EMPTY_FIELD_PEAK)
    hr_ref = _peak(components["hr_focus"], EMPTY_FIELD_PEAK / 4)
    lr = components["lr_focus"] + f * components["lr_haze"] + af * lr_ref
    hr = components["hr_focus"] + k * (f * components["hr_haze"] + af * hr_ref)
    return (lr * (params["lr_peak_e"] / (params["qe"] * lr_ref)),
            hr * (params["hr_peak_photons"] / hr_ref))


def add_lr_noise(lr_clean: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """A fresh sCMOS realisation (uint16 ADU) of a noise-free LR image (expected ADU)."""
    gain, qe, offset = params["gain_adu_per_e"], params["qe"], params["offset_adu"]
    photons = (np.asarray(lr_clean, dtype=np.float64) - offset) / (qe * gain)
    return optics.scmos_noise(photons, qe=qe, read_noise_e=params["read_noise_e"], gain=gain,
                              offset=offset, rng=rng)


def add_hr_noise(hr_clean: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """A fresh photon-counting realisation (uint16 counts) of a noise-free HR image (photons)."""
    return optics.photon_counting_noise(np.asarray(hr_clean, dtype=np.float64), rng)


def simulate_pair(seed: int, *, hr_size: int | None = None, noise: bool = True,
                  realisations: int = 1, obj=None, overrides: dict | None = None,
                  domain: str = "contract") -> dict:
    """Simulate one (confocal LR, ISM HR) pair, deterministically from ``seed``.

    Parameters
    ----------
    seed : int
        Non-negative seed; everything about the pair follows from it.
    hr_size : int, optional
        HR field size in pixels (even, >= 32); default drawn from ``contract.HR_FIELD_PX``.
    noise : bool
        If False, ``lr``/``hr`` are the noise-free images and no repeats are returned.
    realisations : int
        Number of independent noise realisations in ``lr_repeats``/``hr_repeats``.
    obj : callable, optional
        ``obj(rng, shape) -> array``: the fluorescent object on the fine grid (non-negative,
        bright end ~1) instead of the kidney phantom, e.g. a real image used as the specimen
        (``bench/foreign_heldout.py``); optics, noise and registration are drawn as usual.
    overrides : dict, optional
        Parameters that replace the drawn ones (keys of :func:`sample_params`), e.g. the PSFs
        and pinhole of a microscope outside the contract (``bench/finetune.py``). Everything is
        still drawn first, so the other parameters and the content do not change.
    domain : {"contract", "wide"}
        Where the parameters are drawn (:func:`sample_params`): "contract" (default, the
        release's training data, bit-identical to simulator 1.0) or "wide" (domain
        randomisation: wider optics, ISM reconstructions, rotation, noise, structure families).

    Returns
    -------
    dict
        ``lr`` (uint16 ADU, (h, w)), ``hr`` (uint16 photons, (2h, 2w)), ``lr_clean``,
        ``hr_clean`` (float32 expectations on the same grids and registration), ``params``
        (JSON-serialisable), and with noise ``lr_repeats``, ``hr_repeats`` (lists).
    """
    seed = _check_int("seed", seed, 0)
    realisations = _check_int("realisations", realisations, 1)
    _check_domain(domain)
    content_seq, noise_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(content_seq)
    params = sample_params(rng, hr_size, domain)
    unknown = sorted(set(overrides or {}) - set(params))
    if unknown:
        raise ValueError(f"overrides has unknown parameter(s) {unknown}; known: {sorted(params)}")
    params.update(overrides or {})
    check_params(params, "the drawn parameters with overrides" if overrides else
                 "the drawn parameters")
    n = 2 * params["hr_size"] + 2 * MARGIN_FINE_PX  # fine grid: HR / 2
    if obj is None and domain == "wide":
        obj, info = structures.render(rng, (n, n), params["content"])
        params["content"]["drawn"] = info
    elif obj is None:
        obj, info = phantom.render_object(rng, (n, n), params["content"])
        params["content"].update(info)
    else:
        obj = np.asarray(obj(rng, (n, n)), dtype=np.float64)
        params["content"] = {"scene": "external object"}
    components = optics.blur_and_bin(obj, params["lr_psf"], params["hr_psf"], params["shift_lr_px"],
                                     params["haze_sigma_um"] * 1000.0, MARGIN_FINE_PX,
                                     rotation_deg=params.get("rotation_deg", 0.0))
    lr_photons, hr_photons = expose(components, params)
    lr_clean = optics.scmos_expected_adu(lr_photons, qe=params["qe"], gain=params["gain_adu_per_e"],
                                         offset=params["offset_adu"])
    hr_clean = hr_photons.astype(np.float32)
    out = {"lr_clean": lr_clean, "hr_clean": hr_clean, "params": params}
    if not noise:
        return {"lr": lr_clean.copy(), "hr": hr_clean.copy(), **out}
    out["lr_repeats"], out["hr_repeats"] = [], []
    for child in noise_seq.spawn(realisations):
        nrng = np.random.default_rng(child)
        out["lr_repeats"].append(add_lr_noise(lr_clean, params, nrng))
        out["hr_repeats"].append(add_hr_noise(hr_clean, params, nrng))
    out["lr"], out["hr"] = out["lr_repeats"][0], out["hr_repeats"][0]
    return out


# ------------------------------------------------------------------------------------- dataset
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _write_image(path: Path, image: np.ndarray, pixel_nm: float) -> None:
    write_ome_tiff(path, image, pixel_nm / 1000.0)  # uncompressed: the dataset memory-maps it


def _simulate_to(folder: str, seed: int, hr_size: int | None, repeats: bool = False,
                 domain: str = "contract") -> dict:
    """Worker: simulate pair ``seed`` into ``folder`` and return its manifest entry."""
    domain = pair_domain(domain, seed)
    pair = simulate_pair(seed, hr_size=hr_size, realisations=2 if repeats else 1, domain=domain)
    name = f"s{seed:06d}"
    entry = {"name": name, "lr": f"lr/{name}.tif", "hr": f"hr/{name}.tif", "seed": seed,
             "domain": domain, "params": pair["params"]}
    _write_image(Path(folder) / entry["lr"], pair["lr"], contract.LR_PIXEL_NM)
    _write_image(Path(folder) / entry["hr"], pair["hr"], contract.HR_PIXEL_NM)
    if repeats:  # a second, independent noise realisation of the same field (two-image FRC)
        entry["lr_repeat"], entry["hr_repeat"] = f"lr_repeat/{name}.tif", f"hr_repeat/{name}.tif"
        _write_image(Path(folder) / entry["lr_repeat"], pair["lr_repeats"][1], contract.LR_PIXEL_NM)
        _write_image(Path(folder) / entry["hr_repeat"], pair["hr_repeats"][1], contract.HR_PIXEL_NM)
    return entry


def simulate_dataset(out: str | os.PathLike, *, pairs: int, seed: int, workers: int | None = None,
                     overwrite: bool = False, hr_size: int | None = None,
                     repeats: bool = False, domain: str = "contract") -> Path:
    """Write ``pairs`` simulated pairs as OME-TIFF (``lr/``, ``hr/``) plus ``manifest.json``.

    Parameters
    ----------
    out : path
        Output folder; must not exist or be empty unless ``overwrite``.
    pairs : int
        Number of pairs (>= 1); pair ``k`` is ``simulate_pair(seed + k)``, named ``s{seed+k:06d}``.
    seed : int
        Master seed (>= 0).
    workers : int, optional
        Worker processes (default ``os.cpu_count()``); the output does not depend on it.
    overwrite : bool
        Replace an existing non-empty ``out`` (only after the new dataset is complete).
    hr_size : int, optional
        Fix the HR field size (for tests); default drawn per pair.
    repeats : bool
        Also write a second independent noise realisation of every pair to ``lr_repeat/`` and
        ``hr_repeat/`` (``lr/``, ``hr/`` are unchanged), for two-image FRC in ``srunet evaluate``.
    domain : {"contract", "wide", "mixed"}
        Parameter draw of every pair (:func:`simulate_pair`); "mixed": even seeds contract, odd
        seeds wide (:func:`pair_domain`). Recorded in the manifest, per pair too.

    Returns
    -------
    pathlib.Path
        Path of ``manifest.json``.

    Raises
    ------
    FileExistsError
        If ``out`` exists and is not empty and ``overwrite`` is False.
    """
    pairs = _check_int("pairs", pairs, 1)
    seed = _check_int("seed", seed, 0)
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = min(_check_int("workers", workers, 1), pairs)
    _check_domain(domain, DATASET_DOMAINS)
    out = Path(out)
    # existing, a file, unwritable, or no room: fail before simulating anything
    check_output_dir(out, overwrite=overwrite, what="simulation output folder",
                     flag="overwrite=True (--overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for folder in ("lr", "hr") + (("lr_repeat", "hr_repeat") if repeats else ()):
            (tmp / folder).mkdir()
        seeds = [seed + k for k in range(pairs)]
        entries: dict[int, dict] = {}
        with tqdm(total=pairs, desc="simulate", unit="pair") as bar:
            if workers == 1:
                for s in seeds:
                    entries[s] = _simulate_to(str(tmp), s, hr_size, repeats, domain)
                    bar.update()
            else:
                with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
                    futures = [pool.submit(_simulate_to, str(tmp), s, hr_size, repeats, domain)
                               for s in seeds]
                    for future in concurrent.futures.as_completed(futures):
                        entry = future.result()
                        entries[entry["seed"]] = entry
                        bar.update()
        manifest = {"srunet_simulator_version": SIMULATOR_VERSION, "master_seed": seed,
                    "domain": domain,
                    "pairs": [entries[s] for s in seeds], "contract": "ACQUISITION.md",
                    "units": {"lr": "sCMOS ADU (uint16, offset included)",
                              "hr": "photon counts (uint16)",
                              "shift_lr_px": "LR content displaced by +(dy, dx) LR px relative "
                                             "to HR"}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        swap_into_place(tmp, out)  # an empty or overwritten folder is replaced whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "manifest.json"
