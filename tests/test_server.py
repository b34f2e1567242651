"""A real MLflow tracking server on 127.0.0.1 (sqlite backend, artifact serving): a training run
against it, a server that is not there, and a server lost in the middle of a run."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from srunet.training.config import load_config
from srunet.training.tracking import Tracker, probe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` in its own process group, stopped by its PID (bounded waits)."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.proc = root, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 90.0) -> "Server":
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination",
             str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while probe(self.uri, timeout=1) is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start: {self.root / 'server.log'}")
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group: uvicorn's worker too
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, free_port()).start()
    try:
        yield srv
    finally:
        srv.stop()


# Bounds on wall time below are far from what they guard against (MLflow's own retries take
# about 2 minutes) and far above the unloaded times (1-3 s), so a busy machine does not fail them.
FAILS_WITHIN_S = 30
BUFFERS_WITHIN_S = 60


@pytest.mark.slow
def test_training_against_a_real_server(server, sim_data, tiny_training, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "srunet", "train", "--data", str(sim_data),
                           "--out", str(out), "--tracking-uri", server.uri, *tiny_training],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "mlflow.db").exists()  # nothing went to the local store
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("srunet").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "val_psnr" in runs[0].data.metrics and len(runs[0].data.tags["data_sha256"]) == 64
    paths = {a.path for a in client.list_artifacts(runs[0].info.run_id, "checkpoints")}
    assert paths == {"checkpoints/best.pt"}
    local = client.download_artifacts(runs[0].info.run_id, "checkpoints/best.pt", str(tmp_path))
    assert Path(local).read_bytes() == (out / "checkpoints" / "best.pt").read_bytes()
    # Served artifacts: stored under --artifacts-destination, not in the client's folder.
    assert list((server.root / "artifacts").rglob("best.pt"))


def test_unreachable_server_fails_in_seconds(sim_data, tiny_training, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "srunet", "train", "--data", str(sim_data),
                           "--out", str(tmp_path / "run"), "--tracking-uri", uri, *tiny_training],
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2 and elapsed < FAILS_WITHIN_S, (elapsed, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and uri in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
def test_server_lost_mid_run_is_buffered_and_sent_later(server, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    config = load_config(None, ["tracking.experiment=lost"], out_dir=tmp_path / "run",
                         tracking_uri=server.uri)
    tracker = Tracker(config, tmp_path / "run")
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.flush()
    server.stop()

    started = time.monotonic()
    tracker.log_metrics({"loss": 0.5}, step=2)
    tracker.flush()  # must not raise nor stall
    note = tmp_path / "note.txt"
    note.write_text("kept")
    tracker.log_artifact(note, "notes")
    note.unlink()  # the caller's temporary file is gone; the tracker kept a copy
    tracker.client.set_tag(tracker.run_id, "late", "yes")
    assert time.monotonic() - started < BUFFERS_WITHIN_S
    assert len(tracker.client.pending) == 3
    assert "lost" in capsys.readouterr().err

    server.start()
    tracker.end()
    assert not tracker.client.pending and "is back" in capsys.readouterr().err
    client = MlflowClient(server.uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["late"] == "yes"
    assert [m.value for m in client.get_metric_history(tracker.run_id, "loss")] == [1.0, 0.5]
    assert {a.path for a in client.list_artifacts(tracker.run_id, "notes")} == {"notes/note.txt"}
    assert not (tmp_path / "run" / "mlflow_pending").exists()


@pytest.mark.slow
def test_server_that_never_returns_leaves_a_local_list(server, tmp_path, capsys, monkeypatch):
    config = load_config(None, [], out_dir=tmp_path / "run", tracking_uri=server.uri)
    tracker = Tracker(config, tmp_path / "run")
    server.stop()
    monkeypatch.setattr(Tracker, "END_WAIT_S", 0.1)
    tracker.log_metrics({"loss": 0.5}, step=2)
    started = time.monotonic()
    tracker.end()
    assert time.monotonic() - started < BUFFERS_WITHIN_S
    pending = tmp_path / "run" / "mlflow_pending" / "pending.json"
    assert pending.exists() and "log_batch" in pending.read_text()
    assert "did not come back" in capsys.readouterr().err

    # The server comes back: one command sends the kept calls and the run is finished.
    from mlflow.tracking import MlflowClient

    from srunet.cli import main

    server.start()
    assert MlflowClient(server.uri).get_run(tracker.run_id).info.status == "RUNNING"
    assert main(["train", "--resend-pending", str(tmp_path / "run")]) == 0
    assert tracker.run_id in capsys.readouterr().out
    client = MlflowClient(server.uri)
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(tracker.run_id, "loss")] == [0.5]
    assert not pending.parent.exists()  # nothing left to send
    assert main(["train", "--resend-pending", str(tmp_path / "run")]) == 2  # said, not crashed
    assert "nothing to resend" in capsys.readouterr().err


def test_run_with_unsent_logging_exits_3_and_says_so_last(sim_data, tmp_path, capsys,
                                                           monkeypatch):
    """A finished run whose server never took its logging: exit status 3 (commands.EXIT_PENDING)
    and a last line naming the command that sends it."""
    import srunet.training.train as train_module
    from srunet.cli import main
    from srunet.commands import EXIT_PENDING
    from srunet.training.train import TrainResult

    def trained(config, **kwargs):
        return TrainResult("http://127.0.0.1:1", "abc123", tmp_path / "best.pt",
                           tmp_path / "last.pt", {}, {}, pending=4)

    monkeypatch.setattr(train_module, "train", trained)
    code = main(["train", "--data", str(sim_data), "--out", str(tmp_path / "run")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == EXIT_PENDING == 3
    assert "4 logging calls of run abc123" in last and "RUNNING" in last
    assert f"srunet train --resend-pending {tmp_path / 'run'}" in last
