"""Which error-bar model turns the TTA spread into a sigma with honest coverage? (issue 18.4)

For each LR/HR pair of a folder the package predicts the 8 dihedral test-time augmentations
(through bioimageio.core, as ``srunet evaluate`` does); the error of the plain prediction is
``sr - (hr - offset) / gain`` (the report's least-squares gain/offset fit, mapped onto the
output's scale). Everything is stored in the input's normalised units (divided by the input's
``std + eps``, ``srunet.normalization.mean_std_range``), so the forms compared are scale-free.

Forms, each fitted by Gaussian maximum likelihood on the CALIBRATION set, then one scale factor
so that exactly 90 % of its pixels have |error| <= 1.64 sigma:

- ``scaled``:    sigma = a * std
- ``floor``:     sigma = sqrt((a * std)^2 + b^2)                  (b in normalised units)
- ``intensity``: sigma = sqrt((a * std)^2 + b^2 + c^2 * max(sr, 0))  (sr normalised: a
  photon-noise-like term in the local predicted intensity above the image mean)

Coverage at 1.64 sigma is reported on every set, and per decile of the TTA std on the TEST set.

    python bench/calibration.py --calibration /work/wt/calib_data --test runs/heldout \\
        --foreign runs/foreign --robust runs/robust [--model rdf.yaml] [--limit 6]

Per-image arrays are cached in ``--cache`` (default /tmp/srunet-calibration-cache).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from srunet.evaluation.metrics import gain_offset
from srunet.evaluation.uncertainty import Z90, coverage, fit_calibration, tta_predictions
from srunet.normalization import mean_std_range
from srunet.tiff import find_pairs, read_image

FORMS = ("scaled", "floor", "intensity")
FIT_PIXELS = 400_000  # random pixels for the likelihood fit (the scale uses all)


def cache_folder(predictor, folder: Path, cache: Path, limit: int | None) -> dict:
    """Normalised std, error and prediction of every pair in ``folder`` (cached as .npz)."""
    out = {"std": [], "error": [], "sr": []}
    pairs = find_pairs(folder / "lr", folder / "hr")[:limit]
    for pair in pairs:
        path = cache / folder.name / f"{pair.name}.npz"
        if not path.exists():
            lr, hr = read_image(pair.lr)[0], read_image(pair.hr)[0]
            mean, high = mean_std_range(lr)
            scale = high - mean
            outputs = tta_predictions(predictor, lr)
            sr = outputs[0]  # the plain prediction, what `srunet predict` writes
            gain, offset = gain_offset(hr, sr)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, std=outputs.std(axis=0) / scale,
                     error=(sr - (hr - offset) / gain) / scale, sr=(sr - mean) / scale)
        with np.load(path) as saved:
            for key in out:
                out[key].append(saved[key].ravel())
    return {key: np.concatenate(values) for key, values in out.items()}


def sigma_of(form: str, params, data: dict) -> np.ndarray:
    a, b, c = (list(np.abs(params)) + [0.0, 0.0])[:3]
    if form == "scaled":
        return a * data["std"]
    variance = (a * data["std"]) ** 2 + b**2
    if form == "intensity":
        variance = variance + c**2 * np.maximum(data["sr"], 0)
    return np.sqrt(variance)


def fit_form(form: str, data: dict) -> np.ndarray:
    """Gaussian maximum likelihood, then one factor for 90 % coverage at Z90 on ``data``:
    srunet's own fit (``fit_calibration``, what `srunet evaluate` writes) for the forms it
    ships, the same procedure here for the intensity form."""
    if form in ("scaled", "floor"):  # the arrays are normalised already: scale 1
        fitted = fit_calibration(data["std"], data["error"], [1.0], form=form)
        return np.array([fitted.spread_factor, fitted.floor][: 1 + (form == "floor")])
    rng = np.random.default_rng(0)
    pick = rng.choice(data["error"].size, min(FIT_PIXELS, data["error"].size), replace=False)
    sub = {k: v[pick] for k, v in data.items()}
    start = {"scaled": [5.0], "floor": [3.0, 0.05], "intensity": [3.0, 0.05, 0.05]}[form]

    def nll(params):
        sigma = np.maximum(sigma_of(form, params, sub), 1e-9)
        return float(np.mean(np.log(sigma) + 0.5 * (sub["error"] / sigma) ** 2))

    params = np.abs(minimize(nll, start, method="Nelder-Mead",
                             options={"xatol": 1e-5, "fatol": 1e-8, "maxiter": 4000}).x)
    ratio = np.abs(data["error"]) / np.maximum(sigma_of(form, params, data), 1e-12)
    return params * np.quantile(ratio, 0.9) / Z90  # every term scales with sigma


def decile_coverage(sigma, data) -> list[float]:
    edges = np.quantile(data["std"], np.linspace(0, 1, 11))
    index = np.clip(np.searchsorted(edges, data["std"], side="right") - 1, 0, 9)
    return [coverage(data["error"][index == k], sigma[index == k]) for k in range(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="rdf.yaml", help="package (default: the release)")
    for name in ("calibration", "test", "foreign", "robust"):
        parser.add_argument(f"--{name}", type=Path, required=name in ("calibration", "test"),
                            help=f"{name} folder with lr/ and hr/")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each folder")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/srunet-calibration-cache"))
    args = parser.parse_args()

    from srunet.model.predictor import Predictor

    sets = {}
    with Predictor(args.model) as predictor:
        for name in ("calibration", "test", "foreign", "robust"):
            folder = getattr(args, name)
            if folder is not None:
                sets[name] = cache_folder(predictor, folder, args.cache, args.limit)
                print(f"{name}: {folder} ({sets[name]['error'].size} px)", flush=True)
    rms = {k: float(np.sqrt(np.mean(d["error"] ** 2) / np.mean(d["std"] ** 2)))
           for k, d in sets.items()}
    print("RMS error / RMS TTA std: " + ", ".join(f"{k} {v:.2f}" for k, v in rms.items()))
    names = [n for n in sets if n != "calibration"]
    print(f"\n| form | parameters | " + " | ".join(f"cov@1.64 {n}" for n in names)
          + " | per std decile, test (low -> high) | per std decile, foreign |")
    print("|---|---|" + "---|" * len(names) + "---|---|")
    for form in FORMS:
        params = fit_form(form, sets["calibration"])
        cells = [f"{100 * coverage(d['error'], sigma_of(form, params, d)):.1f} %"
                 for d in (sets[n] for n in names)]
        deciles = decile_coverage(sigma_of(form, params, sets["test"]), sets["test"])
        print(f"| {form} | {', '.join(f'{p:.4g}' for p in params)} | " + " | ".join(cells)
              + " | " + " ".join(f"{100 * c:.0f}" for c in deciles) + " | "
              + (" ".join(f"{100 * c:.0f}" for c in decile_coverage(
                  sigma_of(form, params, sets["foreign"]), sets["foreign"]))
                 if "foreign" in sets else "") + " |", flush=True)


if __name__ == "__main__":
    main()
