"""What each ``srunet`` subcommand does once its arguments are parsed (:mod:`srunet.cli`).

One function per subcommand, taking the parsed ``argparse.Namespace`` and returning the exit
status. Each imports its (heavy) module inside the function, so parsing and ``--help`` stay
fast; output locations are checked before any work starts.
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


def simulate(args: argparse.Namespace) -> int:
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


def train(args: argparse.Namespace) -> int:
    if args.resend_pending is not None:
        return resend(args)
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


def resend(args: argparse.Namespace) -> int:
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


def package(args: argparse.Namespace) -> int:
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


def predict(args: argparse.Namespace) -> int:
    check_output_dir(args.out, may_exist=True, what="prediction output folder (--out)")
    from srunet.model.predict import predict_files

    outputs = predict_files(args.inputs, model=args.model or default_model(), out_dir=args.out,
                            overwrite=args.overwrite, consistency=args.consistency,
                            uncertainty=args.uncertainty, weights_format=args.weights_format,
                            block_lr=args.block_lr)
    for path in outputs:
        print(path)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    check_output_dir(args.out, overwrite=args.overwrite, what="report folder (--out)")
    from srunet.model.predict import evaluate_package

    summary = evaluate_package(args.model or default_model(), lr_dir=args.lr, hr_dir=args.hr,
                       out_dir=args.out, tracking_uri=args.tracking_uri, overwrite=args.overwrite,
                       lr_repeat_dir=args.lr_repeat, hr_repeat_dir=args.hr_repeat,
                       uncertainty=not args.no_uncertainty, calibration=args.calibration)
    print(f"report: {summary}")
    return 0


def pairs(args: argparse.Namespace) -> int:
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


def registry(args: argparse.Namespace) -> int:
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
