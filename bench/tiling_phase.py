"""How much the released network depends on where a tile starts (v1: position modulo 8; v2: none).

Predicts a simulated field, then the same field shifted by s = 1..7 input pixels, and prints the
largest and mean difference over the common interior, relative to the output range. Tools that
tile at arbitrary offsets see differences of this size at block joins.

    python bench/tiling_phase.py [--rdf rdf.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from common import tile_offset_differences
from srunet.model.unet import SRUNet
from srunet.normalization import mean_std_range, normalize, robust_percentiles
from srunet.simulation.simulator import simulate_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rdf", type=Path, default=Path(__file__).resolve().parent.parent / "rdf.yaml")
    args = parser.parse_args()
    description = yaml.safe_load(args.rdf.read_text())
    weights = description["weights"]["pytorch_state_dict"]
    model = SRUNet(**weights["architecture"]["kwargs"]).eval()
    model.load_state_dict(torch.load(args.rdf.parent / weights["source"], weights_only=True))
    lr = simulate_pair(900003, hr_size=512)["lr"].astype(np.float32)
    steps = {p["id"]: p.get("kwargs", {}) for p in description["inputs"][0]["preprocessing"]}
    if "zero_mean_unit_variance" in steps:  # the package's own normalisation
        x = normalize(lr, *mean_std_range(lr))
    else:
        x = normalize(lr, *robust_percentiles(lr, (steps["scale_range"]["min_percentile"],
                                                   steps["scale_range"]["max_percentile"])))
    margin = 2 * (model.receptive_radius() + model.grid)
    # shifts 1-7: a pooling network repeats with period grid (8 for v1)
    for shift, diff in tile_offset_differences(model, x, margin, range(1, 8)).items():
        print(f"shift {shift} px: max {diff.max():.2e}, mean {diff.mean():.2e} of the output range")


if __name__ == "__main__":
    main()
