"""Thin command line: ``srunet simulate | train | package | predict | evaluate``.

Parsing only; each subcommand imports its (heavy) module after the arguments are parsed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def default_model() -> Path:
    """The package at the repository root (``rdf.yaml``), the default for predict/evaluate."""
    return Path(__file__).resolve().parent.parent / "rdf.yaml"  # srunet/ sits at the root


def _simulate(args: argparse.Namespace) -> int:
    from srunet.training.simulate import simulate_dataset

    manifest = simulate_dataset(args.out, pairs=args.pairs, seed=args.seed, workers=args.workers,
                                overwrite=args.overwrite, repeats=args.repeats)
    print(f"wrote {args.pairs} pairs; manifest: {manifest}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from srunet.training.config import load_config
    from srunet.training.train import train

    config = load_config(args.config, args.overrides, data_dir=args.data, out_dir=args.out,
                         tracking_uri=args.tracking_uri)
    result = train(config, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 tracks and saves
        print(f"MLflow store: {result.tracking_uri} (run {result.run_id})")
        print(f"best checkpoint: {result.best_checkpoint}")
    return 0


def _package(args: argparse.Namespace) -> int:
    if (args.out is None) == (not args.release):
        raise ValueError("give exactly one of --out DIR_OR_ZIP or --release")
    from srunet.model.checkpoint import build_model, load_checkpoint
    from srunet.model.package import (SAMPLE_SEED, build_package, export_release, sample_lr_size,
                                      tiling_geometry)
    from srunet.training.simulate import simulate_pair

    checkpoint = load_checkpoint(args.checkpoint)
    # The package's test/sample tensors, cover and card metrics come from one simulated pair.
    size = sample_lr_size(tiling_geometry(build_model(checkpoint)))
    sample = simulate_pair(seed=SAMPLE_SEED, hr_size=2 * size)
    if args.release:
        path = export_release(checkpoint, default_model().parent, sample=sample,
                              overwrite=args.overwrite, run_test=not args.no_test)
    else:
        path = build_package(checkpoint, args.out, sample=sample, overwrite=args.overwrite,
                             run_test=not args.no_test)
    print(f"package written {'(not tested)' if args.no_test else 'and validated'}: {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from srunet.model.predict import predict_files

    outputs = predict_files(args.inputs, model=args.model or default_model(), out_dir=args.out,
                            overwrite=args.overwrite, consistency=args.consistency,
                            uncertainty=args.uncertainty)
    for path in outputs:
        print(path)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from srunet.model.predict import evaluate_package

    summary = evaluate_package(args.model or default_model(), lr_dir=args.lr, hr_dir=args.hr,
                       out_dir=args.out, tracking_uri=args.tracking_uri, overwrite=args.overwrite,
                       lr_repeat_dir=args.lr_repeat, hr_repeat_dir=args.hr_repeat)
    print(f"report: {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srunet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate confocal/ISM training pairs (ACQUISITION.md)")
    p.add_argument("out", type=Path, help="output folder (gets lr/, hr/, manifest.json)")
    p.add_argument("--pairs", type=int, default=16, help="number of image pairs (default 16)")
    p.add_argument("--seed", type=int, default=0, help="master seed; pair k uses seed+k")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--repeats", action="store_true",
                   help="also write second noise realisations (lr_repeat/, hr_repeat/) for FRC")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("train", help="train the 2x UNet, tracked in MLflow")
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: built-in)")
    p.add_argument("--data", type=Path, default=None, help="data folder with lr/ and hr/")
    p.add_argument("--out", type=Path, default=None, help="run folder (checkpoints, mlflow.db)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint to continue exactly")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. train.epochs=5 model.depth=2")
    p.set_defaults(func=_train)

    p = sub.add_parser("package", help="write and validate a bioimage.io model package")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="folder, or a .zip file")
    p.add_argument("--release", action="store_true",
                   help="write the repository's release: rdf.yaml at the root, files in model/release/")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-test", action="store_true", help="skip bioimageio's test (not advised)")
    p.set_defaults(func=_package)

    p = sub.add_parser("predict", help="2x super-resolve TIFF/OME-TIFF images with a package")
    p.add_argument("inputs", type=Path, nargs="+")
    p.add_argument("--model", type=Path, default=None, help="rdf.yaml or .zip (default: root)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--consistency", action="store_true",
                   help="also write a physics-consistency map beside each output")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write a test-time-augmentation uncertainty map")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="QC report of a package on paired LR/HR data")
    p.add_argument("--model", type=Path, default=None, help="rdf.yaml or .zip (default: root)")
    p.add_argument("--lr", type=Path, required=True)
    p.add_argument("--hr", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--lr-repeat", type=Path, default=None,
                   help="second noise realisations of the LR images (same names): two-image FRC")
    p.add_argument("--hr-repeat", type=Path, default=None, help="the same for the HR images")
    p.add_argument("--tracking-uri", default=None, help="log the report to this MLflow store")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        # Bad input: the message says what, where and how to fix it; no traceback needed.
        print(f"srunet {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
