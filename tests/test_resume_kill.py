"""Crash safety: ``kill -9`` of a real ``srunet train`` process mid-run, then ``--resume``,
ends bit-identical to an uninterrupted run (CPU)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from srunet.model.checkpoint import load_checkpoint

TINY = ["model.depth=1", "model.base_channels=4", "data.tile_size=16", "data.tiles_per_epoch=64",
        "train.batch_size=8", "train.epochs=6", "train.warmup_steps=2", "data.val_fraction=0.25",
        "train.threads=1", "train.preview_every=100"]


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    from srunet.simulation.simulator import simulate_dataset

    root = tmp_path_factory.mktemp("sim") / "pairs"
    simulate_dataset(root, pairs=4, seed=77, workers=1)
    return root


def train_cmd(data, out, *extra):
    return [sys.executable, "-m", "srunet", "train", "--data", str(data), "--out", str(out),
            *TINY, *extra]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(sim_data, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    whole = tmp_path / "whole"
    subprocess.run(train_cmd(sim_data, whole), check=True, timeout=600, env=env,
                   capture_output=True)

    cut = tmp_path / "cut"
    last = cut / "checkpoints" / "last.pt"
    proc = subprocess.Popen(train_cmd(sim_data, cut), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert last.exists(), "no checkpoint appeared"
        assert proc.poll() is None, "the run ended before it could be killed; raise train.epochs"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["step"]
    assert 0 < killed_at < 6 * 8  # the run was cut before its end

    subprocess.run(train_cmd(sim_data, cut, "--resume", str(last)), check=True, timeout=600,
                   env=env, capture_output=True)
    a = load_checkpoint(whole / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a["step"] == b["step"] == 6 * 8
    assert_same_state(a["model_state"], b["model_state"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_state({k: torch.as_tensor(v) for k, v in sa.items()},
                          {k: torch.as_tensor(v) for k, v in sb.items()})
    assert a["metrics"]["val_psnr"] == b["metrics"]["val_psnr"]
    assert_same_state(load_checkpoint(whole / "checkpoints" / "best.pt")["model_state"],
                      load_checkpoint(cut / "checkpoints" / "best.pt")["model_state"])

    # The resumed process continued the killed process's MLflow run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cut / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("srunet").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert any(k.startswith("resumed_at_step_") for k in runs[0].data.tags)
