"""MLflow stores: the embedded default (sqlite beside a run's outputs) and experiment look-up.

Shared by training runs and evaluation reports, so both put artifacts in the same place.
"""

from __future__ import annotations

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
