"""Thin command line: ``srunet simulate | pairs | train | package | predict | evaluate | registry``.

Parsing only; each subcommand imports its (heavy) module after the arguments are parsed.
``pairs`` registers images (confocal onto ISM); ``registry`` is the MLflow model registry.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from srunet.files import check_output_dir, check_output_file

# Rough sizes for the free-space check (uint16 TIFFs): a simulated pair of up to 512^2 HR px.
PAIR_BYTES = 700_000

def _repo_root() -> Path:
    """The source checkout this module runs from (srunet/ sits at its root)."""
    return Path(__file__).resolve().parent.parent


def default_model() -> Path:
    """The default package of predict/evaluate.

    In a source checkout (editable install) the root ``rdf.yaml``; in an installed wheel the
    copy shipped as package data, ``srunet/model/release/rdf.yaml`` (same description, plain
    file names; ``export_release`` writes both).
    """
    root = _repo_root() / "rdf.yaml"
    if root.is_file():
        return root
    import srunet.model  # an empty __init__: cheap

    return Path(srunet.model.__file__).resolve().parent / "release" / "rdf.yaml"


def _simulate(args: argparse.Namespace) -> int:
    # Before the (slow) import and simulation: a bad output fails in a second.
    check_output_dir(args.out, overwrite=args.overwrite, what="simulation output folder",
                     need_bytes=args.pairs * PAIR_BYTES * (2 if args.repeats else 1))
    from srunet.simulation.simulator import simulate_dataset

    manifest = simulate_dataset(args.out, pairs=args.pairs, seed=args.seed, workers=args.workers,
                                overwrite=args.overwrite, repeats=args.repeats,
                                domain=args.domain)
    print(f"wrote {args.pairs} pairs ({args.domain} domain); manifest: {manifest}")
    return 0


# `srunet train`: the run finished, but a lost MLflow server never took its logging (the MLflow
# run stays RUNNING until `srunet train --resend-pending OUT` sends it).
EXIT_PENDING = 3


def _train(args: argparse.Namespace) -> int:
    if args.resend_pending is not None:
        return _resend(args)
    from srunet.training.config import load_config, recipe_path

    source = recipe_path(args.recipe) if args.recipe is not None else args.config
    config = load_config(source, args.overrides, data_dir=args.data, out_dir=args.out,
                         tracking_uri=args.tracking_uri)
    _check_train_outputs(config)
    from srunet.store import check_server

    check_server(config.tracking.tracking_uri or "")  # a lost server fails here, in seconds
    from srunet.training.train import train  # torch, mlflow: seconds to import

    result = train(config, resume=args.resume, stop_at=args.stop_at)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 tracks and saves
        print(f"MLflow store: {result.tracking_uri} (run {result.run_id})")
        print(f"best checkpoint: {result.best_checkpoint}")
        if result.tracking_uri.startswith("sqlite:///"):
            print(f"look at the runs: mlflow ui --backend-store-uri {result.tracking_uri} "
                  "(then open http://127.0.0.1:5000)")
        if result.pending:  # the last line: the run is not complete in MLflow
            print(f"NOT SENT: {result.pending} logging calls of run {result.run_id} (the MLflow "
                  f"run stays RUNNING); once {result.tracking_uri} answers, send them with: "
                  f"srunet train --resend-pending {config.out_dir}", file=sys.stderr)
            return EXIT_PENDING
    return 0


def _resend(args: argparse.Namespace) -> int:
    given = [flag for flag, value in (("--config", args.config), ("--recipe", args.recipe),
             ("--data", args.data), ("--out", args.out), ("--resume", args.resume),
             ("--stop-at", args.stop_at)) if value is not None] + args.overrides
    if given:
        raise ValueError(f"--resend-pending RUN_DIR takes only --tracking-uri, not "
                         f"{', '.join(given)}")
    from srunet.training.tracking import resend_pending

    run_id, sent = resend_pending(args.resend_pending, tracking_uri=args.tracking_uri)
    print(f"sent {sent} kept logging calls of run {run_id}; the MLflow run is complete")
    return 0


def _check_train_outputs(config) -> None:
    """The run folder, its checkpoints/ and a local sqlite store must be writable.

    Without this, MLflow retries a read-only sqlite store for ~2 minutes before failing.
    """
    from srunet.store import default_tracking_uri

    out = Path(config.out_dir)
    check_output_dir(out, may_exist=True, what="training run folder (--out)")
    check_output_dir(out / "checkpoints", may_exist=True, what="checkpoint folder")
    uri = config.tracking.tracking_uri or default_tracking_uri(out)
    if uri.startswith("sqlite:///"):
        store = Path(uri[len("sqlite:///"):])
        check_output_dir(store.parent, may_exist=True, what="MLflow store folder")
        if store.is_dir():
            raise IsADirectoryError(f"the MLflow store {store} is a folder, not a sqlite file; "
                                    "move it away or pass another --tracking-uri")
        if store.is_file() and not os.access(store, os.W_OK):
            raise PermissionError(f"the MLflow store {store} is read-only; fix its permissions "
                                  "(chmod u+w) or pass another --out / --tracking-uri")


def _calibration(args: argparse.Namespace):
    """The --calibration error bar with its --calibration-check coverages, or None."""
    if args.calibration is None:
        if args.calibration_check:
            raise ValueError("--calibration-check needs --calibration FILE")
        return None
    from srunet.evaluation.error_bar import add_checks
    from srunet.evaluation.uncertainty import load_calibration

    checks = {}
    for item in args.calibration_check:
        name, sep, folder = item.partition("=")
        if not (sep and name and folder):
            raise ValueError(f"--calibration-check {item!r}: expected NAME=REPORT_DIR, e.g. "
                             "test=runs/heldout_report")
        checks[name] = folder
    return add_checks(load_calibration(args.calibration), checks)


def _package(args: argparse.Namespace) -> int:
    if (args.out is None) == (not args.release):
        raise ValueError("give exactly one of --out DIR_OR_ZIP or --release")
    if args.release:
        root = _repo_root()
        if not (root / "pyproject.toml").is_file():
            raise ValueError(f"--release writes the repository's release, but srunet runs from "
                             f"an installed copy ({root}); run it from a source checkout or use "
                             "--out DIR_OR_ZIP")
        check_output_file(root / "rdf.yaml", overwrite=args.overwrite, what="release description")
        check_output_dir(root / "model" / "release", overwrite=args.overwrite,
                         what="release folder")
    elif args.out.suffix.lower() == ".zip":
        check_output_file(args.out, overwrite=args.overwrite, what="package zip (--out)")
    else:
        check_output_dir(args.out, overwrite=args.overwrite, what="package folder (--out)")
    from srunet.model.checkpoint import load_checkpoint
    from srunet.model.from_package import checkpoint_from_package
    from srunet.model.package import PROJECT_PUBLICATION, build_package, export_release
    from srunet.model.publication import load_publication

    publication = load_publication(args.publication or PROJECT_PUBLICATION)
    error_bar = _calibration(args)  # checked before the (slow) build
    if args.checkpoint.suffix.lower() in (".yaml", ".yml"):
        # Re-export a written package (e.g. the release with new metadata) from its weights.
        checkpoint = checkpoint_from_package(args.checkpoint)
    else:
        checkpoint = load_checkpoint(args.checkpoint)
    if error_bar is not None:
        checkpoint["error_bar"] = error_bar.model_dump()
    if args.release:
        path = export_release(checkpoint, _repo_root(), publication=publication,
                              overwrite=args.overwrite, run_test=not args.no_test)
    else:
        path = build_package(checkpoint, args.out, overwrite=args.overwrite,
                             run_test=not args.no_test, publication=publication)
    print(f"package written {'(not tested)' if args.no_test else 'and validated'}: {path}")
    missing = publication.missing_for_upload()
    if missing:
        print(f"before uploading to bioimage.io, add to {args.publication or PROJECT_PUBLICATION}: "
              + "; ".join(missing) + " (docs/packaging.md)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    check_output_dir(args.out, may_exist=True, what="prediction output folder (--out)")
    from srunet.model.predict import predict_files

    outputs = predict_files(args.inputs, model=args.model or default_model(), out_dir=args.out,
                            overwrite=args.overwrite, consistency=args.consistency,
                            uncertainty=args.uncertainty, weights_format=args.weights_format,
                            block_lr=args.block_lr)
    for path in outputs:
        print(path)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    check_output_dir(args.out, overwrite=args.overwrite, what="report folder (--out)")
    from srunet.model.predict import evaluate_package

    summary = evaluate_package(args.model or default_model(), lr_dir=args.lr, hr_dir=args.hr,
                       out_dir=args.out, tracking_uri=args.tracking_uri, overwrite=args.overwrite,
                       lr_repeat_dir=args.lr_repeat, hr_repeat_dir=args.hr_repeat,
                       uncertainty=not args.no_uncertainty, calibration=args.calibration)
    print(f"report: {summary}")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from srunet.registration import Limits, register_folder

    limits = Limits(min_overlap=args.min_overlap, min_correlation=args.min_correlation,
                    max_saturation=args.max_saturation)
    rows = register_folder(args.raw, args.out, overwrite=args.overwrite, limits=limits)
    for row in rows:
        if row.status != "ok":
            print(f"rejected: {row.reason}", file=sys.stderr)
    ok = sum(row.status == "ok" for row in rows)
    print(f"registered {ok} of {len(rows)} pairs into {args.out} (QC: {args.out / 'qc.csv'}, "
          f"figures: {args.out / 'figures'})")
    return 0


def _registry(args: argparse.Namespace) -> int:
    register = {"--package": args.package, "--run-id": args.run_id, "--name": args.name,
                "--metrics": args.metrics, "--alias": args.alias or None}
    if args.download is not None:
        given = [flag for flag, value in register.items() if value is not None]
        if given or args.out is None:
            raise ValueError("--download NAME@ALIAS_OR_VERSION takes --out DIR (and the store), "
                             f"not {', '.join(given) or 'nothing else'}")
    else:
        missing = [flag for flag in ("--package", "--run-id", "--name") if register[flag] is None]
        if missing or args.out is not None:
            raise ValueError("registry needs --package, --run-id and --name (missing: "
                             f"{', '.join(missing) or 'none'}); --out goes with --download")
    from srunet.model.registry import download_version, register_package, store_uri

    uri = store_uri(args.store, args.tracking_uri)
    if args.download is not None:
        path = download_version(args.download, args.out, tracking_uri=uri,
                                overwrite=args.overwrite)
        print(f"downloaded {args.download}: {path}")
        return 0
    done = register_package(args.package, run_id=args.run_id, name=args.name, tracking_uri=uri,
                            aliases=args.alias or (), metrics=args.metrics)
    print(f"registered {done.name} version {done.version} (aliases: "
          f"{', '.join(done.aliases) or 'none'}); parent: {done.tags['parent']}; files: "
          f"{done.source}")
    return 0


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
    p.add_argument("--domain", choices=("contract", "wide"), default="contract",
                   help="parameter draw: 'contract' (default; docs/acquisition.md's ranges, the "
                        "release's training data) or 'wide' (domain randomisation beyond them: "
                        "docs/acquisition.md, 'Wide domain (training v3)')")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("train", help="train the 2x UNet, tracked in MLflow",
                       epilog=f"exit status {EXIT_PENDING}: trained, but the MLflow server never "
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
    p.set_defaults(func=_train)

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
    p.set_defaults(func=_package)

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
                   "measured for the format: 512 onnx, 256 PyTorch); bounds memory")
    p.set_defaults(func=_predict)

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
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("pairs", help="register raw confocal/ISM pairs onto the exact 2x grid, with QC")
    p.add_argument("raw", type=Path, help="folder with lr/ and hr/ (raw pairs, paired by name)")
    p.add_argument("--out", type=Path, required=True, help="registered dataset folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--min-overlap", type=float, default=0.5, help="share of the LR field (0.5)")
    p.add_argument("--min-correlation", type=float, default=0.6,
                   help="Pearson after registration (0.6)")
    p.add_argument("--max-saturation", type=float, default=0.01,
                   help="share of pixels at the image maximum (0.01)")
    p.set_defaults(func=_pairs)

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
    p.set_defaults(func=_registry)
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
