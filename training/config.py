"""One typed training configuration (pydantic, unknown keys rejected).

YAML layout mirrors the classes: ``seed``, ``out_dir``, ``data: {...}``, ``model: {...}``,
``train: {...}``, ``tracking: {...}``. ``model`` fields are the SRUNet keyword arguments one to one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the pairs are and how tiles are cut from them."""

    root: Optional[Path] = Field(None, description="folder with lr/, hr/ (and manifest.json)")
    lr_dir: Optional[Path] = Field(None, description="LR folder (default: root/lr)")
    hr_dir: Optional[Path] = Field(None, description="HR folder (default: root/hr)")
    tile_size: int = Field(64, description="LR tile edge in pixels (HR tiles are twice that)")
    tiles_per_epoch: int = Field(4096, ge=1)
    val_fraction: float = Field(0.1, description="fraction of images held out for validation")
    max_val_images: int = Field(8, ge=1, description="validation images evaluated per epoch")
    normalization: Literal["mean_std", "percentiles"] = Field(
        "mean_std", description="mean_std: zero mean, unit variance per image, computed the same "
        "in every zoo consumer, HR fitted into the LR's units; percentiles: v1's scale_range")
    lr_percentiles: tuple[float, float] = Field((1.0, 99.8), description="percentiles method only")
    hr_percentiles: tuple[float, float] = Field((1.0, 99.8), description="percentiles method only")
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


class ModelConfig(_Strict):
    """SRUNet keyword arguments, one to one."""

    in_channels: int = Field(1, ge=1)
    out_channels: int = Field(1, ge=1)
    depth: int = Field(3, ge=0, le=5)
    base_channels: int = Field(24, ge=1)
    channel_growth: int = Field(0, ge=0)
    residual: bool = True


class TrainConfig(_Strict):
    """Optimisation."""

    epochs: int = Field(30, ge=1)
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many steps in total")
    schedule_steps: Optional[int] = Field(
        None, ge=1, description="steps the warmup + cosine schedule spans (default: all epochs)")
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(200, ge=0)
    loss: Literal["l1", "mse", "l1+ssim"] = Field(
        "l1", description="mse estimates the mean of the noisy targets, which is what PSNR scores")
    ssim_weight: float = Field(0.2, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on CPU)")
    patience: int = Field(8, ge=1, description="epochs without better validation PSNR")
    preview_every: int = Field(5, ge=1, description="epochs between preview panels")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (persistent)")
    val_every: Optional[int] = Field(
        None, ge=1, description="also validate every this many steps (default: each epoch end)")
    max_minutes: Optional[float] = Field(
        None, gt=0, description="wall-clock budget: after the first validation the schedule is "
        "fitted to end (cosine decay included) when the budget is spent")
    compile: bool = Field(False, description="torch.compile the network (GPU runs)")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: all)")
    init_from: Optional[Path] = Field(
        None, description="fine-tune: start from the weights of this srunet checkpoint or "
        "package weights.pt (fresh optimiser and schedule; same model and normalisation)")


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
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like KEY=VALUE, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
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
