"""Held-out learning curve: score every weight snapshot of a run on held-out sets.

A run with ``train.snapshots=true`` (``training/v3.yaml``) keeps the weights of every validation
as ``checkpoints/step_NNNNNNN.pt``. Validation images come from the training pool, so choosing a
network or a checkpoint by them flatters it; this scores each snapshot on sets the run never
drew from: the own held-out phantoms, the foreign structures and the robustness set (README,
"Held-out test sets"). The score is the mean PSNR gain over bicubic (the README's scale:
``srunet.evaluation.metrics.all_metrics``, gain/offset fit, target percentile range), whole
images, normalised as training normalises them.

    python bench/heldout_curve.py runs/v3/checkpoints --sets runs/heldout runs/foreign runs/robust \
        --images 8 --out runs/v3/heldout_curve

A fine-tuning run (``train.init_from``) can score its starting weights as step 0:
``--start rdf.yaml`` (a package), ``--start weights.pt`` (a package's state dict) or
``--start CKPT``.

Writes ``OUT/curve.json`` and ``OUT/curve.png``; already scored snapshots are kept, so it can
be re-run while the training run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from srunet.evaluation.metrics import all_metrics
from srunet.files import swap_into_place
from srunet.model.checkpoint import build_model, load_weights
from srunet.model.from_package import checkpoint_from_package
from srunet.model.unet import SRUNet
from srunet.tiff import find_pairs
from srunet.training import dataset as ds
from srunet.training.config import DataConfig
from srunet.training.validate import predict_array, prepare_validation


def load_set(folder: Path, images: int) -> list:
    """The first ``images`` pairs of ``folder`` (lr/, hr/), prepared as validation images."""
    pairs = find_pairs(folder / "lr", folder / "hr")[:images]
    return prepare_validation(ds.load_images(pairs, DataConfig(), tile=16))


def score(checkpoint: Path, sets: dict) -> dict:
    """Mean, min and max held-out gain (dB) of one snapshot (or starting weights) on each set."""
    if checkpoint.suffix in (".yaml", ".yml"):  # a package: the weights a fine-tune starts from
        model = build_model(checkpoint_from_package(checkpoint))
    else:  # a snapshot, or a package's bare weights.pt (the release's architecture defaults)
        state, saved = load_weights(checkpoint)
        model = build_model(saved.to_dict()) if saved else SRUNet().eval()
        model.load_state_dict(state)
    row = {}
    with torch.no_grad():
        for name, items in sets.items():
            gains = [predict_gain(model, item) for item in items]
            row[name] = {"gain_db": float(np.mean(gains)), "min_gain_db": float(np.min(gains)),
                         "max_gain_db": float(np.max(gains)), "images": len(gains)}
    return row


def predict_gain(model, item) -> float:
    """PSNR gain over bicubic (dB) of ``model`` on one prepared held-out pair."""
    sr = predict_array(model, item.lr, torch.device("cpu"))
    return all_metrics(item.hr, sr)["psnr"] - item.bicubic_scores["psnr"]


def plot(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(curve, key=int)
    figure, axis = plt.subplots(figsize=(6, 3.4), layout="constrained")
    for name in curve[steps[0]]:
        axis.plot([int(s) for s in steps], [curve[s][name]["gain_db"] for s in steps],
                  marker=".", label=name)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set(xlabel="training step", ylabel="held-out PSNR gain over bicubic (dB)")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, help="a run's checkpoints/ folder")
    parser.add_argument("--sets", type=Path, nargs="+", required=True,
                        help="held-out folders with lr/ and hr/")
    parser.add_argument("--images", type=int, default=8, help="pairs scored per set")
    parser.add_argument("--out", type=Path, required=True, help="folder for curve.json/png")
    parser.add_argument("--start", type=Path, default=None, metavar="RDF_OR_CKPT",
                        help="the weights the run started from (train.init_from), scored as step 0")
    args = parser.parse_args()
    snapshots = sorted(args.checkpoints.glob("step_*.pt"))
    if not snapshots:
        raise SystemExit(f"{args.checkpoints} holds no step_*.pt snapshots: train with "
                         "train.snapshots=true")
    sets = {folder.name: load_set(folder, args.images) for folder in args.sets}
    previous = args.out / "curve.json"
    curve = json.loads(previous.read_text()) if previous.is_file() else {}
    if args.start is not None and "0" not in curve:
        curve["0"] = score(args.start, sets)
        print(0, {k: round(v["gain_db"], 2) for k, v in curve["0"].items()}, flush=True)
    for path in snapshots:
        step = str(int(path.stem.split("_")[1]))
        if step not in curve:
            curve[step] = score(path, sets)
            print(step, {k: round(v["gain_db"], 2) for k, v in curve[step].items()}, flush=True)
    staging = args.out.with_name(f".{args.out.name}.{os.getpid()}")
    staging.mkdir(parents=True)
    (staging / "curve.json").write_text(json.dumps(curve, indent=1, sort_keys=True))
    plot(curve, staging / "curve.png")
    swap_into_place(staging, args.out)
    print(f"wrote {args.out / 'curve.json'} and curve.png")


if __name__ == "__main__":
    main()
