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
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from srunet.files import file_sha256
from srunet.model.checkpoint import load_checkpoint, save_checkpoint
from srunet.model.unet import SRUNet
from srunet.tiff import find_pairs
from srunet.training import dataset as ds
from srunet.training.config import Config
from srunet.training.losses import lr_factor, training_loss
from srunet.registration import unregistered_note
from srunet.training.resume import (check_resume, load_initial_weights, normalization_entry,
                                    rng_state, set_rng_state)
from srunet.training.tracking import Tracker
from srunet.training.validate import final_report, prepare_validation, save_preview, validate

LOG_EVERY = 50  # steps between loss read-backs for the progress bar (each one syncs a GPU)

@dataclass
class TrainResult:
    tracking_uri: str
    run_id: str
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict
    time_shares: dict  # of the loop's wall time: steps, data, validation (see _time_shares)


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


def _time_shares(timing: dict, wall: float) -> dict:
    """Shares of the loop's wall time spent waiting for data, validating (with checkpoints and
    logging) and in optimizer steps (the rest). A GPU-ready loop keeps the last near 1."""
    wall = max(wall, 1e-9)
    shares = {f"time_share_{key}": value / wall for key, value in timing.items()}
    shares["time_share_steps"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


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
        init_from = config.train.init_from
        if init_from is not None and resume is None and not Path(init_from).is_file():
            raise FileNotFoundError(
                f"train.init_from={init_from}: no such file (relative paths start at the current "
                f"folder, {Path.cwd()}); run from the srunet checkout (training/finetune.yaml "
                "points to model/release/weights.pt) or give the weights' absolute path")
        self._load_data()
        self.state = {"step": 0, "best_psnr": -math.inf, "bad_epochs": 0, "epoch_loss": 0.0,
                      "epoch_batches": 0, "run_id": None, "metrics": {}, "train_seconds": 0.0,
                      "schedule_total": self.schedule_steps, "budget_fitted": False}
        self.loss_sum = torch.zeros((), device=self.device)
        self.timing = {"data": 0.0, "validation": 0.0}  # seconds in this process
        self._build_model()
        resume_note = self._restore() if resume is not None else None
        self.tracker = self._start_tracking(resume_note) if self.rank == 0 else None
        self.amp = config.train.amp and self.device.type == "cuda"

    def _load_data(self) -> None:
        data = self.config.data
        self.pairs = find_pairs(*data.folders())
        if self.rank == 0 and (note := unregistered_note(data.folders()[0])) is not None:
            print(note, file=sys.stderr)
        self.train_pairs, self.val_pairs = ds.split_by_image(self.pairs, data.val_fraction,
                                                             self.config.seed)
        tile = data.tile_size
        train_images = ds.load_images(self.train_pairs, data, tile)
        self.val_images = ds.load_images(self.val_pairs[:data.max_val_images], data, tile)
        self.val_data = prepare_validation(self.val_images)
        self.dataset = ds.TileDataset(train_images, tile, data.tiles_per_epoch, self.config.seed,
                                      data.foreground_fraction)
        batch = self.config.train.batch_size
        self.steps_per_epoch = len(self.dataset) // (batch * self.world)
        if self.steps_per_epoch < 1:
            raise ValueError(f"data.tiles_per_epoch={len(self.dataset)} is smaller than one batch "
                             f"({batch} x {self.world} processes); raise it")
        self.configured_steps = self.config.train.epochs * self.steps_per_epoch
        self.schedule_steps = self.config.train.schedule_steps or self.configured_steps
        self.total_steps = self.configured_steps
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
            self.optimizer, lambda step: lr_factor(step, train.warmup_steps,
                                                   self.state["schedule_total"]))
        if train.init_from is not None and self.resume is None:
            load_initial_weights(self.config, self.model, self.device)
        self.wrapped = self.model
        if self.world > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if train.compile:
            self.wrapped = torch.compile(self.wrapped)

    def _restore(self) -> str:
        """Load the resumed checkpoint's weights and training state; describe config changes."""
        saved = load_checkpoint(self.resume, map_location=self.device)
        if "optimizer" not in saved:
            raise ValueError(f"{self.resume} holds weights only (no training state); cannot resume it")
        note = check_resume(self.config, saved["config"], Path(self.resume))
        self.model.load_state_dict(saved["model_state"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        self.state.update(saved["state"])
        if self.state.get("budget_fitted"):  # train.max_minutes fixed the end of the schedule
            self.total_steps = min(self.total_steps, self.state["schedule_total"])
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
        self.time_shares = {}
        status = "FAILED"
        try:
            self.progress = tqdm(total=self.total_steps, initial=self.state["step"],
                                 disable=self.rank != 0, desc="training", unit="step")
            started = time.perf_counter()
            self._loop()
            self.progress.close()
            self.time_shares = _time_shares(self.timing, time.perf_counter() - started)
            status = "FINISHED"
        finally:
            if self.tracker is not None:
                self._finish(status)
        result = TrainResult(self.tracker.uri if self.tracker else "", self.state["run_id"] or "",
                             self.best_path, self.last_path, self.state["metrics"],
                             self.time_shares)
        if self.world > 1:
            # Rank 0 still writes the final report: tearing gloo down on one rank while the
            # other is busy aborted the process at exit ("terminate called ...") now and then.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return result

    def _loop(self) -> None:
        """Steps until the end or an early stop; validation at each epoch end and every
        ``train.val_every`` steps. One DataLoader (persistent workers) serves the whole run."""
        if self.state["step"] >= self.total_steps:
            return
        self.started = time.perf_counter() - self.state["train_seconds"]
        batches = iter(self._loader())
        while True:
            waited = time.perf_counter()
            lr_tiles, hr_tiles = next(batches)
            self.timing["data"] += time.perf_counter() - waited
            self._step(lr_tiles.to(self.device, non_blocking=True),
                       hr_tiles.to(self.device, non_blocking=True))
            step = self.state["step"]
            epoch_done = step % self.steps_per_epoch == 0
            every = self.config.train.val_every
            last = step >= self.total_steps
            if not (epoch_done or last or (every and step % every == 0)):
                continue
            self.state["train_seconds"] = time.perf_counter() - self.started
            stop = last
            validating = time.perf_counter()
            if self.rank == 0:
                # Validations the schedule fixes (epoch ends, every val_every steps) update the
                # best checkpoint and early stopping; one forced by max_steps does not, so a
                # cut-and-resumed run ends exactly like an uninterrupted one.
                stop = self._end_of_epoch(-(-step // self.steps_per_epoch), complete=epoch_done,
                                          scheduled=epoch_done or bool(every and step % every == 0)
                                          ) or stop
                self._fit_schedule_to_budget()
            if self.world > 1:  # every rank follows rank 0's early-stopping decision
                flag = torch.tensor([int(stop), self.total_steps], device=self.device)
                torch.distributed.broadcast(flag, 0)
                stop, self.total_steps = bool(flag[0].item()), int(flag[1].item())
            self.timing["validation"] += time.perf_counter() - validating
            if stop or self.state["step"] >= self.total_steps:
                return

    def _loader(self) -> torch.utils.data.DataLoader:
        """This rank's batches from the current step to the end of the configured epochs.

        Step s of epoch e takes the epoch's tiles [s * B * world, (s + 1) * B * world) and rank
        r the r-th slice of B, so ranks are disjoint and together see exactly what one process
        with batch B * world sees: a torchrun run equals a single-process run of the global batch.
        """
        batch, per_epoch = self.config.train.batch_size, self.dataset.tiles_per_epoch
        indices = [epoch * per_epoch + (step * self.world + self.rank) * batch + k
                   for epoch, step in (divmod(s, self.steps_per_epoch) for s in
                                       range(self.state["step"], self.configured_steps))
                   for k in range(batch)]
        workers = self.config.train.num_workers
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, indices), batch_size=batch, shuffle=False,
            drop_last=True, num_workers=workers, persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None, pin_memory=self.device.type == "cuda")

    def _step(self, lr_tiles: torch.Tensor, hr_tiles: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            prediction = self.wrapped(lr_tiles)
        loss = training_loss(prediction.float(), hr_tiles, self.config.train)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state["step"] += 1
        # Summed on the device: reading a loss back every step would stall a GPU.
        self.loss_sum += loss.detach().float()
        self.state["epoch_batches"] += 1
        self.progress.update(1)
        if self.state["step"] % LOG_EVERY == 0:
            self.progress.set_postfix(loss=f"{loss.detach().item():.4f}")

    def _fit_schedule_to_budget(self) -> None:
        """With ``train.max_minutes``: after the first validation, end the schedule (cosine
        decay included) at the step the measured pace reaches the budget. Fitted once and saved,
        so a resumed run keeps the same schedule."""
        budget = self.config.train.max_minutes
        if budget is None or self.state["budget_fitted"]:
            return
        elapsed = time.perf_counter() - self.started  # steps and validations so far
        per_step = elapsed / max(1, self.state["step"])
        fitted = self.state["step"] + max(0, int((60.0 * budget - elapsed) / per_step))
        self.total_steps = min(self.total_steps, fitted)
        self.state["schedule_total"], self.state["budget_fitted"] = self.total_steps, True
        self.progress.total = self.total_steps
        print(f"train.max_minutes={budget:g}: {per_step * 1000:.0f} ms per step so far; the "
              f"schedule now ends at step {self.total_steps}", flush=True)

    # ----------------------------------------------------------- validation and checkpoints
    def _end_of_epoch(self, epoch: int, complete: bool, scheduled: bool) -> bool:
        """Validate, log, checkpoint; True when early stopping says stop.

        ``complete``: an epoch ended (its loss sum is logged and reset). ``scheduled``: a
        validation the schedule fixes; only those update the best checkpoint and the patience
        count. A run stopped mid-epoch (max_steps) is validated and saved too, but leaves the
        early-stopping state as it was, so a resumed run continues exactly like an
        uninterrupted one.
        """
        state = self.state
        state["epoch_loss"] += float(self.loss_sum)  # the one read-back of the losses
        self.loss_sum.zero_()
        metrics, panels = validate(self.model, self.val_data, self.device)
        metrics["train_loss"] = state["epoch_loss"] / max(1, state["epoch_batches"])
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        if complete:
            state["epoch_loss"], state["epoch_batches"] = 0.0, 0
        if scheduled:
            improved = metrics["val_psnr"] > state["best_psnr"]
            state["best_psnr"] = max(state["best_psnr"], metrics["val_psnr"])
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["metrics"] = metrics
        self._save(improved=scheduled and state["bad_epochs"] == 0)
        if not self.best_path.exists():  # a run shorter than one epoch still leaves a best.pt
            shutil.copyfile(self.last_path, self.best_path)
        self.tracker.log_metrics(metrics, step=state["step"])
        self.tracker.flush()
        best = f"{state['best_psnr']:.2f} dB" if math.isfinite(state["best_psnr"]) else "none yet"
        self.progress.write(f"step {state['step']}: val PSNR {metrics['val_psnr']:.2f} dB (bicubic "
                            f"{metrics['val_bicubic_psnr']:.2f} dB), best so far {best}")
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
            "normalization": normalization_entry(config.data),
            "config": config.model_dump(mode="json"),
            "epoch": self.state["step"] // self.steps_per_epoch, "step": self.state["step"],
            "metrics": self.state["metrics"], "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
            "state": dict(self.state)})
        if improved:
            shutil.copyfile(self.last_path, self.best_path)

    def _finish(self, status: str) -> None:
        """Log the best checkpoint and its QC report on the validation images; end the run."""
        tracker = self.tracker
        try:
            if status == "FINISHED":
                tracker.log_metrics(self.time_shares, step=self.state["step"])
                tracker.flush()
                print("wall time: " + ", ".join(f"{k[len('time_share_'):]} {100 * v:.0f} %"
                                                for k, v in self.time_shares.items()), flush=True)
            if status == "FINISHED" and self.best_path.exists():
                tracker.log_artifact(self.best_path, "checkpoints")
                best = load_checkpoint(self.best_path, map_location=self.device)
                self.model.load_state_dict(best["model_state"])
                with tempfile.TemporaryDirectory() as tmp:
                    report = final_report(self.model, self.val_images,
                                          normalization_entry(self.config.data), self.device,
                                          Path(tmp) / "validation_report")
                    tracker.client.log_artifacts(tracker.run_id, str(report), "validation_report")
        finally:
            tracker.end(status)


def train(config: Config, resume: Path | None = None) -> TrainResult:
    """Train a model as configured (resuming ``resume`` exactly if given); returns where the
    run and its checkpoints are."""
    return Trainer(config, resume).run()
