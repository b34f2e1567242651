"""MLflow stores: the embedded default (sqlite beside a run's outputs), experiment look-up, and
the probe that makes an unreachable tracking server fail in seconds.

Shared by training runs and evaluation reports, so both put artifacts in the same place.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path


def default_tracking_uri(out_dir) -> str:
    """``sqlite:///<absolute out_dir>/mlflow.db``: no server needed."""
    return f"sqlite:///{(Path(out_dir).resolve() / 'mlflow.db').as_posix()}"


def experiment_id(client, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created if missing.

    With an embedded sqlite store the artifacts go to ``mlartifacts/`` beside the database, not
    into the current working directory (MLflow's default).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


PROBE_SECONDS = 3.0
# Bounded HTTP behaviour for MLflow's REST client (its defaults: 7 retries, 120 s timeout, which
# stall a run for minutes per call); set only where the user has not chosen values.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def probe(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None if the tracking server at ``uri`` answers ``/health``, else why not (one line)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            return None if reply.status == 200 else f"HTTP {reply.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (OSError, ValueError) as error:  # refused, DNS, timeout, bad URL
        return str(getattr(error, "reason", error))


def check_server(uri: str) -> None:
    """Raise ConnectionError (one line, with the fix) when ``uri`` is a server that does not
    answer; sets bounded HTTP retries/timeouts for MLflow's client."""
    if not is_server(uri):
        return
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    started = time.monotonic()
    why = probe(uri)
    if why is not None:
        raise ConnectionError(
            f"MLflow tracking server {uri} is unreachable ({why}, after "
            f"{time.monotonic() - started:.1f} s); start it (see README, 'Team tracking "
            "server') or drop --tracking-uri to log to the local sqlite store")
