"""Prediction speed by weight format and block size, through bioimageio.core (no file I/O).

Each spec is FORMAT:BLOCK (block side in input px, halo included), e.g.

    python bench/predict_blocks.py onnx:384 onnx:512 onnx:640 onnx:1024 \\
        pytorch_state_dict:192 pytorch_state_dict:256 pytorch_state_dict:512 torchscript:256

Prints output Mpx/s for a 2048x2048 input (``--size``) per spec; the weights are loaded
before the clock starts. ``srunet.model.predictor.DEFAULT_BLOCK_LR`` holds the fastest measured.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import synthetic_confocal


def main() -> None:
    from srunet.commands import default_model
    from srunet.model.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="FORMAT:BLOCK, e.g. onnx:512")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--model", type=Path, default=default_model())
    args = parser.parse_args()
    image = synthetic_confocal(args.size)
    for spec in args.specs:
        weights_format, _, block = spec.partition(":")
        with Predictor(args.model, weights_format=weights_format, block_lr=int(block)) as predictor:
            predictor(image[:256, :256])  # load the weights outside the timing
            start = time.perf_counter()
            out = predictor(image)
            seconds = time.perf_counter() - start
        print(f"{weights_format}, {block} px blocks: {seconds:.1f} s, "
              f"{out.size / 1e6 / seconds:.2f} output Mpx/s", flush=True)


if __name__ == "__main__":
    main()
