"""Training loop: AdamW, warmup + cosine, L1 / MSE (+ SSIM), clipping, bf16 autocast on CUDA,
self-describing checkpoints every epoch, exact resume, early stopping, MLflow tracking.

Runs on one CPU/GPU or under ``torchrun`` (DistributedDataParallel; rank 0 logs and saves).
Resume is exact because tile k of epoch e depends only on (seed, e, k) and every optimiser,
scheduler and RNG state is in the checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from srunet.files import file_sha256
from srunet.model.checkpoint import load_checkpoint, load_weights, save_checkpoint
from srunet.model.unet import SRUNet
from srunet.tiff import find_pairs
from srunet.training import dataset as ds
from srunet.training.config import Config, ModelConfig, flatten
from srunet.training.tracking import Tracker
from srunet.training.validate import final_report, save_preview, validate

# Config sections that may change when resuming (how long to train, where to log).
RESUMABLE_CHANGES = {"train.epochs", "train.max_steps", "train.patience", "train.num_workers",
                     "train.threads", "tracking.tracking_uri", "out_dir"}


@dataclass
class TrainResult:
    tracking_uri: str
    run_id: str
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _device(config: Config, rank: int) -> torch.device:
    want = config.train.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
        index = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def lr_lambda(warmup: int, total: int):
    """Linear warmup to 1, then cosine decay to 0.01 at ``total`` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM with a 7x7 uniform window (matching the evaluation metric's window)."""
    c1, c2 = 0.01**2, 0.03**2
    def pool(t):
        return F.avg_pool2d(t, 7, stride=1)
    mu_p, mu_t = pool(prediction), pool(target)
    var_p = pool(prediction * prediction) - mu_p**2
    var_t = pool(target * target) - mu_t**2
    cov = pool(prediction * target) - mu_p * mu_t
    ssim = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return 1.0 - ssim.mean()


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))


def _check_resume(config: Config, saved: dict, path: Path) -> str:
    """Refuse a resume whose config differs beyond RESUMABLE_CHANGES; describe what changed."""
    now, before = flatten(config), flatten(Config.model_validate(saved))
    changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
    forbidden = [k for k in changed if k not in RESUMABLE_CHANGES]
    if forbidden:
        detail = ", ".join(f"{k}: {before.get(k)} -> {now.get(k)}" for k in forbidden[:6])
        raise ValueError(f"cannot resume from {path}: config differs ({detail}); resume with the "
                         "checkpoint's config (only epochs, max_steps, patience may change)")
    return ", ".join(f"{k}: {before.get(k)} -> {now.get(k)}" for k in changed) or "no change"


def _initial_weights(config: Config, model: SRUNet, device: torch.device) -> None:
    """Load ``train.init_from`` into ``model``, checked against this run's config.

    An srunet checkpoint must match the model section and the normalisation; a bare state
    dict (a package's ``weights.pt``) must fit the model section.
    """
    path = Path(config.train.init_from)
    state, saved = load_weights(path, map_location=device)
    if saved is not None:
        wanted = config.model.model_dump()
        if ModelConfig(**saved["model_kwargs"]).model_dump() != wanted:
            raise ValueError(f"train.init_from={path} holds a model with {saved['model_kwargs']}, "
                             f"but this run's model section is {wanted}; make them equal to fine-tune")
        norm = saved.get("normalization", {})
        for key in ("lr_percentiles", "hr_percentiles"):
            mine = list(getattr(config.data, key))
            if key in norm and list(norm[key]) != mine:
                raise ValueError(f"train.init_from={path} was trained with {key}={list(norm[key])}, "
                                 f"this run uses data.{key}={mine}; use the same percentiles")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing/unexpected keys or shape mismatches, listed by torch
        raise ValueError(f"train.init_from={path} does not fit the model section "
                         f"{config.model.model_dump()}; set model.* to the weights' values. "
                         f"{error}") from error


class Trainer:
    """One training run, read top to bottom: set-up, the step loop, the end of each epoch,
    checkpoints, and the end of the run.

    ``state`` holds everything a resumed run needs besides the optimiser, scheduler and RNG
    states: step, best validation PSNR, epochs without improvement, the running epoch loss,
    the MLflow run id and the last metrics.
    """

    def __init__(self, config: Config, resume: Path | None = None):
        self.config, self.resume = config, resume
        self.rank, self.world = _distributed()
        self.device = _device(config, self.rank)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.out_dir = Path(config.out_dir).resolve()
        ckpt_dir = self.out_dir / "checkpoints"
        self.best_path, self.last_path = ckpt_dir / "best.pt", ckpt_dir / "last.pt"
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        torch.use_deterministic_algorithms(self.device.type == "cpu", warn_only=True)
        self._load_data()
        self._build_model()
        self.state = {"step": 0, "best_psnr": -math.inf, "bad_epochs": 0, "epoch_loss": 0.0,
                      "epoch_batches": 0, "run_id": None, "metrics": {}}
        resume_note = self._restore() if resume is not None else None
        self.tracker = self._start_tracking(resume_note) if self.rank == 0 else None
        self.amp = config.train.amp and self.device.type == "cuda"

    def _load_data(self) -> None:
        data = self.config.data
        self.pairs = find_pairs(*data.folders())
        self.train_pairs, self.val_pairs = ds.split_by_image(self.pairs, data.val_fraction,
                                                             self.config.seed)
        tile = data.tile_size
        train_images = ds.load_images(self.train_pairs, data.lr_percentiles, data.hr_percentiles, tile)
        self.val_images = ds.load_images(self.val_pairs[:data.max_val_images], data.lr_percentiles,
                                         data.hr_percentiles, tile)
        self.dataset = ds.TileDataset(train_images, tile, data.tiles_per_epoch, self.config.seed,
                                      data.foreground_fraction)
        batch = self.config.train.batch_size
        self.steps_per_epoch = len(self.dataset) // (batch * self.world)
        if self.steps_per_epoch < 1:
            raise ValueError(f"data.tiles_per_epoch={len(self.dataset)} is smaller than one batch "
                             f"({batch} x {self.world} processes); raise it")
        self.total_steps = self.config.train.epochs * self.steps_per_epoch
        if self.config.train.max_steps:
            self.total_steps = min(self.total_steps, self.config.train.max_steps)

    def _build_model(self) -> None:
        train = self.config.train
        self.model = SRUNet(**self.config.model.model_dump()).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train.learning_rate,
                                           weight_decay=train.weight_decay)
        # The schedule spans the configured epochs, not max_steps, so a run cut short by
        # max_steps and resumed follows the same learning-rate curve as an uninterrupted one.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(train.warmup_steps, train.epochs * self.steps_per_epoch))
        if train.init_from is not None and self.resume is None:
            _initial_weights(self.config, self.model, self.device)
        self.wrapped = self.model
        if self.world > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _restore(self) -> str:
        """Load the resumed checkpoint's weights and training state; describe config changes."""
        saved = load_checkpoint(self.resume, map_location=self.device)
        if "optimizer" not in saved:
            raise ValueError(f"{self.resume} holds weights only (no training state); cannot resume it")
        note = _check_resume(self.config, saved["config"], Path(self.resume))
        self.model.load_state_dict(saved["model_state"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        self.state.update(saved["state"])
        return note

    def _start_tracking(self, resume_note: str | None) -> Tracker:
        tracker = Tracker(self.config, self.out_dir, run_id=self.state["run_id"])
        self.state["run_id"] = tracker.run_id
        if resume_note is not None:  # the run's params are the original config: record changes
            tracker.client.set_tag(tracker.run_id, f"resumed_at_step_{self.state['step']}",
                                   resume_note)
            return tracker
        tracker.log_data_digests([p.lr for p in self.pairs] + [p.hr for p in self.pairs])
        tracker.log_json({"train": [p.name for p in self.train_pairs],
                          "validation": [p.name for p in self.val_pairs]}, "split.json")
        if self.config.train.init_from is not None:  # which weights a fine-tune started from
            tracker.client.set_tag(tracker.run_id, "init_from_sha256",
                                   file_sha256(self.config.train.init_from))
        return tracker

    # ------------------------------------------------------------------------- the step loop
    def run(self) -> TrainResult:
        """Train to the configured end (or early stop), then log the best checkpoint's report."""
        self.model.train()
        status = "FAILED"
        try:
            self.progress = tqdm(total=self.total_steps, initial=self.state["step"],
                                 disable=self.rank != 0, desc="training", unit="step")
            stop = self.state["step"] >= self.total_steps
            while not stop:
                stop = self._epoch()
            self.progress.close()
            status = "FINISHED"
        finally:
            if self.tracker is not None:
                self._finish(status)
        result = TrainResult(self.tracker.uri if self.tracker else "", self.state["run_id"] or "",
                             self.best_path, self.last_path, self.state["metrics"])
        if self.world > 1:
            torch.distributed.destroy_process_group()
        return result

    def _epoch(self) -> bool:
        """Train the rest of the current epoch (or up to the last step); True to stop."""
        epoch, offset = divmod(self.state["step"], self.steps_per_epoch)
        for lr_tiles, hr_tiles in self._loader(epoch, offset):
            self._step(lr_tiles.to(self.device), hr_tiles.to(self.device), epoch)
            if self.state["step"] >= self.total_steps:
                break
        epoch_done = self.state["step"] % self.steps_per_epoch == 0
        stop = self.state["step"] >= self.total_steps
        if self.rank == 0 and (epoch_done or stop):
            stop = self._end_of_epoch(epoch + 1, complete=epoch_done) or stop
        if self.world > 1:  # every rank follows rank 0's early-stopping decision
            flag = torch.tensor([int(stop)], device=self.device)
            torch.distributed.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def _loader(self, epoch: int, offset: int) -> torch.utils.data.DataLoader:
        """This rank's batches of ``epoch``, from the step where a resumed run left off."""
        self.dataset.set_epoch(epoch)
        batch = self.config.train.batch_size
        per_rank = self.steps_per_epoch * batch
        indices = range(self.rank * per_rank + offset * batch, (self.rank + 1) * per_rank)
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, list(indices)), batch_size=batch,
            shuffle=False, drop_last=True, num_workers=self.config.train.num_workers,
            pin_memory=self.device.type == "cuda")

    def _loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        train = self.config.train
        # L1 is robust to outliers in the targets (a median-like estimator); MSE estimates
        # the mean of the noisy targets, the quantity PSNR rewards.
        if train.loss == "mse":
            return F.mse_loss(prediction, target)
        loss = F.l1_loss(prediction, target)
        if train.loss == "l1+ssim":
            loss = (1 - train.ssim_weight) * loss + train.ssim_weight * ssim_loss(prediction, target)
        return loss

    def _step(self, lr_tiles: torch.Tensor, hr_tiles: torch.Tensor, epoch: int) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            prediction = self.wrapped(lr_tiles)
        loss = self._loss(prediction.float(), hr_tiles)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state["step"] += 1
        loss_value = loss.item()
        self.state["epoch_loss"] += loss_value
        self.state["epoch_batches"] += 1
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss_value:.4f}", epoch=epoch + 1)

    # ----------------------------------------------------------- validation and checkpoints
    def _end_of_epoch(self, epoch: int, complete: bool) -> bool:
        """Validate, log, checkpoint; True when early stopping says stop.

        A run stopped mid-epoch (max_steps) is validated and saved too, but leaves the
        epoch's loss sum and the early-stopping state as they were, so a resumed run
        continues exactly like an uninterrupted one.
        """
        state = self.state
        metrics, panels = validate(self.model, self.val_images, self.device)
        metrics["train_loss"] = state["epoch_loss"] / max(1, state["epoch_batches"])
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        if complete:
            state["epoch_loss"], state["epoch_batches"] = 0.0, 0
            improved = metrics["val_psnr"] > state["best_psnr"]
            state["best_psnr"] = max(state["best_psnr"], metrics["val_psnr"])
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["metrics"] = metrics
        self._save(improved=complete and state["bad_epochs"] == 0)
        if not self.best_path.exists():  # a run shorter than one epoch still leaves a best.pt
            shutil.copyfile(self.last_path, self.best_path)
        self.tracker.log_metrics(metrics, step=state["step"])
        self.tracker.flush()
        if epoch % self.config.train.preview_every == 0 or epoch == 1:
            with tempfile.TemporaryDirectory() as tmp:
                png = save_preview(panels[0], Path(tmp) / f"epoch_{epoch:04d}.png",
                                   f"epoch {epoch}: PSNR {metrics['val_psnr']:.2f} dB "
                                   f"(bicubic {metrics['val_bicubic_psnr']:.2f} dB)")
                self.tracker.log_artifact(png, "previews")
        return state["bad_epochs"] >= self.config.train.patience

    def _save(self, improved: bool) -> None:
        """Write ``last.pt`` (weights, config, optimiser, scheduler, RNG, state); copy to
        ``best.pt`` when validation improved."""
        config = self.config
        save_checkpoint(self.last_path, {
            "model_kwargs": config.model.model_dump(), "model_state": self.model.state_dict(),
            "normalization": {"lr_percentiles": list(config.data.lr_percentiles),
                              "hr_percentiles": list(config.data.hr_percentiles)},
            "config": config.model_dump(mode="json"),
            "epoch": self.state["step"] // self.steps_per_epoch, "step": self.state["step"],
            "metrics": self.state["metrics"], "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": _rng_state(),
            "state": dict(self.state)})
        if improved:
            shutil.copyfile(self.last_path, self.best_path)

    def _finish(self, status: str) -> None:
        """Log the best checkpoint and its QC report on the validation images; end the run."""
        tracker = self.tracker
        try:
            if status == "FINISHED" and self.best_path.exists():
                tracker.log_artifact(self.best_path, "checkpoints")
                best = load_checkpoint(self.best_path, map_location=self.device)
                self.model.load_state_dict(best["model_state"])
                with tempfile.TemporaryDirectory() as tmp:
                    report = final_report(self.model, self.val_images,
                                          self.config.data.lr_percentiles, self.device,
                                          Path(tmp) / "validation_report")
                    tracker.client.log_artifacts(tracker.run_id, str(report), "validation_report")
        finally:
            tracker.end(status)


def train(config: Config, resume: Path | None = None) -> TrainResult:
    """Train a model as configured (resuming ``resume`` exactly if given); returns where the
    run and its checkpoints are."""
    return Trainer(config, resume).run()
