"""Typed config: defaults valid, unknown keys rejected, bad values echoed with their file."""

import pytest

from srunet.training.config import Config, flatten, load_config


def test_defaults_and_overrides(tmp_path):
    config = load_config(None, ["train.epochs=3", "model.depth=2"], data_dir=tmp_path)
    assert config.train.epochs == 3 and config.model.depth == 2
    assert config.data.folders() == (tmp_path / "lr", tmp_path / "hr")
    assert flatten(config)["train.epochs"] == "3"


def test_yaml_file_and_errors_name_file_key_and_value(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 2\n  learnin_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"cfg\.yaml[\s\S]*train\.learnin_rate"):
        load_config(path)
    path.write_text("data:\n  tile_size: 50\n")
    with pytest.raises(ValueError, match=r"data\.tile_size[\s\S]*got 50"):
        load_config(path)
    path.write_text("model:\n  channel_growth: -2\n")
    with pytest.raises(ValueError, match=r"model\.channel_growth[\s\S]*given: -2"):
        load_config(path)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config(None, ["train.epochs"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_missing_data_is_explained():
    with pytest.raises(ValueError, match="--data"):
        Config().data.folders()


def test_release_config_is_valid_and_describes_the_released_network():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "training" / "kidney.yaml")
    assert config.train.max_minutes is None  # a fixed schedule: the same steps on any machine
    assert config.train.schedule_steps == config.train.max_steps
    released = yaml.safe_load((root / "rdf.yaml").read_text())
    kwargs = released["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs == config.model.model_dump()
    steps = [p["id"] for p in released["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]
    assert steps == ["zero_mean_unit_variance"] and config.data.normalization == "mean_std"


def test_fine_tuning_recipe_fits_the_release(monkeypatch):
    """training/finetune.yaml (the README recipe, bench/finetune.py) starts from the committed
    release weights: same model section, same normalisation, and the weights load into it."""
    from pathlib import Path

    import torch
    import yaml

    from srunet.model.unet import SRUNet
    from srunet.training.resume import load_initial_weights

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # init_from is relative to the checkout, as in the README
    config = load_config(root / "training" / "finetune.yaml", ["data.root=unused"])
    assert config.train.init_from == Path("model/release/weights.pt")
    assert config.train.max_minutes is not None and config.data.normalization == "mean_std"
    released = yaml.safe_load((root / "rdf.yaml").read_text())
    assert released["weights"]["pytorch_state_dict"]["architecture"]["kwargs"] == config.model.model_dump()
    model = SRUNet(**config.model.model_dump())
    load_initial_weights(config, model, torch.device("cpu"))
    release = torch.load(root / "model" / "release" / "weights.pt", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, release[key]), key
