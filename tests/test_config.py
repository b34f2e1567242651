"""Typed config: defaults valid, unknown keys rejected, bad values echoed with their file."""

import pytest

from srunet.training.config import Config, flatten, load_config


def test_defaults_and_overrides(tmp_path):
    config = load_config(None, ["train.max_steps=3", "model.depth=2"], data_dir=tmp_path)
    assert config.train.max_steps == 3 and config.model.depth == 2
    assert config.data.folders() == (tmp_path / "lr", tmp_path / "hr")
    assert flatten(config)["train.max_steps"] == "3"


def test_model_defaults_are_the_networks():
    """ModelConfig's defaults are read from model/unet.py (no copy to drift from it)."""
    import inspect

    from srunet.model.unet import SRUNet
    from srunet.training.config import ModelConfig

    signature = inspect.signature(SRUNet).parameters
    assert ModelConfig().model_dump() == {name: p.default for name, p in signature.items()}


def test_epoch_settings_are_refused_with_the_new_keys(tmp_path):
    """The epoch-based schedule's settings name the file (or override), key, value and what
    replaces them."""
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  tiles_per_epoch: 4096\ntrain:\n  batch_size: 8\n")
    with pytest.raises(ValueError, match=r"old\.yaml.*data\.tiles_per_epoch=4096.*train\.val_every"):
        load_config(path)
    path.write_text("train:\n  schedule_steps: 6810\n")
    with pytest.raises(ValueError, match=r"old\.yaml.*train\.schedule_steps=6810.*train\.max_steps"):
        load_config(path)
    with pytest.raises(ValueError, match=r"override 'train\.epochs=3'.*train\.epochs=3.*"
                                         r"train\.max_steps.*train\.max_minutes"):
        load_config(None, ["train.epochs=3"])
    with pytest.raises(ValueError, match="max_steps and train.max_minutes are both null"):
        load_config(None, ["train.max_steps=null"])
    assert load_config(None, ["train.max_steps=null", "train.max_minutes=1"]).train.max_steps is None


@pytest.mark.parametrize("text, match", [
    ("train:\n  max_steps: 2\n  learnin_rate: 0.1\n", r"cfg\.yaml[\s\S]*train\.learnin_rate"),
    ("data:\n  tile_size: 50\n", r"data\.tile_size[\s\S]*got 50"),
    ("model:\n  channel_growth: -2\n", r"model\.channel_growth[\s\S]*given: -2"),
])
def test_yaml_errors_name_file_key_and_value(tmp_path, text, match):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_overrides_must_be_key_value(tmp_path):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_missing_data_is_explained():
    with pytest.raises(ValueError, match="--data"):
        Config().data.folders()


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("recipe", ["kidney.yaml", "finetune.yaml"])
def test_recipes_hold_only_what_differs_from_the_defaults(recipe):
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "training" / recipe
    defaults, loaded = flatten(Config()), flatten(load_config(path))
    for key, value in _leaves(yaml.safe_load(path.read_text())).items():
        assert loaded[key] != defaults[key], f"{recipe} sets {key}={value!r}, the default: remove it"


def test_release_config_is_valid_and_describes_the_released_network():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "training" / "kidney.yaml")
    assert config.train.max_minutes is None  # a fixed schedule: the same steps on any machine
    assert config.train.max_steps == 6810  # the schedule the release was trained with
    released = yaml.safe_load((root / "rdf.yaml").read_text())
    kwargs = released["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs == config.model.model_dump()
    steps = [p["id"] for p in released["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]
    assert steps == ["zero_mean_unit_variance"] and config.data.normalization == "mean_std"


def test_fine_tuning_recipe_fits_the_release():
    """training/finetune.yaml (the README recipe, bench/finetune.py) starts from the committed
    release weights: same model section, same normalisation, and the weights load into it."""
    from pathlib import Path

    import torch
    import yaml

    from srunet.model.unet import SRUNet
    from srunet.training.resume import load_initial_weights

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "training" / "finetune.yaml", ["data.root=unused"])
    assert config.train.init_from == root / "model" / "release" / "weights.pt"  # `release`
    assert config.train.max_minutes is not None and config.data.normalization == "mean_std"
    released = yaml.safe_load((root / "rdf.yaml").read_text())
    assert released["weights"]["pytorch_state_dict"]["architecture"]["kwargs"] == config.model.model_dump()
    model = SRUNet(**config.model.model_dump())
    load_initial_weights(config, model, torch.device("cpu"))
    release = torch.load(root / "model" / "release" / "weights.pt", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, release[key]), key


def test_packaged_recipe_starts_from_the_installed_release(tmp_path, monkeypatch):
    """`srunet train --recipe finetune` needs no checkout: the recipe is package data and its
    `train.init_from: release` is the installed package's weights, from any folder."""
    from srunet.training.config import recipe_path, recipes, release_weights

    monkeypatch.chdir(tmp_path)  # no model/release/ here
    assert {"finetune", "kidney", "v3"} <= set(recipes()) and "publication" not in recipes()
    config = load_config(recipe_path("finetune"))
    weights = config.train.init_from
    assert weights == release_weights() and weights.is_absolute() and weights.is_file()
    assert weights.parent.name == "release" and config.train.max_minutes == 15
    assert load_config(None, ["train.init_from=release"]).train.init_from == weights
    plain = load_config(None, ["train.init_from=mine/weights.pt"]).train.init_from
    assert str(plain) == "mine/weights.pt"  # a path stays a path
    with pytest.raises(ValueError, match=r"--recipe kidny: no such.*finetune, kidney, v3"):
        recipe_path("kidny")


def test_recipe_and_config_are_exclusive(capsys):
    from srunet.cli import build_parser

    args = build_parser().parse_args(["train", "--recipe", "finetune"])
    assert args.recipe == "finetune" and args.config is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--recipe", "finetune", "--config", "x.yaml"])
    assert "not allowed with argument" in capsys.readouterr().err
