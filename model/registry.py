"""MLflow model registry: a package built from a tracked run becomes a registered model version.

``srunet registry`` logs the package to its training run (``package/<sha256[:12]>/``: the zip the
zoo takes, ``package.zip``, and its ``rdf.yaml`` for reading in the UI) and registers that folder
as a new version of a named model, with its lineage as version tags:

==================  ==========================================================================
``run_id``          the training run
``git_commit``      the source tree the run trained with (run tag)
``data_sha256``     the digest of the training files (run tag)
``package_sha256``  sha256 of ``package.zip``
``weights_sha256``  sha256 of the package's ``weights.pt``; fine-tunes find their parent by it
``parent``          ``NAME/VERSION`` of the registered version whose ``weights.pt`` the run
                    started from (``train.init_from``), else that file's sha256, else ``none``
``heldout_*``       the overall numbers of a ``srunet evaluate`` report (``--metrics``)
==================  ==========================================================================

Every input is checked before anything is written; aliases (MLflow 3: instead of stages) move
to the new version. :func:`download_version` fetches a version's files back.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from srunet.files import check_output_dir, file_sha256, swap_into_place
from srunet.store import check_server, default_tracking_uri

ARTIFACT_DIR = "package"
ZIP_NAME = "package.zip"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
RUN_TAGS = ("git_commit", "data_sha256")  # set by every `srunet train` run (training/tracking.py)


@dataclass(frozen=True)
class Registered:
    """A registered model version."""

    name: str
    version: int
    aliases: tuple[str, ...]
    source: str
    tags: dict


def store_uri(store=None, tracking_uri: str | None = None) -> str:
    """The tracking URI from ``--store RUN_DIR`` (its ``mlflow.db``) or ``--tracking-uri``.

    Raises
    ------
    ValueError
        Neither or both given.
    """
    if (store is None) == (tracking_uri is None):
        raise ValueError("give the MLflow store that holds the run: --store RUN_DIR (the folder "
                         "`srunet train --out` wrote, with mlflow.db) or --tracking-uri URI")
    if tracking_uri is not None:
        return tracking_uri
    store = Path(store)
    if store.suffix == ".db" and not store.is_dir():
        return f"sqlite:///{store.resolve().as_posix()}"
    return default_tracking_uri(store)


def open_store(uri: str):
    """An ``MlflowClient`` on an existing store; one-line errors instead of a new empty store.

    Raises
    ------
    FileNotFoundError
        A sqlite store that does not exist (MLflow would silently create it).
    ConnectionError
        A tracking server that does not answer.
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise FileNotFoundError(f"no MLflow store at {db}: pass the run folder of "
                                    "`srunet train` (--store RUN_DIR, it holds mlflow.db) or the "
                                    "--tracking-uri the run was logged to")

    check_server(uri)  # an unreachable server fails in seconds, not after minutes of retries
    from mlflow import MlflowClient

    return MlflowClient(uri)


def check_name(name: str) -> str:
    """A registered model name MLflow accepts (and ``models:/NAME/...`` URIs can hold)."""
    if not name or not name.strip() or "/" in name or ":" in name or "@" in name:
        raise ValueError(f"model name {name!r} is not allowed: use a non-empty name without "
                         "'/', ':' or '@', e.g. srunet-kidney")
    return name


def check_alias(alias: str) -> str:
    """An alias MLflow accepts: letters, digits, '_' and '-'; not 'latest' nor 'v<number>'."""
    if (not alias or not all(c.isalnum() or c in "_-" for c in alias) or alias.isdigit()
            or alias.lower() == "latest" or (alias[:1] in "vV" and alias[1:].isdigit())):
        raise ValueError(f"alias {alias!r} is not allowed: use letters, digits, '_' and '-' "
                         "(not only digits, not 'latest' or 'v<number>'), e.g. champion")
    return alias


def heldout_tags(report_json) -> dict[str, str]:
    """``heldout_*`` version tags from a ``srunet evaluate`` ``report.json``.

    The names are those ``srunet evaluate`` logs as MLflow metrics (``model_psnr``,
    ``bicubic_psnr_fg``, ...), plus ``heldout_psnr_gain`` (model minus bicubic PSNR, dB) and the
    report's sha256.

    Raises
    ------
    FileNotFoundError, ValueError
        No file, or not a report of ``srunet evaluate``.
    """
    from srunet.evaluation.report import flat_metrics  # the names evaluate logs to MLflow

    path = Path(report_json)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist; pass the report.json that "
                                "`srunet evaluate --out REPORT_DIR` wrote (REPORT_DIR/report.json)")
    try:
        overall = json.loads(path.read_text(encoding="utf-8"))["overall"]
        flat = flat_metrics(overall)
        gain = overall["model"]["whole"]["psnr"] - overall["bicubic"]["whole"]["psnr"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"metrics file {path} is not a report.json of `srunet evaluate` (no "
                         "'overall' model/bicubic numbers); pass REPORT_DIR/report.json") from None
    tags = {f"heldout_{key}": f"{value:.6g}" for key, value in flat.items()}
    if math.isfinite(gain):
        tags["heldout_psnr_gain"] = f"{gain:.6g}"
    tags["heldout_report_sha256"] = file_sha256(path)
    return tags


def _stage_package(package: Path, stage: Path) -> None:
    """Write ``package.zip`` and ``rdf.yaml`` of a zip or flat package folder into ``stage``."""
    from srunet.model.export import WEIGHT_FILES
    from srunet.model.zoo_format import zip_folder

    if package.is_dir():
        if not (package / WEIGHT_FILES["pytorch_state_dict"]).is_file():
            # e.g. the repository root: its rdf.yaml points into model/release/
            raise ValueError(f"{package} is not a flat package folder (no "
                             f"{WEIGHT_FILES['pytorch_state_dict']} beside rdf.yaml); register "
                             "the zip of `srunet package --checkpoint RDF_OR_CKPT --out PKG.zip`")
        zip_folder(package, stage / ZIP_NAME)  # the zip is what the zoo takes
        shutil.copyfile(package / "rdf.yaml", stage / "rdf.yaml")
        return
    shutil.copyfile(package, stage / ZIP_NAME)
    with zipfile.ZipFile(package) as archive:
        name = next(n for n in RDF_NAMES if n in archive.namelist())  # load_model found one
        (stage / "rdf.yaml").write_bytes(archive.read(name))


def _package_path(package) -> Path:
    path = Path(package)
    if path.is_file() and path.name in RDF_NAMES:
        return path.parent
    if path.is_file() and path.suffix.lower() != ".zip":
        raise ValueError(f"{path} is neither a package folder nor a .zip; pass what "
                         "`srunet package --out` wrote")
    return path


def _training_run(client, run_id: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"run {run_id!r} is not in the MLflow store {uri}; pass the run id "
                         "and store `srunet train` printed ('MLflow store: URI (run ID)')") from None
    if run.info.lifecycle_stage == "deleted":
        raise ValueError(f"run {run_id} in {uri} is deleted; restore it (mlflow runs restore "
                         f"--run-id {run_id}) or register another run")
    missing = [tag for tag in RUN_TAGS if tag not in run.data.tags]
    if missing:
        raise ValueError(f"run {run_id} in {uri} has no {', '.join(missing)} tag: it is not a "
                         "`srunet train` run; pass the run that trained the packaged checkpoint")
    return run


def _parent(client, init_sha: str | None) -> str:
    """``NAME/VERSION`` of the registered version with these weights, else the sha256, or none."""
    if not init_sha:
        return "none"
    found = client.search_model_versions(f"tags.weights_sha256 = '{init_sha}'")
    if not found:
        return init_sha
    first = min(found, key=lambda v: (v.creation_timestamp, int(v.version)))
    return f"{first.name}/{first.version}"


def register_package(package, *, run_id: str, name: str, tracking_uri: str,
                     aliases=(), metrics=None) -> Registered:
    """Log a package to its training run and register it as a new version of ``name``.

    Parameters
    ----------
    package : path
        Package folder, its ``rdf.yaml``, or ``.zip``, as ``srunet package`` wrote it.
    run_id : str
        The ``srunet train`` run whose checkpoint was packaged.
    name : str
        Registered model name (created if missing).
    tracking_uri : str
        The store holding the run (see :func:`store_uri`).
    aliases : iterable of str
        Aliases to move to the new version (e.g. ``champion``).
    metrics : path, optional
        ``report.json`` of ``srunet evaluate`` on held-out data, stored as ``heldout_*`` tags.

    Returns
    -------
    Registered

    Raises
    ------
    FileNotFoundError, ValueError, ConnectionError
        Bad input, one line each; raised before anything is written.
    """
    from srunet.model.predictor import load_model

    check_name(name)
    aliases = tuple(dict.fromkeys(check_alias(a) for a in aliases))
    tags = heldout_tags(metrics) if metrics is not None else {}
    path = _package_path(package)
    descr = load_model(path)  # raises on a missing or invalid package
    weights_sha = descr.weights.pytorch_state_dict and descr.weights.pytorch_state_dict.sha256
    if not weights_sha:
        raise ValueError(f"package {path} has no pytorch_state_dict weights with a sha256; "
                         "rebuild it with `srunet package`")
    client = open_store(tracking_uri)
    run = _training_run(client, run_id, tracking_uri)
    init_sha = run.data.tags.get("init_from_sha256")
    tags.update(run_id=run_id, git_commit=run.data.tags["git_commit"],
                data_sha256=run.data.tags["data_sha256"], weights_sha256=str(weights_sha),
                parent=_parent(client, init_sha))
    if init_sha:
        tags["parent_sha256"] = init_sha

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="srunet-register-") as tmp:
        stage = Path(tmp)
        _stage_package(path, stage)
        package_sha = file_sha256(stage / ZIP_NAME)
        tags["package_sha256"] = package_sha
        # One folder per package content: registering another package from the same run never
        # overwrites the files an earlier version points to.
        artifact_path = f"{ARTIFACT_DIR}/{package_sha[:12]}"
        client.log_artifacts(run_id, str(stage), artifact_path)
    source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="srunet 2x super-resolution "
                                       "(bioimage.io package); lineage in the version tags")
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                          description=str(descr.name))
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return Registered(name, int(version.version), aliases, source, tags)


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME@ALIAS`` or ``NAME@VERSION`` -> (name, alias or version)."""
    name, sep, which = ref.rpartition("@")
    if not sep or not name or not which:
        raise ValueError(f"--download {ref!r}: write NAME@ALIAS or NAME@VERSION, e.g. "
                         "srunet-kidney@champion or srunet-kidney@3")
    return check_name(name), which


def download_version(ref: str, out, *, tracking_uri: str, overwrite: bool = False) -> Path:
    """Download a registered version's files into the folder ``out``; returns its zip.

    ``out`` gets ``package.zip`` (loadable, checked here), ``rdf.yaml`` and ``registry.json``
    (name, version, aliases, tags, source). It is written beside itself and renamed into place
    once complete, so it never holds a partial download.

    Raises
    ------
    FileExistsError, ValueError, ...
        ``out`` not empty without ``overwrite``; no such model, version or alias.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from srunet.model.predictor import load_model

    name, which = parse_ref(ref)
    out = Path(out)
    check_output_dir(out, overwrite=overwrite, what="download folder (--out)")
    client = open_store(tracking_uri)
    try:
        version = (client.get_model_version(name, which) if which.isdigit()
                   else client.get_model_version_by_alias(name, which))
    except MlflowException:
        raise ValueError(f"{ref}: no such registered model version or alias in {tracking_uri}; "
                         f"see the versions with `mlflow ui --backend-store-uri {tracking_uri}`"
                         ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.download-"))
    try:
        uri = client.get_model_version_download_uri(name, version.version)
        # a folder URI arrives as a subfolder named like it: that subfolder becomes ``out``
        tmp = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging),
                                                       tracking_uri=tracking_uri))
        if not (tmp / ZIP_NAME).is_file():
            raise FileNotFoundError(f"{name} version {version.version} ({uri}) holds no "
                                    f"{ZIP_NAME}: it was not registered by `srunet registry`")
        load_model(tmp / ZIP_NAME)  # a broken download fails here, not in the user's predict
        (tmp / "registry.json").write_text(json.dumps(
            {"name": name, "version": int(version.version), "aliases": list(version.aliases),
             "run_id": version.run_id, "source": version.source, "tags": dict(version.tags)},
            indent=2))
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / ZIP_NAME
