"""MLflow tracking for training runs: embedded sqlite store by default, any URI otherwise.

Metrics are buffered and sent with one ``log_batch`` call per flush (once per validation), so
logging does not slow the training loop.

With a tracking server (``http(s)://``): the server is probed before anything else, so an
unreachable one fails in seconds with one line instead of MLflow's minutes of retries; a server
lost mid-run never stops training: every call that cannot be sent is kept (files copied under
``<out>/mlflow_pending/``), replayed in order when the server answers again (checked at each
flush, a 3 s probe) or at the end, and what could not be sent by then stays there, listed in
``pending.json``, which ``srunet train --resend-pending OUT`` (:func:`resend_pending`) replays.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from srunet.files import file_sha256
from srunet.store import check_server, default_tracking_uri, experiment_id, is_server, probe
from srunet.training.config import Config, flatten


def git_commit() -> str:
    """Commit of the srunet source tree (with '+dirty' if modified), or 'unknown'."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _transient(error: Exception) -> bool:
    """Network trouble (retry later) as opposed to a bad request (a bug: raise)."""
    text = str(error)
    return isinstance(error, OSError) or "API request to" in text or "Max retries" in text \
        or type(error).__module__.startswith(("requests", "urllib3"))


class _Resilient:
    """MlflowClient proxy: calls that fail for network reasons are queued, not raised.

    Once the server is lost, calls are queued without trying (no stall per call); ``retry``
    replays the queue in order when a probe says the server is back. Files given to
    ``log_artifact(s)`` are copied first: callers pass temporary files.
    """

    def __init__(self, client, uri: str, spool: Path):
        self._client, self._uri, self._spool = client, uri, spool
        self.pending: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if not callable(method) or not is_server(self._uri):
            return method

        def call(*args, **kwargs):
            if self.pending:  # keep the order: nothing overtakes queued calls
                return self._queue(name, args, kwargs)
            try:
                return method(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - classified just below
                if not _transient(error):
                    raise
                print(f"MLflow server {self._uri} lost ({type(error).__name__}); training "
                      f"continues, logging is kept in {self._spool} and sent when it is back",
                      file=sys.stderr)
                return self._queue(name, args, kwargs)
        return call

    def _queue(self, name: str, args: tuple, kwargs: dict) -> None:
        if name in ("log_artifact", "log_artifacts"):  # (run_id, local_path, artifact_path)
            source = Path(args[1])
            copy = self._spool / uuid.uuid4().hex[:12] / source.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copyfile)(source, copy)
            args = (args[0], str(copy), *args[2:])
        self.pending.append((name, args, kwargs))
        return None

    def retry(self) -> bool:
        """Send the queue if the server answers; True when nothing is left."""
        if not self.pending or probe(self._uri) is not None:
            return not self.pending
        while self.pending:
            name, args, kwargs = self.pending[0]
            try:
                getattr(self._client, name)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                if not _transient(error):
                    raise
                return False
            self.pending.pop(0)
        print(f"MLflow server {self._uri} is back: the kept logging was sent", file=sys.stderr)
        shutil.rmtree(self._spool, ignore_errors=True)
        return True

    def save_pending(self, run_id: str) -> Path:
        """Write what could not be sent to ``pending.json`` beside the kept files, in a form
        :func:`resend_pending` replays; returns its path."""
        return _write_pending(self._spool, self._uri, run_id, self.pending)


PENDING_FORMAT = 1


def _encode(value, spool: Path):
    """JSON form of one argument of an MlflowClient call (entities tagged by type)."""
    from mlflow.entities import Metric, Param, RunTag

    if isinstance(value, Metric):
        return {"__type__": "Metric", "fields": [value.key, value.value, value.timestamp,
                                                 value.step]}
    if isinstance(value, (Param, RunTag)):
        return {"__type__": type(value).__name__, "fields": [value.key, value.value]}
    if isinstance(value, (list, tuple)):
        return [_encode(item, spool) for item in value]
    if isinstance(value, dict):
        return {"__type__": "dict", "items": {k: _encode(v, spool) for k, v in value.items()}}
    if isinstance(value, str) and Path(value).is_relative_to(spool):  # a kept file: the run
        return {"__type__": "kept", "path": str(Path(value).relative_to(spool))}  # may move
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"__type__": "unreplayable", "repr": repr(value)[:2000]}


def _decode(value, spool: Path):
    from mlflow.entities import Metric, Param, RunTag

    if isinstance(value, list):
        return [_decode(item, spool) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value["__type__"]
    if kind == "dict":
        return {k: _decode(v, spool) for k, v in value["items"].items()}
    if kind == "kept":
        return str(spool / value["path"])
    if kind in ("Metric", "Param", "RunTag"):
        return {"Metric": Metric, "Param": Param, "RunTag": RunTag}[kind](*value["fields"])
    raise ValueError(f"{spool / 'pending.json'}: an argument cannot be replayed "
                     f"({value.get('repr', kind)}); send it by hand with MlflowClient")


def _write_pending(spool: Path, uri: str, run_id: str, calls: list) -> Path:
    spool.mkdir(parents=True, exist_ok=True)
    rows = [{"call": name, "args": [_encode(a, spool) for a in args],
             "kwargs": {k: _encode(v, spool) for k, v in kwargs.items()}}
            for name, args, kwargs in calls]
    target = spool / "pending.json"
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps({"format": PENDING_FORMAT, "tracking_uri": uri,
                                   "run_id": run_id, "calls": rows}, indent=1))
    os.replace(partial, target)  # atomic: a resend that stops half-way leaves a valid list
    return target


def resend_pending(run_dir: Path, tracking_uri: str | None = None) -> tuple[str, int]:
    """Send the logging calls a lost server never took (``run_dir/mlflow_pending/``), in
    order, and end the MLflow run if none of them did; returns (run id, calls sent).

    ``tracking_uri`` replaces the recorded server (it moved). Each sent call is dropped from
    ``pending.json`` at once, so an interrupted resend continues where it stopped; the folder
    goes once everything is sent.
    """
    from mlflow.tracking import MlflowClient

    spool = Path(run_dir) / "mlflow_pending"
    listing = spool / "pending.json"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} does not exist: nothing to resend for run folder "
                                f"{run_dir} (give the --out of the `srunet train` run)")
    saved = json.loads(listing.read_text())
    if not isinstance(saved, dict) or saved.get("format") != PENDING_FORMAT:
        raise ValueError(f"{listing} was written by an older srunet and lists the calls for "
                         "reading only; it cannot be replayed")
    uri, run_id = tracking_uri or saved["tracking_uri"], saved["run_id"]
    check_server(uri)  # one line in seconds if it is still away
    client = MlflowClient(uri)
    calls = [(row["call"], tuple(_decode(a, spool) for a in row["args"]),
              {k: _decode(v, spool) for k, v in row["kwargs"].items()}) for row in saved["calls"]]
    sent = 0
    while calls:
        name, args, kwargs = calls[0]
        getattr(client, name)(*args, **kwargs)
        calls.pop(0)
        sent += 1
        _write_pending(spool, saved["tracking_uri"], run_id, calls)
    if client.get_run(run_id).info.status == "RUNNING":  # the end itself was sent earlier
        client.set_terminated(run_id, status="FINISHED")
    shutil.rmtree(spool)
    return run_id, sent


class Tracker:
    """One MLflow run; resumes the same run when ``run_id`` is given."""

    END_RETRIES, END_WAIT_S = 3, 2.0  # bounded wait for a lost server at the end of a run

    def __init__(self, config: Config, out_dir: Path, run_id: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = config.tracking.tracking_uri or default_tracking_uri(out_dir)
        check_server(self.uri)
        mlflow.set_tracking_uri(self.uri)
        self.client = _Resilient(MlflowClient(self.uri), self.uri,
                                 Path(out_dir) / "mlflow_pending")
        if run_id is None:
            experiment = experiment_id(self.client, config.tracking.experiment, self.uri)
            run = self.client.create_run(experiment, run_name=config.tracking.run_name)
            self.run_id = run.info.run_id
            params = flatten(config)
            from mlflow.entities import Param

            items = [Param(k, v[:6000]) for k, v in params.items()]
            for start in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[start:start + 100])
            self.client.set_tag(self.run_id, "git_commit", git_commit())
            self.client.set_tag(self.run_id, "seed", str(config.seed))
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        self._buffer: list = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), stamp, step) for k, v in metrics.items())

    def flush(self) -> None:
        self.client.retry()  # a 3 s probe at most, and only while something is queued
        for start in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.run_id, metrics=self._buffer[start:start + 1000])
        self._buffer = []

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, payload: dict, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / name
            target.write_text(json.dumps(payload, indent=2))
            self.log_artifact(target)

    def log_data_digests(self, files: list[Path]) -> str:
        """sha256 of every training file (artifact) and of their list (tag); returns the latter."""
        digests = {str(p): file_sha256(p) for p in files}
        combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(digests.items()))
                                  .encode()).hexdigest()
        self.log_json({"combined_sha256": combined, "files": digests}, "data_digests.json")
        self.client.set_tag(self.run_id, "data_sha256", combined)
        return combined

    def end(self, status: str = "FINISHED") -> int:
        """Flush, end the run, and wait (bounded) for a lost server to take the queue; returns
        how many calls it never took (kept for :func:`resend_pending`)."""
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
        for attempt in range(self.END_RETRIES):
            if self.client.retry():
                return 0
            time.sleep(self.END_WAIT_S)
        listing = self.client.save_pending(self.run_id)
        print(f"MLflow server {self.uri} did not come back: {len(self.client.pending)} logging "
              f"calls of run {self.run_id} were not sent; they are kept in {listing} "
              f"(checkpoints are in the run folder)", file=sys.stderr)
        return len(self.client.pending)
