"""MLflow tracking for training runs: embedded sqlite store by default, any URI otherwise.

Metrics are buffered and sent with one ``log_batch`` call per flush (once per epoch), so logging
does not slow the training loop.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from pathlib import Path

from srunet.files import file_sha256
from srunet.store import default_tracking_uri, experiment_id
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


class Tracker:
    """One MLflow run; resumes the same run when ``run_id`` is given."""

    def __init__(self, config: Config, out_dir: Path, run_id: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = config.tracking.tracking_uri or default_tracking_uri(out_dir)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
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

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
