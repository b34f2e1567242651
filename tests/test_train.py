"""Training end to end on tiny simulated data: MLflow run contents, exact resume."""

import pytest
import torch

from srunet.model.checkpoint import build_model, load_checkpoint
from srunet.training.config import flatten, load_config
from srunet.training.train import train

TINY = ["model.depth=2", "model.base_channels=8", "data.tile_size=32", "data.tiles_per_epoch=8",
        "train.batch_size=4", "train.warmup_steps=1", "data.val_fraction=0.25", "train.threads=2"]


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    from srunet.simulation.simulator import simulate_dataset

    root = tmp_path_factory.mktemp("sim") / "pairs"
    simulate_dataset(root, pairs=4, seed=1234, workers=2)
    return root


def run(sim_data, out, *extra, resume=None):
    config = load_config(None, TINY + list(extra), data_dir=sim_data, out_dir=out)
    return config, train(config, resume=resume)


def test_two_step_run_is_tracked_in_mlflow(sim_data, tmp_path):
    from mlflow.tracking import MlflowClient

    config, result = run(sim_data, tmp_path / "run", "train.max_steps=2")
    assert result.tracking_uri == f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}"
    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name("srunet")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == result.run_id
    logged = runs[0]
    assert logged.data.params == flatten(config)  # the whole config, as params
    for key in ("val_psnr", "val_ssim", "val_accuracy", "val_bicubic_psnr", "val_bicubic_accuracy",
                "train_loss"):
        assert key in logged.data.metrics
    assert logged.data.tags["seed"] == str(config.seed)
    assert len(logged.data.tags["data_sha256"]) == 64
    assert logged.data.tags["git_commit"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "checkpoints")}
    assert "checkpoints/best.pt" in artifacts
    assert {a.path for a in client.list_artifacts(result.run_id, "previews")}
    report = {a.path for a in client.list_artifacts(result.run_id, "validation_report")}
    assert {"validation_report/report.json", "validation_report/summary.md"} <= report
    local = client.download_artifacts(result.run_id, "checkpoints/best.pt", str(tmp_path))
    checkpoint = load_checkpoint(local)
    assert checkpoint["step"] == 2 and checkpoint["model_kwargs"]["depth"] == 2
    assert checkpoint["normalization"] == {"method": "mean_std", "eps": 1e-6}  # the default
    model = build_model(checkpoint)
    assert model(torch.zeros(1, 1, 9, 11)).shape == (1, 1, 18, 22)


def test_resume_equals_uninterrupted_training(sim_data, tmp_path):
    _, whole = run(sim_data, tmp_path / "whole", "train.epochs=2")  # 2 steps per epoch
    _, cut = run(sim_data, tmp_path / "cut", "train.epochs=2", "train.max_steps=3")  # mid-epoch 2
    _, resumed = run(sim_data, tmp_path / "cut", "train.epochs=2",
                     resume=tmp_path / "cut" / "checkpoints" / "last.pt")
    a, b = load_checkpoint(whole.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["step"] == b["step"] == 4
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    # the resumed run continues the same MLflow run and records what changed
    assert resumed.run_id == cut.run_id
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(resumed.tracking_uri).get_run(resumed.run_id).data.tags
    assert tags["resumed_at_step_3"] == "train.max_steps: 3 -> None"


def test_resume_refuses_a_different_config(sim_data, tmp_path):
    _, first = run(sim_data, tmp_path / "r", "train.max_steps=1")
    with pytest.raises(ValueError, match="model.base_channels: 8 -> 4"):
        run(sim_data, tmp_path / "r", "model.base_channels=4", resume=first.last_checkpoint)


def test_fine_tuning_starts_from_the_given_weights(sim_data, tmp_path):
    _, first = run(sim_data, tmp_path / "a", "train.max_steps=2")
    start = load_checkpoint(first.best_checkpoint)["model_state"]
    # A learning rate of 1e-12 leaves the weights where they started: at the checkpoint's.
    _, tuned = run(sim_data, tmp_path / "b", "train.max_steps=1", "train.loss=mse",
                   "train.learning_rate=1e-12", f"train.init_from={first.best_checkpoint}")
    _, fresh = run(sim_data, tmp_path / "c", "train.max_steps=1", "train.loss=mse",
                   "train.learning_rate=1e-12", "seed=7")
    tuned_state = load_checkpoint(tuned.last_checkpoint)["model_state"]
    fresh_state = load_checkpoint(fresh.last_checkpoint)["model_state"]
    for key, value in start.items():
        assert torch.allclose(value, tuned_state[key], atol=1e-6), key
    assert not all(torch.allclose(v, fresh_state[k], atol=1e-6) for k, v in start.items())
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tuned.tracking_uri).get_run(tuned.run_id).data.tags
    assert len(tags["init_from_sha256"]) == 64


def test_fine_tuning_from_a_missing_file_says_where_it_looked(sim_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"init_from=model/release/weights.pt: no such file.*"
                                                r"current folder"):
        run(sim_data, tmp_path / "a", "train.init_from=model/release/weights.pt")
    assert not (tmp_path / "a").exists()  # refused before anything was written


def test_fine_tuning_refuses_another_architecture(sim_data, tmp_path):
    _, first = run(sim_data, tmp_path / "a", "train.max_steps=1")
    with pytest.raises(ValueError, match="base_channels.: 8.*make them equal"):
        run(sim_data, tmp_path / "b", "model.base_channels=4",
            f"train.init_from={first.best_checkpoint}")


def test_fine_tuning_from_a_bare_state_dict_checks_shapes(sim_data, tmp_path):
    _, first = run(sim_data, tmp_path / "a", "train.max_steps=1")
    bare = tmp_path / "weights.pt"  # what a package holds as pytorch_state_dict
    torch.save(load_checkpoint(first.best_checkpoint)["model_state"], bare)
    _, tuned = run(sim_data, tmp_path / "b", "train.max_steps=1", "train.learning_rate=1e-12",
                   f"train.init_from={bare}")
    tuned_state = load_checkpoint(tuned.last_checkpoint)["model_state"]
    for key, value in torch.load(bare, weights_only=True).items():
        assert torch.allclose(value, tuned_state[key], atol=1e-6), key
    with pytest.raises(ValueError, match="does not fit the model section"):
        run(sim_data, tmp_path / "c", "model.base_channels=4", f"train.init_from={bare}")


def test_step_validation_and_wall_clock_budget(sim_data, tmp_path):
    """train.val_every validates between epoch ends; train.max_minutes ends the schedule early
    (fitted after the first validation) and the loop reports where its wall time went."""
    _, result = run(sim_data, tmp_path / "budget", "train.epochs=50", "train.val_every=1",
                    "train.max_minutes=0.05")
    checkpoint = load_checkpoint(result.last_checkpoint)
    assert 1 <= checkpoint["step"] < 100  # 50 epochs x 2 steps configured, 3 s allowed
    assert checkpoint["state"]["budget_fitted"]
    assert checkpoint["state"]["schedule_total"] == checkpoint["step"]
    shares = result.time_shares
    assert set(shares) == {"time_share_steps", "time_share_data", "time_share_validation"}
    assert abs(sum(shares.values()) - 1) < 1e-6 and shares["time_share_validation"] > 0
