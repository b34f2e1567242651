"""Blocks and time of bioimageio.core's own blocking, by image size and blocksize parameter.

A consumer of the package that tiles with bioimageio.core picks a blocksize parameter n; the
block side is ``min + n * step`` of the input axes (halo included), so the declared size grid
decides how many blocks an image needs. Prints, per image size and n (``default`` = core's
``default_blocksize_parameter``, 10, also what ``bioimageio predict --blockwise`` uses):

- the block side, the kept interior (block - 2 x halo) and the exact number of blocks (core's
  own ``split_into_blocks``);
- the prediction time through core's prediction pipeline (state-dict weights, core's first
  choice), measured on at most ``--budget`` seconds of blocks and extrapolated linearly when
  the whole image would take longer (marked ``~``).

    python bench/tiling_sizes.py --model rdf.yaml --sizes 384 2048

The times depend on the machine and its load; block counts are exact.

n is passed per axis (``{(input, y): n, (input, x): n}``): bioimageio.core 0.11 reads a plain
``blocksize_parameter=0`` as "not given" (``ns = ns or self._default_blocksize_parameter`` in
``_prediction_pipeline.py``), so ``predict(..., blocksize_parameter=0)`` runs its default n = 10,
and ``bioimageio predict --blockwise 0`` does not tile at all.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

DEFAULT = "default"


def _image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random camera-like frame (the network's speed does not depend on content)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.random((size, size)), 1.5) * 1000.0 + 100.0).astype(np.float32)


def _sample(descr, image: np.ndarray):
    """A core Sample of ``image`` with named dims (core accepts any size given as xarray)."""
    import xarray as xr
    from bioimageio.core import Sample, Tensor
    from bioimageio.spec.model.v0_5 import TensorId

    data = xr.DataArray(image[None, None], dims=("batch", "channel", "y", "x"))
    return Sample(members={TensorId(str(descr.inputs[0].id)): Tensor.from_xarray(data)},
                  stat={}, id="bench")


def measure(descr, pipeline, size: int, n, budget: float) -> dict:
    """Block geometry, block count and (possibly extrapolated) seconds for one image/n."""
    from bioimageio.core.digest_spec import split_sample_into_blocks_for_model

    from srunet.model.predictor import package_blocks

    blocks = package_blocks(descr)
    value = pipeline._default_blocksize_parameter if n == DEFAULT else int(n)
    side = blocks.min + value * blocks.step
    result = {"size": size, "n": n, "block": side, "kept": side - 2 * blocks.halo}
    if side > size:  # core 0.11 raises "shape ... is smaller than block shape ..."
        return {**result, "blocks": None}
    count, _ = split_sample_into_blocks_for_model(_sample(descr, _image(size)), descr, value)
    per_axis = {(ipt.id, a.id): value for ipt in descr.inputs for a in ipt.axes
                if a.id in ("y", "x")}  # a dict, so that n = 0 is not read as "default"
    steps, predictions = pipeline.predict_sample_with_blocking_yield_intermediates(
        _sample(descr, _image(size)), ns=per_axis)
    assert steps == count, (steps, count)
    start, done = time.perf_counter(), 0
    for _ in predictions:
        done += 1
        if time.perf_counter() - start > budget and done < steps:
            break
    seconds = time.perf_counter() - start
    return {**result, "blocks": int(count), "seconds": seconds * steps / done,
            "exact": done == steps, "timed_blocks": done}


def main() -> None:
    from bioimageio.core import create_prediction_pipeline

    from srunet.model.predictor import load_model, package_blocks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("rdf.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 2048])
    parser.add_argument("--ns", nargs="+", default=["0", "1", "2", DEFAULT],
                        help="blocksize parameters; 'default' is core's default")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds of prediction per case before extrapolating")
    args = parser.parse_args()
    descr = load_model(args.model)
    blocks = package_blocks(descr)
    print(f"{args.model}: sizes {blocks.min} + n x {blocks.step}, input halo {blocks.halo}")
    print("| image | n | block | kept | blocks | time (s) |\n|---|---|---|---|---|---|")
    with create_prediction_pipeline(descr, weight_format="pytorch_state_dict") as pipeline:
        pipeline.predict_sample_without_blocking(_sample(descr, _image(blocks.min)))  # warm up
        for size in args.sizes:
            for n in args.ns:
                r = measure(descr, pipeline, size, n, args.budget)
                n_text = f"{DEFAULT} ({pipeline._default_blocksize_parameter})" if n == DEFAULT else n
                if r["blocks"] is None:
                    print(f"| {size}x{size} | {n_text} | {r['block']} | {r['kept']} | - | core "
                          "refuses: image smaller than the block |", flush=True)
                    continue
                time_text = (f"{r['seconds']:.1f}" if r["exact"] else
                             f"~{r['seconds']:.0f} ({r['timed_blocks']} blocks timed)")
                print(f"| {size}x{size} | {n_text} | {r['block']} | {r['kept']} | "
                      f"{r['blocks']:,} | {time_text} |", flush=True)


if __name__ == "__main__":
    main()
