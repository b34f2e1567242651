"""One typed training configuration (pydantic, unknown keys rejected).

YAML layout mirrors the classes: ``seed``, ``out_dir``, ``data: {...}``, ``model: {...}``,
``train: {...}``, ``tracking: {...}``. ``model`` fields are the SRUNet keyword arguments one to one.

The defaults are the release recipe (``training/kidney.yaml`` holds only what differs). The run is
counted in optimizer steps: it ends at ``train.max_steps`` or when ``train.max_minutes`` is spent,
whichever comes first, validates every ``train.val_every`` steps and at its end, and stops early
after ``train.patience`` validations without a better validation PSNR.
"""

from __future__ import annotations

import ast
import importlib.resources
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the pairs are and how tiles are cut from them."""

    root: Optional[Path] = Field(None, description="folder with lr/, hr/ (and manifest.json)")
    lr_dir: Optional[Path] = Field(None, description="LR folder (default: root/lr)")
    hr_dir: Optional[Path] = Field(None, description="HR folder (default: root/hr)")
    tile_size: int = Field(96, description="LR tile edge in pixels (HR tiles are twice that); "
                           "the release network's receptive radius is 47 px")
    val_fraction: float = Field(0.02, description="fraction of images held out for validation "
                                "(at least one image)")
    max_val_images: int = Field(8, ge=1, description="held-out images scored at each validation")
    normalization: Literal["mean_std", "percentiles"] = Field(
        "mean_std", description="mean_std: zero mean, unit variance per image, computed the same "
        "in every zoo consumer, HR fitted into the LR's units; percentiles: v1's scale_range")
    lr_percentiles: tuple[float, float] = Field((1.0, 99.8), description="percentiles method only")
    hr_percentiles: tuple[float, float] = Field((1.0, 99.8), description="percentiles method only")
    skip_smaller_than_tile: bool = Field(
        False, description="leave out pairs whose LR image is smaller than tile_size (a mixed "
        "pool, e.g. wide-domain fields of 128-256 px, with large tiles); default: an error")
    foreground_fraction: float = Field(
        0.75, ge=0.0, le=1.0, description="share of tiles centred on foreground"
    )

    @field_validator("tile_size")
    @classmethod
    def _tile(cls, value: int) -> int:
        if value < 16 or value % 8:
            raise ValueError(f"tile_size must be a multiple of 8 and >= 16, got {value}")
        return value

    @field_validator("val_fraction")
    @classmethod
    def _val(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {value}")
        return value

    @field_validator("lr_percentiles", "hr_percentiles")
    @classmethod
    def _percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(value)}")
        return value

    def folders(self) -> tuple[Path, Path]:
        """(lr_dir, hr_dir), resolved from ``root`` where not given."""
        lr_dir = self.lr_dir or (self.root / "lr" if self.root else None)
        hr_dir = self.hr_dir or (self.root / "hr" if self.root else None)
        if lr_dir is None or hr_dir is None:
            raise ValueError(
                "no training data given: set data.root (a folder with lr/ and hr/), or "
                "data.lr_dir and data.hr_dir, e.g. `srunet train --data DIR`"
            )
        return Path(lr_dir), Path(hr_dir)


@lru_cache(maxsize=1)
def unet_defaults() -> dict:
    """SRUNet's keyword defaults, read from ``model/unet.py`` (the one place they live).

    Parsed, not imported: importing the network imports torch (seconds), and the command line
    validates its config before that, so a bad setting fails at once.
    """
    origin = importlib.util.find_spec("srunet.model.unet").origin
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "SRUNet":
            init = next(f for f in node.body if isinstance(f, ast.FunctionDef)
                        and f.name == "__init__")
            names = [a.arg for a in init.args.args[1:]]  # without self
            values = [ast.literal_eval(d) for d in init.args.defaults]
            return dict(zip(names[len(names) - len(values):], values))
    raise RuntimeError(f"{origin} defines no class SRUNet")  # a broken install


class ModelConfig(_Strict):
    """SRUNet keyword arguments, one to one; the defaults are SRUNet's (the release network)."""

    in_channels: int = Field(unet_defaults()["in_channels"], ge=1)
    out_channels: int = Field(unet_defaults()["out_channels"], ge=1)
    depth: int = Field(unet_defaults()["depth"], ge=0, le=5)
    base_channels: int = Field(unet_defaults()["base_channels"], ge=1)
    channel_growth: int = Field(unet_defaults()["channel_growth"], ge=0)
    residual: bool = unet_defaults()["residual"]


RELEASE_KEYWORD = "release"  # train.init_from: the release weights wherever srunet is installed
NOT_RECIPES = ("publication",)  # package metadata shipped beside the training recipes


def release_weights() -> Path:
    """``weights.pt`` of the release the installed srunet carries (package data
    ``srunet/model/release/``; in a checkout ``model/release/``)."""
    return Path(str(importlib.resources.files("srunet.model").joinpath("release", "weights.pt")))


def recipes() -> list[str]:
    """Names of the training recipes shipped as package data (``srunet.training/*.yaml``)."""
    folder = importlib.resources.files("srunet.training")
    return sorted(item.name[:-len(".yaml")] for item in folder.iterdir()
                  if item.name.endswith(".yaml") and item.name[:-len(".yaml")] not in NOT_RECIPES)


def recipe_path(name: str) -> Path:
    """The packaged recipe ``name`` (e.g. ``finetune``), from a checkout or an installed wheel.

    Raises ValueError listing the recipes when there is no such one.
    """
    known = recipes()
    if name not in known:
        raise ValueError(f"--recipe {name}: no such training recipe; the installed srunet ships "
                         f"{', '.join(known)} (or give your own file with --config)")
    return Path(str(importlib.resources.files("srunet.training").joinpath(f"{name}.yaml")))


class TrainConfig(_Strict):
    """Optimisation, and when to validate and stop, all counted in optimizer steps."""

    max_steps: Optional[int] = Field(
        6810, ge=1, description="optimizer steps of the run; the warmup + cosine schedule spans "
        "them (the release: 6810). null: only max_minutes ends the run")
    max_minutes: Optional[float] = Field(
        None, gt=0, description="wall-clock budget: once a tenth of it is spent, the schedule "
        "(cosine decay included) is fitted to end when the budget is; the last validation and "
        "the final report come on top")
    val_every: int = Field(512, ge=1, description="steps between validations (the run's last "
                           "step is validated too)")
    patience: int = Field(100, ge=1, description="validations without a better validation PSNR "
                          "before stopping early")
    preview_every: int = Field(4, ge=1, description="validations between preview panels (the "
                               "first validation always has one)")
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(300, ge=0, description="linear warmup steps (at most a tenth of a "
                              "schedule fitted to max_minutes)")
    loss: Literal["l1", "mse", "l1+ssim"] = Field(
        "mse", description="mse estimates the mean of the noisy targets, which is what PSNR scores")
    ssim_weight: float = Field(0.2, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)
    amp: bool = Field(True, description="bfloat16 autocast of forward and backward (loss, "
                      "optimizer and weights stay float32): on CUDA; on a CPU with native bf16 "
                      "only with channels_last=false (torch 2.13 gets the combination wrong on "
                      "CPU: training/step.py)")
    channels_last: bool = Field(True, description="channels_last memory format for the network "
                                "and its input batches (faster convolutions; on CPU as fast as "
                                "bf16 and exact)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (persistent)")
    snapshots: bool = Field(False, description="also keep the weights of every validation as "
                            "checkpoints/step_NNNNNNN.pt (no optimiser state), to score them on "
                            "held-out data afterwards (bench/heldout_curve.py)")
    compile: bool = Field(False, description="torch.compile the network (GPU runs)")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: all)")
    init_from: Optional[Path] = Field(
        None, description="fine-tune: start from the weights of this srunet checkpoint or "
        "package weights.pt (fresh optimiser and schedule; same model and normalisation); "
        f"'{RELEASE_KEYWORD}': the installed package's release weights (checkout or wheel)")

    @field_validator("init_from", mode="before")
    @classmethod
    def _release(cls, value):
        return release_weights() if value == RELEASE_KEYWORD else value


class TrackingConfig(_Strict):
    """MLflow."""

    tracking_uri: Optional[str] = Field(
        None, description="default: sqlite:///<out_dir>/mlflow.db, artifacts beside it"
    )
    experiment: str = "srunet"
    run_name: Optional[str] = None


class Config(_Strict):
    """The whole training run."""

    seed: int = 0
    out_dir: Path = Path("runs/default")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _has_an_end(self) -> "Config":
        if self.train.max_steps is None and self.train.max_minutes is None:
            raise ValueError("train.max_steps and train.max_minutes are both null: set one, "
                             "e.g. train.max_steps=6810 or train.max_minutes=30")
        return self


# Settings of the epoch-based schedule (before the step-based one): what replaces each.
REMOVED_KEYS = {
    "train.epochs": "train.max_steps (optimizer steps in total) or train.max_minutes (a "
                    "wall-clock budget)",
    "data.tiles_per_epoch": "train.val_every (steps between validations); the run's length is "
                            "train.max_steps or train.max_minutes",
    "train.schedule_steps": "train.max_steps (the schedule spans the whole run; to stop early "
                            "and continue later use `srunet train --stop-at STEP` and --resume)",
}


def reject_removed_keys(tree: dict, where: str) -> None:
    """Raise ValueError for a setting of the old epoch-based schedule in ``tree``.

    ``where`` names the source (a file, the command line, a checkpoint).
    """
    for key, instead in REMOVED_KEYS.items():
        section, name = key.split(".")
        node = tree.get(section)
        if isinstance(node, dict) and name in node:
            raise ValueError(f"{where}: {key}={node[name]!r} is no longer a setting (training is "
                             f"counted in steps); use {instead}")


def _set_dotted(tree: dict, key: str, value) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def load_config(path=None, overrides=(), *, data_dir=None, out_dir=None, tracking_uri=None) -> Config:
    """Read a YAML config (or the defaults), apply ``KEY=VALUE`` overrides, validate.

    Raises ValueError naming the file and the offending key and value.
    """
    tree: dict = {}
    source = "built-in defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"config file {path} is not valid YAML: {error}") from error
        if not isinstance(tree, dict):
            raise ValueError(f"config file {path} must hold a mapping, got {type(tree).__name__}")
        reject_removed_keys(tree, f"config file {path}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like KEY=VALUE, e.g. train.max_steps=500")
        key, raw = item.split("=", 1)
        single: dict = {}
        _set_dotted(single, key.strip(), yaml.safe_load(raw))
        reject_removed_keys(single, f"override {item!r}")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    if data_dir is not None:
        _set_dotted(tree, "data.root", str(data_dir))
    if out_dir is not None:
        tree["out_dir"] = str(out_dir)
    if tracking_uri is not None:
        _set_dotted(tree, "tracking.tracking_uri", tracking_uri)
    try:
        return Config.model_validate(tree)
    except ValidationError as error:
        lines = [f"invalid training config ({source}):"]
        for err in error.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            given = f" (given: {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
            lines.append(f"  {where}: {err['msg']}{given}")
        raise ValueError("\n".join(lines)) from None


def flatten(config: Config) -> dict[str, str]:
    """Dotted-key view of the config, for MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            out[prefix] = str(value)

    walk("", config.model_dump(mode="json"))
    return out
