"""How much the released network depends on the pooling phase (block position modulo 2**depth).

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

from srunet.model.unet import SRUNet
from srunet.normalization import normalize, robust_percentiles
from srunet.training.simulate import simulate_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rdf", type=Path, default=Path(__file__).resolve().parent.parent / "rdf.yaml")
    args = parser.parse_args()
    weights = yaml.safe_load(args.rdf.read_text())["weights"]["pytorch_state_dict"]
    model = SRUNet(**weights["architecture"]["kwargs"]).eval()
    model.load_state_dict(torch.load(args.rdf.parent / weights["source"], weights_only=True))
    lr = simulate_pair(900003, hr_size=512)["lr"].astype(np.float32)
    x = normalize(lr, *robust_percentiles(lr, (1, 99.8)))
    margin = 2 * (model.receptive_radius() + model.grid)
    with torch.no_grad():
        whole = model(torch.from_numpy(x)[None, None])[0, 0].numpy()
        value_range = float(np.ptp(whole))
        for shift in range(1, model.grid):
            shifted = model(torch.from_numpy(x[shift:, shift:].copy())[None, None])[0, 0].numpy()
            a = whole[2 * shift:, 2 * shift:][margin:-margin, margin:-margin]
            b = shifted[margin:-margin, margin:-margin]
            diff = np.abs(a - b) / value_range
            print(f"shift {shift} px: max {diff.max():.2e}, mean {diff.mean():.2e} of the output range")


if __name__ == "__main__":
    main()
