"""Upper bound of the held-out scores: a perfect prediction of the noise-free ISM image.

For each seed, the simulator's noise-free ISM expectation (``hr_clean``, same grid and
registration as the target) is scored against the noisy ISM target with the project's metrics
(``all_metrics``: gain/offset fit, robust data range), exactly as ``srunet evaluate`` scores a
prediction. No predictor can beat this on average: what remains is the target's own noise.

    python bench/upper_bound.py [--seed 900000] [--pairs 24]

The defaults are the README's held-out set (``srunet simulate ... --pairs 24 --seed 900000``:
pair k uses seed + k).
"""

from __future__ import annotations

import argparse

import numpy as np

from srunet.evaluation.metrics import all_metrics
from srunet.simulation.simulator import simulate_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=900000, help="first seed (default 900000)")
    parser.add_argument("--pairs", type=int, default=24, help="number of seeds (default 24)")
    args = parser.parse_args()
    rows = []
    for seed in range(args.seed, args.seed + args.pairs):
        pair = simulate_pair(seed)
        rows.append(all_metrics(pair["hr"].astype(np.float32), pair["hr_clean"]))
        print(f"seed {seed}: PSNR {rows[-1]['psnr']:.2f} dB, SSIM {rows[-1]['ssim']:.3f}")
    mean = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    print(f"noise-free ISM vs noisy ISM target, mean over {len(rows)} seeds "
          f"{args.seed}-{args.seed + args.pairs - 1}: PSNR {mean['psnr']:.2f} dB, "
          f"SSIM {mean['ssim']:.3f}, NRMSE {mean['nrmse']:.3f}, accuracy {mean['accuracy']:.2f} %")


if __name__ == "__main__":
    main()
