"""A held-out set of structures the phantom generator never made, under the same physics.

Real microscopy images bundled with scikit-image (no download) serve as the specimen: crops
of ``cell`` (a cell, phase contrast), ``immunohistochemistry`` (stained tissue section, the
haematoxylin/DAB density as fluorophore), ``retina`` (vessel tree) and ``hubble_deep_field``
(point-like and extended sources), each scaled so that one input pixel of the crop spans one
fine-grid pixel (21.25 nm) times ``zoom``. They go through the simulator's optics, camera and
detector models with parameters drawn from the acquisition contract (``simulate_pair(obj=...)``),
so only the structures are foreign. Writes ``OUT/lr``, ``OUT/hr`` (+ ``lr_repeat``,
``hr_repeat`` for two-image FRC), then evaluate the release on it:

    python bench/foreign_heldout.py runs/foreign --pairs 24
    srunet evaluate --model rdf.yaml --lr runs/foreign/lr --hr runs/foreign/hr \\
        --lr-repeat runs/foreign/lr_repeat --hr-repeat runs/foreign/hr_repeat --out runs/foreign_report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import zoom as resample
from skimage import color, data

from srunet.physics import contract
from srunet.tiff import write_ome_tiff
from srunet.simulation.simulator import simulate_pair

SEED = 700000  # disjoint from training (0..) and the phantom held-out set (900000..)


def _specimens() -> dict[str, np.ndarray]:
    """Grey images in [0, 1] where bright = fluorophore."""
    ihc = color.rgb2hed(data.immunohistochemistry())
    return {
        "cell": data.cell().astype(np.float64),
        "ihc": np.clip(ihc[..., 0] + ihc[..., 2], 0, None),  # haematoxylin + DAB density
        "retina": 1.0 - color.rgb2gray(data.retina()),  # vessels are dark in the fundus image
        "hubble": color.rgb2gray(data.hubble_deep_field()),
    }


def object_from(image: np.ndarray):
    """``obj(rng, shape)`` for simulate_pair: a random crop, zoom 2-5 fine px per image px,
    random rotation by 90 degrees, bright end scaled to ~1 like the phantom."""
    image = (image - np.percentile(image, 1)) / max(np.ptp(image), 1e-12)

    def obj(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        zoom = rng.uniform(2.0, 5.0)
        need = [int(np.ceil(s / zoom)) + 2 for s in shape]
        y = rng.integers(0, max(1, image.shape[0] - need[0]))
        x = rng.integers(0, max(1, image.shape[1] - need[1]))
        crop = image[y:y + need[0], x:x + need[1]]
        fine = resample(crop, zoom, order=1)[: shape[0], : shape[1]]
        fine = np.pad(fine, [(0, s - f) for s, f in zip(shape, fine.shape)], mode="reflect")
        fine = np.rot90(np.clip(fine, 0, None), int(rng.integers(4)))
        return fine / max(np.percentile(fine, 99.8), 1e-12)

    return obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--hr-size", type=int, default=384)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")
    for kind in ("lr", "hr", "lr_repeat", "hr_repeat"):
        (args.out / kind).mkdir(parents=True)
    specimens = _specimens()
    names = sorted(specimens)
    manifest = []
    for k in range(args.pairs):
        specimen = names[k % len(names)]
        pair = simulate_pair(SEED + k, hr_size=args.hr_size, realisations=2,
                             obj=object_from(specimens[specimen]))
        name = f"{specimen}{k:03d}"
        for kind, index, pixel in (("lr", 0, contract.LR_PIXEL_NM), ("hr", 0, contract.HR_PIXEL_NM),
                                   ("lr_repeat", 1, contract.LR_PIXEL_NM),
                                   ("hr_repeat", 1, contract.HR_PIXEL_NM)):
            image = pair[f"{kind.split('_')[0]}_repeats"][index]
            write_ome_tiff(args.out / kind / f"{name}.tif", image, pixel / 1000.0)
        manifest.append({"name": name, "specimen": specimen, "seed": SEED + k})
    (args.out / "foreign.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {args.pairs} pairs to {args.out}")


if __name__ == "__main__":
    main()
