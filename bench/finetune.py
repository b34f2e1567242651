"""Fine-tuning in minutes: held-out gain against wall time, release vs from scratch.

Two simulated cases the release never saw, each trained twice with the same wall-clock budget
through the real training loop (``training/finetune.yaml``, the README recipe): once from the
release weights, once from random weights (the release recipe's learning rate). Weights are
snapshotted at every validation (each ``train.val_every`` steps) with the wall time since the
run was launched; afterwards each snapshot is scored on held-out pairs the run never saw.

* ``tissue`` -- a new tissue at the edge of the contract: cultured-cell cytoskeleton (thin
  filaments and vesicles, a structure family the kidney phantom does not draw), 488/520 nm
  water-immersion NA 1.2 optics with the pinhole at 2 AU and both PSFs at +15 % of their
  nominal width (the largest the contract allows); 8 training pairs (one held out for
  validation), 8 held-out pairs, detector settings drawn from the contract.
* ``microscope`` -- a microscope outside the contract: a 0.5 AU pinhole (contract 0.8-2 AU)
  and plain pixel-reassignment ISM without reweighting (150 nm core with a 20 % wide tail,
  where the contract's ISM is a 139 nm Gaussian-like spot), one fixed instrument and
  registration; only 4 crops of 80x80 LR px to learn from (one held out for validation, as
  ``srunet train`` always does) and 12 held-out crops of other fields.

    python bench/finetune.py runs/finetune_bench --scenario tissue --minutes 15
    python bench/finetune.py runs/finetune_bench --scenario microscope --minutes 5

Writes ``OUT/SCENARIO/curve.json`` and ``curve.png`` and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from srunet.physics import contract
from srunet.evaluation.metrics import all_metrics
from srunet.model.unet import SRUNet
from srunet.tiff import find_pairs, write_ome_tiff
from srunet.training import dataset as ds
from srunet.physics import optics
from srunet.training.config import load_config
from srunet.simulation.drawing import Canvas
from srunet.simulation.phantom import normalised
from srunet.simulation.simulator import simulate_pair
from srunet.training.train import Trainer
from srunet.training.validate import predict_array, prepare_validation

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "training" / "finetune.yaml"
RELEASE = ROOT / "model" / "release" / "weights.pt"
SCRATCH_LR = 1e-3  # training/kidney.yaml's rate for random weights
PX_PER_UM = 1000.0 / contract.FINE_PIXEL_NM


# ------------------------------------------------------------------------------ the new data
def cytoskeleton(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Filaments (microtubule-like, 25 nm wide, persistence ~5 um) and vesicle puncta."""
    canvas = Canvas(shape)
    n_filaments = int(rng.integers(30, 90))
    steps = 160
    step_px = 0.1 * PX_PER_UM  # 100 nm per segment
    start = rng.uniform(0, 1, (n_filaments, 2)) * np.array(shape)
    heading = rng.uniform(0, 2 * math.pi, (n_filaments, 1))
    turns = np.cumsum(rng.normal(0, math.sqrt(0.1 / 5.0), (n_filaments, steps)), axis=1) + heading
    paths = start[:, None, :] + step_px * np.cumsum(
        np.stack([np.sin(turns), np.cos(turns)], axis=-1), axis=1)
    canvas.polylines(paths, width=25.0 / contract.FINE_PIXEL_NM, conc=rng.uniform(0.5, 1.5, n_filaments))
    n_vesicles = int(rng.integers(20, 120))
    canvas.discs(rng.uniform(0, 1, (n_vesicles, 2)) * np.array(shape),
                 rng.uniform(30, 90, n_vesicles) / contract.FINE_PIXEL_NM,
                 rng.uniform(0.3, 1.0, n_vesicles), hollow=bool(rng.uniform() < 0.5))
    return normalised(canvas.render())  # bright end ~1 per LR pixel, like the kidney phantom


def tissue_overrides() -> dict:
    setting = "488/520 NA1.2 water"
    confocal, ism = contract.PSF_FWHM_NM[setting]
    edge = 1 + contract.FWHM_JITTER
    pinhole = contract.PINHOLE_AU[1]
    return {"setting": setting, "pinhole_au": pinhole,
            "lr_psf": optics.psf_spec(confocal * optics.confocal_fwhm_factor(pinhole) * edge),
            "hr_psf": optics.psf_spec(ism * edge)}


def microscope_overrides() -> dict:
    return {"pinhole_au": 0.5, "reassignment": 1.0,
            "lr_psf": optics.psf_spec(contract.PSF_FWHM_NM[contract.DEFAULT_SETTING][0]
                                      * optics.confocal_fwhm_factor(0.5)),
            "hr_psf": optics.psf_spec(150.0, tail_weight=0.2, tail_scale=2.5),
            "shift_lr_px": [0.15, -0.1], "shift_magnitude_lr_px": math.hypot(0.15, 0.1),
            "qe": 0.8, "read_noise_e": 1.2, "gain_adu_per_e": 1.0, "lr_peak_e": 300.0,
            "hr_peak_photons": 600.0, "haze_fraction": 0.15, "haze_sigma_um": 2.5}


SCENARIOS = {
    # name: (object or None for the kidney phantom, overrides, HR size, train pairs, held-out)
    "tissue": (cytoskeleton, tissue_overrides, 384, 8, 8),
    "microscope": (None, microscope_overrides, 160, 4, 12),
}


def write_pairs(folder: Path, seeds: range, scenario: str) -> None:
    obj, overrides, hr_size = SCENARIOS[scenario][:3]
    for kind in ("lr", "hr"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    manifest = []
    for seed in seeds:
        pair = simulate_pair(seed, hr_size=hr_size, obj=obj, overrides=overrides())
        write_ome_tiff(folder / "lr" / f"{scenario}{seed}.tif", pair["lr"], contract.LR_PIXEL_NM / 1000)
        write_ome_tiff(folder / "hr" / f"{scenario}{seed}.tif", pair["hr"], contract.HR_PIXEL_NM / 1000)
        manifest.append({"name": f"{scenario}{seed}", "seed": seed, "params": pair["params"]})
    # simulated pairs lie on the 2x grid by construction: the manifest tells `srunet train` so
    (folder / "manifest.json").write_text(json.dumps({"scenario": scenario, "pairs": manifest}, indent=1))


# ------------------------------------------------------------------------------ the two runs
def run(data: Path, out: Path, minutes: float, fine_tune: bool, tile: int) -> list:
    """The real training loop; its public validation hook keeps a copy of the weights at each
    validation (wall time since launch, step), so the held-out curve can be scored afterwards
    without slowing the run."""
    overrides = [f"train.max_minutes={minutes}", f"data.tile_size={tile}", "train.threads=2"]
    if fine_tune:
        overrides.append(f"train.init_from={RELEASE}")
    else:
        overrides += ["train.init_from=null", f"train.learning_rate={SCRATCH_LR}"]
    config = load_config(RECIPE, overrides, data_dir=data, out_dir=out)
    launched, snapshots = time.perf_counter(), []

    def snapshot(step: int, metrics: dict, model: torch.nn.Module) -> None:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        snapshots.append((time.perf_counter() - launched, step, metrics["val_psnr"], state))

    trainer = Trainer(config, on_validation=snapshot)
    start = copy.deepcopy(trainer.model.state_dict())
    trainer.run()
    return [(0.0, 0, -math.inf, start)] + snapshots


def heldout_curve(snapshots: list, heldout: list) -> list[dict]:
    """Held-out gain at each snapshot, of the current weights and of the checkpoint a user
    would have if the run stopped there (``best.pt``: the best validation PSNR so far)."""
    model = SRUNet().eval()
    rows, best_val, best_gains = [], -math.inf, None
    for seconds, step, val_psnr, state in snapshots:
        model.load_state_dict(state)
        gains = [all_metrics(item.hr, predict_array(model, item.lr, torch.device("cpu")))["psnr"]
                 - item.bicubic_scores["psnr"] for item in heldout]
        if best_gains is None or val_psnr > best_val:
            best_val, best_gains = val_psnr, gains
        rows.append({"minutes": seconds / 60, "step": step, "val_psnr": val_psnr,
                     "gain_db": float(np.mean(gains)), "min_gain_db": float(np.min(gains)),
                     "best_gain_db": float(np.mean(best_gains)),
                     "best_min_gain_db": float(np.min(best_gains))})
    return rows


def time_to_fraction(rows: list[dict], fraction: float = 0.95) -> float | None:
    """Minutes until the best checkpoint so far holds ``fraction`` of the run's final gain."""
    final = rows[-1]["best_gain_db"]
    if final <= 0:
        return None
    return next(r["minutes"] for r in rows if r["best_gain_db"] >= fraction * final)


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.4), layout="constrained")
    for (label, rows), color in zip(curves.items(), ("tab:blue", "tab:orange")):
        minutes = [r["minutes"] for r in rows]
        axis.plot(minutes, [r["best_gain_db"] for r in rows], color=color, marker=".",
                  label=f"{label}: best checkpoint so far")
        axis.plot(minutes, [r["gain_db"] for r in rows], color=color, alpha=0.35,
                  label=f"{label}: current weights")
    fine = curves["fine-tuned release"]
    t95 = time_to_fraction(fine)
    if t95 is not None:
        axis.axvline(t95, color="grey", linestyle=":", label=f"95 % of final fine-tuned gain ({t95:.1f} min)")
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set(xlabel="wall time since launch (min, 2 CPU cores)",
             ylabel="held-out PSNR gain over bicubic (dB)", title=title)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--minutes", type=float, required=True, help="budget of each run")
    args = parser.parse_args()
    out = args.out.resolve() / args.scenario
    if out.exists():
        raise SystemExit(f"{out} exists; choose a new OUT folder or remove it")
    _, _, hr_size, n_train, n_heldout = SCENARIOS[args.scenario]
    base = {"tissue": 500000, "microscope": 520000}[args.scenario]  # disjoint from all other sets
    write_pairs(out / "train", range(base, base + n_train), args.scenario)
    write_pairs(out / "heldout", range(base + 1000, base + 1000 + n_heldout), args.scenario)
    recipe = load_config(RECIPE)
    tile = min(recipe.data.tile_size, hr_size // 2 // 8 * 8)
    heldout = prepare_validation(ds.load_images(find_pairs(out / "heldout" / "lr", out / "heldout" / "hr"),
                                                recipe.data, tile))
    curves = {}
    for label, folder, fine_tune in (("fine-tuned release", "finetuned", True),
                                     ("from scratch", "scratch", False)):
        snapshots = run(out / "train", out / folder, args.minutes, fine_tune, tile)
        curves[label] = heldout_curve(snapshots, heldout)
    t95 = time_to_fraction(curves["fine-tuned release"])
    summary = {"scenario": args.scenario, "budget_minutes": args.minutes, "tile_size": tile,
               "train_pairs": n_train, "heldout_pairs": n_heldout, "minutes_to_95_percent": t95,
               "machine": f"{torch.get_num_threads()} torch threads, CPU", "curves": curves}
    (out / "curve.json").write_text(json.dumps(summary, indent=1))
    plot(curves, out / "curve.png", f"{args.scenario}: {n_train} training pairs, {n_heldout} held out")
    for label, rows in curves.items():
        end = rows[-1]
        print(f"{label}: start {rows[0]['gain_db']:+.2f} dB; after {end['minutes']:.1f} min "
              f"(step {end['step']}): best checkpoint {end['best_gain_db']:+.2f} dB (worst image "
              f"{end['best_min_gain_db']:+.2f}), current weights {end['gain_db']:+.2f} dB")
    print(f"95 % of the final fine-tuned gain after {t95} min; figure {out / 'curve.png'}")


if __name__ == "__main__":
    main()
