"""Thin command line: ``srunet simulate | pairs | train | package | predict | evaluate | registry``.

Parsing only; each subcommand's work is a function of :mod:`srunet.commands`, which imports its
(heavy) module after the arguments are parsed.
``pairs`` registers images (confocal onto ISM); ``registry`` is the MLflow model registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srunet import commands


def _model_out_overwrite(p: argparse.ArgumentParser, *, out: str, overwrite: str) -> None:
    """The options every command that runs a package shares."""
    p.add_argument("--model", type=Path, default=None,
                   help="package rdf.yaml, folder or .zip (default: the release)")
    p.add_argument("--out", type=Path, required=True, help=out)
    p.add_argument("--overwrite", action="store_true", help=overwrite)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srunet", description=__doc__.splitlines()[0])
    debug_help = "on an error, show the full traceback instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate confocal/ISM training pairs (docs/acquisition.md)")
    p.add_argument("out", type=Path, help="output folder (gets lr/, hr/, manifest.json)")
    p.add_argument("--pairs", type=int, default=16, help="number of image pairs (default 16)")
    p.add_argument("--seed", type=int, default=0, help="master seed; pair k uses seed+k")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--repeats", action="store_true",
                   help="also write second noise realisations (lr_repeat/, hr_repeat/) for FRC")
    p.add_argument("--domain", choices=("contract", "wide", "mixed"), default="contract",
                   help="parameter draw: 'contract' (default; docs/acquisition.md's ranges, the "
                        "release's training data), 'wide' (domain randomisation beyond them: "
                        "docs/acquisition.md, 'Wide domain (training v3)') or 'mixed' (even "
                        "seeds contract, odd seeds wide)")
    p.set_defaults(func=commands.simulate)

    p = sub.add_parser("train", help="train the 2x UNet, tracked in MLflow",
                       epilog=f"exit status {commands.EXIT_PENDING}: trained, but the MLflow server never "
                       "came back to take the run's logging; --resend-pending sends it later")
    recipe = p.add_mutually_exclusive_group()
    recipe.add_argument("--config", type=Path, default=None,
                        help="YAML config file (default: the built-in release recipe)")
    recipe.add_argument("--recipe", default=None, metavar="NAME",
                        help="a recipe shipped with srunet (training/NAME.yaml, also in the "
                             "wheel): finetune (from the release weights), kidney, v3")
    p.add_argument("--data", type=Path, default=None, help="data folder with lr/ and hr/")
    p.add_argument("--out", type=Path, default=None, help="run folder (checkpoints, mlflow.db)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint to continue exactly")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after this step with a checkpoint, schedule unchanged; --resume "
                        "continues it exactly (e.g. a long run split over sessions)")
    p.add_argument("--resend-pending", type=Path, default=None, metavar="RUN_DIR",
                   help="instead of training: send the logging a lost MLflow server never took "
                        "(RUN_DIR/mlflow_pending/) and mark the run finished; --tracking-uri if "
                        "the server moved")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. train.max_minutes=30 model.depth=4 (the "
                        "defaults are the release recipe, training/config.py)")
    p.set_defaults(func=commands.train)

    p = sub.add_parser("package", help="write and validate a bioimage.io model package")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="checkpoint .pt, or a package's rdf.yaml to re-export from its weights")
    p.add_argument("--publication", type=Path, default=None,
                   help="authors, maintainers, git_repo, cite, tags, training data (YAML; "
                        "default: training/publication.yaml, see docs/packaging.md)")
    p.add_argument("--out", type=Path, default=None, help="folder, or a .zip file")
    p.add_argument("--release", action="store_true",
                   help="write the repository's release: rdf.yaml at the root, files in model/release/")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (or, with --release, the release files)")
    p.add_argument("--no-test", action="store_true", help="skip bioimageio's test (not advised)")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                   help="ship this error bar (a calibration.json written by `srunet evaluate`); "
                        "`predict --uncertainty` then writes sigma. Default: none, or the one "
                        "of the package given as --checkpoint rdf.yaml")
    p.add_argument("--calibration-check", action="append", default=[], metavar="NAME=REPORT",
                   help="record the coverage that an `srunet evaluate --calibration FILE` report "
                        "measured on other pairs (shown in the card); repeatable")
    p.set_defaults(func=commands.package)

    p = sub.add_parser("predict", help="2x super-resolve TIFF/OME-TIFF images with a package")
    p.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE",
                   help="confocal TIFF/OME-TIFF files (2-D); each gives OUT/<name>_sr.ome.tif")
    _model_out_overwrite(p, out="output folder", overwrite="replace existing output files")
    p.add_argument("--consistency", action="store_true",
                   help="also write a physics-consistency map beside each output")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write NAME_sigma.ome.tif, the package's calibrated error bar "
                        "(8 test-time augmentations; output +-1.64 sigma holds an independent "
                        "ISM acquisition in ~90 %% of pixels on data like the training data). "
                        "A package without a calibration gives NAME_tta_spread.ome.tif, a "
                        "relative map that underestimates the error several-fold")
    p.add_argument("--weights-format", choices=("onnx", "pytorch_state_dict", "torchscript"),
                   default=None, help="default: onnx when onnxruntime is installed (fastest on "
                   "CPU), else bioimageio.core's choice")
    p.add_argument("--block-lr", type=int, default=None, metavar="PX",
                   help="largest block side in input px, halo included (default: the fastest "
                   "measured: 512 for every format); bounds memory")
    p.set_defaults(func=commands.predict)

    p = sub.add_parser("evaluate", help="QC report of a package on paired LR/HR data")
    _model_out_overwrite(p, out="report folder", overwrite="replace an existing report folder")
    p.add_argument("--lr", type=Path, required=True,
                   help="folder of confocal (LR) images, paired with --hr by file name")
    p.add_argument("--hr", type=Path, required=True,
                   help="folder of registered ISM (HR) targets, twice the LR size")
    p.add_argument("--lr-repeat", type=Path, default=None,
                   help="second noise realisations of the LR images (same names): two-image FRC")
    p.add_argument("--hr-repeat", type=Path, default=None, help="the same for the HR images")
    p.add_argument("--tracking-uri", default=None, help="log the report to this MLflow store")
    p.add_argument("--no-uncertainty", action="store_true",
                   help="skip the test-time-augmentation spread, the error bar's coverage and "
                        "REPORT/calibration.json (an error bar fitted on these pairs); they "
                        "cost 8 predictions per image instead of 1")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                   help="measure the coverage of this error bar (a calibration.json) instead of "
                        "the package's own")
    p.set_defaults(func=commands.evaluate)

    p = sub.add_parser("pairs", help="register raw confocal/ISM pairs onto the exact 2x grid, with QC")
    p.add_argument("raw", type=Path, help="folder with lr/ and hr/ (raw pairs, paired by name)")
    p.add_argument("--out", type=Path, required=True, help="registered dataset folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--min-overlap", type=float, default=0.5, help="share of the LR field (0.5)")
    p.add_argument("--min-correlation", type=float, default=0.6,
                   help="Pearson after registration (0.6)")
    p.add_argument("--max-saturation", type=float, default=0.01,
                   help="share of pixels at the image maximum (0.01)")
    p.set_defaults(func=commands.pairs)

    p = sub.add_parser("registry", help="MLflow model registry: add a package of a tracked run "
                       "as a version, with its lineage; or --download a version")
    p.add_argument("--package", type=Path, default=None, help="package folder or .zip")
    p.add_argument("--run-id", default=None, help="the `srunet train` run that made it")
    p.add_argument("--name", default=None, help="registered model name, e.g. srunet-kidney")
    p.add_argument("--alias", action="append", default=None,
                   help="move this alias (e.g. champion) to the new version; repeatable")
    p.add_argument("--metrics", type=Path, default=None,
                   help="report.json of `srunet evaluate` on held-out data (heldout_* tags)")
    store = p.add_mutually_exclusive_group(required=True)
    store.add_argument("--store", type=Path, default=None,
                       help="run folder of `srunet train --out` (its mlflow.db)")
    store.add_argument("--tracking-uri", default=None, help="MLflow tracking URI of the run")
    p.add_argument("--download", default=None, metavar="NAME@ALIAS_OR_VERSION",
                   help="instead: download that version's package.zip and rdf.yaml to --out")
    p.add_argument("--out", type=Path, default=None, help="download folder (with --download)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=commands.registry)
    for command in sub.choices.values():  # --debug before or after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=debug_help)
    return parser


# Renamed commands: the old name gets one line pointing to the new one.
RENAMED = {"register": ("registry", "the MLflow model registry; `srunet pairs` registers images")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in RENAMED:
        new, what = RENAMED[command]
        print(f"srunet: error: `srunet {command}` is now `srunet {new}` ({what}), same options",
              file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:
        if args.debug:  # a bug or an unclear error: the whole traceback
            raise
        # Bad input or output location (OSError: missing, existing, unwritable, full): the
        # message says what, where and how to fix it; no traceback needed.
        if isinstance(error, OSError) and error.strerror and error.filename:  # raw OS error
            error = f"{error.filename}: {error.strerror}"
        print(f"srunet {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
