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

# The kill comes when the first checkpoint (step 8) appears; the run then has 192 steps and 24
# checkpoints to go, seconds even unloaded, so the test process would have to be starved for
# all of that to miss it (it then fails saying so, it does not pass by luck).
LENGTH = ["train.batch_size=8", "train.max_steps=200", "train.val_every=8",
          "train.preview_every=100"]
STEPS = 200


def train_cmd(data, out, tiny, *extra):
    return [sys.executable, "-m", "srunet", "train", "--data", str(data), "--out", str(out),
            *tiny, *LENGTH, *extra]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(sim_data, tiny_training, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    whole = tmp_path / "whole"
    subprocess.run(train_cmd(sim_data, whole, tiny_training), check=True, timeout=600, env=env,
                   capture_output=True)

    cut = tmp_path / "cut"
    last = cut / "checkpoints" / "last.pt"
    proc = subprocess.Popen(train_cmd(sim_data, cut, tiny_training), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300  # start-up only: not a timing assumption
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert last.exists(), "no checkpoint appeared"
        assert proc.poll() is None, "the run ended before it could be killed; raise LENGTH"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["step"]
    assert 0 < killed_at < STEPS  # the run was cut before its end

    subprocess.run(train_cmd(sim_data, cut, tiny_training, "--resume", str(last)), check=True,
                   timeout=600, env=env, capture_output=True)
    a = load_checkpoint(whole / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a["step"] == b["step"] == STEPS
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
