"""Large-image prediction benchmark: a 4096x4096 confocal TIFF through `srunet predict`.

Prints wall time, peak resident memory, and checks the output: 8192x8192 OME-TIFF whose pixel
size is half the input's.

    python bench/predict_large.py [--size 4096] [--model rdf.yaml] [--weights-format FORMAT]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import tifffile

from common import synthetic_confocal


def main() -> None:
    from srunet.cli import main as cli
    from srunet.commands import default_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--weights-format", default=None, help="default: srunet predict's (onnx)")
    args = parser.parse_args()
    extra = ["--weights-format", args.weights_format] if args.weights_format else []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "big.ome.tif"
        tifffile.imwrite(source, synthetic_confocal(args.size), ome=True,
                         metadata={"axes": "YX", "PhysicalSizeX": 0.085, "PhysicalSizeXUnit": "µm",
                                   "PhysicalSizeY": 0.085, "PhysicalSizeYUnit": "µm"})
        start = time.perf_counter()
        assert cli(["predict", str(source), "--model", str(args.model), "--out", str(Path(tmp) / "out")] + extra) == 0
        seconds = time.perf_counter() - start
        result = Path(tmp) / "out" / "big_sr.ome.tif"
        with tifffile.TiffFile(result) as tif:
            shape = tif.series[0].shape
            xml = tif.ome_metadata
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"input {args.size}x{args.size} -> output {shape[0]}x{shape[1]}")
        expected = 'PhysicalSizeX="0.0425"'
        print(f"output pixel size 42.5 nm (half of 85 nm): {expected in xml}")
        print(f"wall time {seconds:.1f} s ({shape[0] * shape[1] / 1e6 / seconds:.2f} output Mpx/s, "
              f"reading and writing included), peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
