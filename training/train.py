"""Training loop: AdamW, warmup + cosine, MSE / L1 (+ SSIM), clipping, channels_last and bf16
autocast (``training/step.py`` says when each applies), a self-describing checkpoint at every
validation, exact resume, early stopping, MLflow tracking.

Everything is counted in optimizer steps: the run ends at ``train.max_steps`` or when
``train.max_minutes`` is spent, validates every ``train.val_every`` steps and at its end.
Runs on one CPU/GPU or under ``torchrun`` (DistributedDataParallel; rank 0 logs and saves).
Resume is exact because tile k depends only on (seed, k) and every optimiser, scheduler, RNG
and loop state is in the checkpoint.
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from srunet.files import file_sha256
from srunet.model.checkpoint import Checkpoint
from srunet.model.unet import SRUNet
from srunet.registration import unregistered_note
from srunet.tiff import find_pairs
from srunet.training import dataset as ds
from srunet.training.config import Config
from srunet.training.losses import schedule_factor
from srunet.training.resume import (TrainState, check_init_from, check_resume,
                                    load_initial_weights, normalization_entry, rng_state,
                                    set_rng_state)
from srunet.training.runtime import device_for, distributed, time_shares
from srunet.training.step import autocast_enabled, to_batch, to_memory_format, training_step
from srunet.training.tracking import Tracker
from srunet.training.validate import final_report, prepare_validation, save_preview, validate

LOG_EVERY = 50  # steps between loss read-backs for the progress bar (each one syncs a GPU)
UNFITTED_TOTAL = 10**9  # schedule length of a budget-only run until max_minutes fits it
BUDGET_FIT_SHARE = 0.1  # max_minutes fits the schedule once this share of it is spent

ValidationHook = Callable[[int, dict, torch.nn.Module], None]  # see Trainer's on_validation


@dataclass
class TrainResult:
    tracking_uri: str
    run_id: str
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict
    time_shares: dict  # of the loop's wall time: steps, data, validation (see _time_shares)
    pending: int = 0  # logging calls a lost MLflow server never took (tracking.resend_pending)


class Trainer:
    """One training run, read top to bottom: set-up, step loop, validation and checkpoints, end.

    Parameters
    ----------
    config : Config
    resume : path, optional
        A ``last.pt`` to continue exactly.
    on_validation : callable, optional
        ``on_validation(step, metrics, model)``, called on rank 0 after each validation and its
        checkpoint (the model is in training mode; copy what you keep), e.g. bench/finetune.py
        snapshots the weights to score them on a held-out set.
    stop_at : int, optional
        Stop after this step with a validation and a checkpoint, without changing the schedule
        (``--resume`` continues as if uninterrupted); it does not count for early stopping.

    ``state`` (:class:`~srunet.training.resume.TrainState`) holds everything a resumed run needs
    besides the optimiser, scheduler and RNG states.
    """

    def __init__(self, config: Config, resume: Path | None = None, *,
                 on_validation: Optional[ValidationHook] = None, stop_at: Optional[int] = None):
        self.config, self.resume = config, resume
        self.on_validation, self.stop_at = on_validation, stop_at
        if stop_at is not None and stop_at < 1:
            raise ValueError(f"stop_at must be a step >= 1, got {stop_at}")
        self.rank, self.world = distributed()
        self.device = device_for(config, self.rank)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.out_dir = Path(config.out_dir).resolve()
        self.best_path, self.last_path = (self.out_dir / "checkpoints" / f"{name}.pt"
                                          for name in ("best", "last"))
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        torch.use_deterministic_algorithms(self.device.type == "cpu", warn_only=True)
        if resume is None:
            check_init_from(config)  # before the data loads: a wrong path fails in a second
        self._load_data()
        self.total_steps = config.train.max_steps or UNFITTED_TOTAL
        self.state = TrainState(schedule_total=self.total_steps, warmup_steps=config.train.warmup_steps)
        # float64: a sum restored from a checkpoint continues bit-identically
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.timing = {"data": 0.0, "validation": 0.0}  # seconds in this process
        self._build_model()
        resume_note = self._restore() if resume is not None else None
        self.tracker = self._start_tracking(resume_note) if self.rank == 0 else None
        self.amp = autocast_enabled(self.device, config.train.amp, config.train.channels_last)

    def _load_data(self) -> None:
        data = self.config.data
        self.pairs = find_pairs(*data.folders())
        if self.rank == 0 and (note := unregistered_note(data.folders()[0])) is not None:
            print(note, file=sys.stderr)
        if data.skip_smaller_than_tile:
            self.pairs, small = ds.at_least(self.pairs, data.tile_size)
            if small and self.rank == 0:
                print(f"data.skip_smaller_than_tile: {len(small)} of {len(small) + len(self.pairs)} "
                      f"pairs are smaller than {data.tile_size} LR px and left out", file=sys.stderr)
        self.train_pairs, self.val_pairs = ds.split_by_image(self.pairs, data.val_fraction,
                                                             self.config.seed)
        tile = data.tile_size
        train_images = ds.load_images(self.train_pairs, data, tile)
        self.val_images = ds.load_images(self.val_pairs[:data.max_val_images], data, tile)
        self.val_data = prepare_validation(self.val_images)
        self.dataset = ds.TileDataset(train_images, tile, self.config.seed,
                                      data.foreground_fraction)

    def _build_model(self) -> None:
        train = self.config.train
        self.model = SRUNet(**self.config.model.model_dump()).to(self.device)
        if train.init_from is not None and self.resume is None:
            load_initial_weights(self.config, self.model, self.device)
        # float32 weights (autocast computes in bf16 from them); channels_last strides only
        self.model = to_memory_format(self.model, train.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train.learning_rate,
                                           weight_decay=train.weight_decay)
        # Read from the state at each step: max_minutes may fit the schedule during the run.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: schedule_factor(step, self.state.warmup_steps,
                                                         self.state.schedule_total))
        self.wrapped = self.model
        if self.world > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if train.compile:
            self.wrapped = torch.compile(self.wrapped)

    def _restore(self) -> str:
        """Load the resumed checkpoint's weights and training state; describe config changes."""
        saved = Checkpoint.load(self.resume, map_location=self.device)
        if not saved.resumable:
            raise ValueError(f"{self.resume} holds weights only (no training state); cannot "
                             "resume it (start from its weights with train.init_from instead)")
        note = check_resume(self.config, saved.config, Path(self.resume))
        self.model.load_state_dict(saved.model_state)
        self.optimizer.load_state_dict(saved.optimizer)
        self.scheduler.load_state_dict(saved.scheduler)
        set_rng_state(saved.rng)
        self.state = TrainState.from_dict(saved.state, str(self.resume))
        self.loss_sum.fill_(self.state.interval_loss)
        if self.state.budget_fitted:  # train.max_minutes fixed the end of the schedule
            self.total_steps = min(self.total_steps, self.state.schedule_total)
        else:  # train.max_steps may have changed: the cosine spans the new length
            self.state.schedule_total = self.total_steps
        return note

    def _start_tracking(self, resume_note: str | None) -> Tracker:
        tracker = Tracker(self.config, self.out_dir, run_id=self.state.run_id)
        self.state.run_id = tracker.run_id
        if resume_note is not None:  # the run's params are the original config: record changes
            tracker.client.set_tag(tracker.run_id, f"resumed_at_step_{self.state.step}",
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
        self.time_shares, self.paused, self.pending = {}, False, 0
        status = "FAILED"
        try:
            self.progress = self._progress_bar()
            started = time.perf_counter()
            self._loop()
            self.progress.close()
            self.time_shares = time_shares(self.timing, time.perf_counter() - started)
            status = "FINISHED"
        finally:
            if self.tracker is not None:
                self._finish(status)
        result = TrainResult(self.tracker.uri if self.tracker else "", self.state.run_id or "",
                             self.best_path, self.last_path, self.state.metrics,
                             self.time_shares, self.pending)
        if self.world > 1:
            # Rank 0 still writes the final report: tearing gloo down on one rank while the
            # other is busy aborted the process at exit ("terminate called ...") now and then.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return result

    def _progress_bar(self) -> tqdm:
        """Steps towards ``train.max_steps``; with only ``train.max_minutes``, the budget's
        seconds (step count beside), so the ETA is the budget's rest, never a guess from the
        placeholder length (UNFITTED_TOTAL) or from a schedule fitted on a few steps."""
        budget = self.config.train.max_minutes
        self.time_bar = self.config.train.max_steps is None
        if self.time_bar:
            return tqdm(total=round(60 * budget), initial=int(self.state.train_seconds),
                        disable=self.rank != 0, desc="training (time budget)", unit="s")
        return tqdm(total=self.total_steps, initial=self.state.step, disable=self.rank != 0,
                    desc="training", unit="step")

    def _loop(self) -> None:
        """Steps until the end, an early stop or ``stop_at``; a validation every
        ``train.val_every`` steps and at the end. One DataLoader (persistent workers) serves
        the whole run."""
        state, every = self.state, self.config.train.val_every
        if state.step >= self.total_steps:
            return
        self.started = time.perf_counter() - state.train_seconds
        batches = iter(self._loader())
        while True:
            waited = time.perf_counter()
            lr_tiles, hr_tiles = next(batches)
            self.timing["data"] += time.perf_counter() - waited
            self._step(lr_tiles, hr_tiles)
            self._fit_schedule_to_budget()
            step = state.step
            last = step >= self.total_steps
            scheduled = last or step % every == 0
            paused = self.stop_at is not None and step >= self.stop_at
            if not (scheduled or paused):
                continue
            state.train_seconds = time.perf_counter() - self.started
            stop, self.paused = last or paused, paused and not last
            validating = time.perf_counter()
            if self.rank == 0:
                # A pause (stop_at) leaves best checkpoint and early stopping as they were, so
                # a resumed run ends exactly like an uninterrupted one.
                stop = self._validate(counts=scheduled) or stop
            if self.world > 1:  # every rank follows rank 0's early-stopping decision
                flag = torch.tensor([int(stop)], device=self.device)
                torch.distributed.broadcast(flag, 0)
                stop = bool(flag[0].item())
            self.timing["validation"] += time.perf_counter() - validating
            if stop:
                return

    def _loader(self) -> torch.utils.data.DataLoader:
        """This rank's batches from the current step on (``dataset.StepTiles``)."""
        batch, workers = self.config.train.batch_size, self.config.train.num_workers
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=batch, drop_last=True,
            sampler=ds.StepTiles(self.state.step, batch, self.rank, self.world),
            num_workers=workers, persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None, pin_memory=self.device.type == "cuda")

    def _step(self, lr_tiles: torch.Tensor, hr_tiles: torch.Tensor) -> None:
        layout = self.config.train.channels_last
        loss = training_step(self.wrapped, self.optimizer, to_batch(lr_tiles, self.device, layout),
                             to_batch(hr_tiles, self.device, layout), self.config.train, self.amp)
        self.scheduler.step()
        self.state.step += 1
        # Summed on the device: reading a loss back every step would stall a GPU.
        self.loss_sum += loss.detach().double()
        self.state.interval_batches += 1
        if self.time_bar:  # whole seconds of the budget spent (validations included)
            self.progress.update(max(0, int(time.perf_counter() - self.started) - self.progress.n))
        else:
            self.progress.update(1)
        if self.state.step % LOG_EVERY == 0:
            self.progress.set_postfix(step=self.state.step, loss=f"{loss.detach().item():.4f}")

    def _fit_schedule_to_budget(self) -> None:
        """With ``train.max_minutes``: once a tenth of the budget is spent, end the schedule
        (cosine decay included, warmup at most a tenth of it) at the step the measured pace
        reaches the budget. Fitted once and saved, so a resumed run keeps the same schedule."""
        budget, state = self.config.train.max_minutes, self.state
        if budget is None or state.budget_fitted:
            return
        elapsed = time.perf_counter() - self.started  # steps and validations so far
        fitted = [0, self.total_steps, state.warmup_steps]  # [fitted now?, total, warmup]
        if elapsed >= BUDGET_FIT_SHARE * 60.0 * budget:
            per_step = elapsed / max(1, state.step)
            total = min(self.total_steps, state.step + max(0, int((60 * budget - elapsed) / per_step)))
            fitted = [1, total, min(self.config.train.warmup_steps, total // 10)]
        if self.world > 1:  # rank 0's clock decides, so every rank ends at the same step
            shared = torch.tensor(fitted, device=self.device)
            torch.distributed.broadcast(shared, 0)
            fitted = [int(v) for v in shared.tolist()]
        if not fitted[0]:
            return
        self.total_steps = state.schedule_total = fitted[1]
        state.warmup_steps, state.budget_fitted = fitted[2], True
        if not self.time_bar:  # a steps bar ends where the schedule now ends
            self.progress.total = self.total_steps
        self.progress.write(f"train.max_minutes={budget:g}: {1000 * elapsed / state.step:.0f} ms "
                            f"per step so far; the schedule now ends at step {self.total_steps}")

    # ----------------------------------------------------------- validation and checkpoints
    def _validate(self, counts: bool) -> bool:
        """Validate, log, checkpoint, call ``on_validation``; True when early stopping says stop.

        Only validations that ``count`` (every val_every steps, and the end; not a ``stop_at``
        pause) reset the running loss, update best checkpoint and patience, and make previews.
        """
        state = self.state
        state.interval_loss = float(self.loss_sum)  # the one read-back of the losses
        if not math.isfinite(state.interval_loss):  # say so, not "NaN in image_test" later
            raise ValueError(f"training diverged (loss {state.interval_loss} by step {state.step})"
                             "; lower train.learning_rate or raise train.warmup_steps")
        metrics, panels = validate(self.model, self.val_data, self.device)
        metrics["train_loss"] = state.interval_loss / max(1, state.interval_batches)
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        if counts:
            self.loss_sum.zero_()
            state.interval_loss, state.interval_batches = 0.0, 0
            improved = metrics["val_psnr"] > state.best_psnr
            state.best_psnr = max(state.best_psnr, metrics["val_psnr"])
            state.bad_validations = 0 if improved else state.bad_validations + 1
            state.validations += 1
        state.metrics = metrics
        self._save(improved=counts and state.bad_validations == 0)
        if not self.best_path.exists():  # a run paused before its first validation
            shutil.copyfile(self.last_path, self.best_path)
        self.tracker.log_metrics(metrics, step=state.step)
        self.tracker.flush()
        best = f"{state.best_psnr:.2f} dB" if math.isfinite(state.best_psnr) else "none yet"
        self.progress.write(f"step {state.step}: val PSNR {metrics['val_psnr']:.2f} dB (bicubic "
                            f"{metrics['val_bicubic_psnr']:.2f} dB), best so far {best}")
        if counts and (state.validations - 1) % self.config.train.preview_every == 0:
            with tempfile.TemporaryDirectory() as tmp:
                png = save_preview(panels[0], Path(tmp) / f"step_{state.step:07d}.png",
                                   f"step {state.step}: PSNR {metrics['val_psnr']:.2f} dB "
                                   f"(bicubic {metrics['val_bicubic_psnr']:.2f} dB)")
                self.tracker.log_artifact(png, "previews")
        if self.on_validation is not None:
            self.on_validation(state.step, dict(metrics), self.model)
        return state.bad_validations >= self.config.train.patience

    def _save(self, improved: bool) -> None:
        """Write ``last.pt`` (:class:`~srunet.model.checkpoint.Checkpoint`); copy it to
        ``best.pt`` when validation improved."""
        config = self.config
        Checkpoint(
            model_kwargs=config.model.model_dump(),
            # contiguous float32: the same file whatever memory format trained it
            model_state={k: v.contiguous() for k, v in self.model.state_dict().items()},
            normalization=normalization_entry(config.data),
            config=config.model_dump(mode="json"), step=self.state.step,
            metrics=self.state.metrics, optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), rng=rng_state(),
            state=self.state.to_dict()).save(self.last_path)
        if improved:
            shutil.copyfile(self.last_path, self.best_path)
        if config.train.snapshots:  # weights only: for a held-out learning curve afterwards
            Checkpoint(model_kwargs=config.model.model_dump(),
                       model_state={k: v.contiguous() for k, v in self.model.state_dict().items()},
                       normalization=normalization_entry(config.data),
                       config=config.model_dump(mode="json"), step=self.state.step,
                       metrics=self.state.metrics,
                       ).save(self.last_path.with_name(f"step_{self.state.step:07d}.pt"))

    def _finish(self, status: str) -> None:
        """Log the best checkpoint and its QC report on the validation images (not at a
        ``stop_at`` pause: the resumed run does it); end the MLflow run."""
        tracker = self.tracker
        try:
            if status == "FINISHED":
                tracker.log_metrics(self.time_shares, step=self.state.step)
                tracker.flush()
                print("wall time: " + ", ".join(f"{k[len('time_share_'):]} {100 * v:.0f} %"
                                                for k, v in self.time_shares.items()), flush=True)
            if status == "FINISHED" and self.best_path.exists() and not self.paused:
                tracker.log_artifact(self.best_path, "checkpoints")
                best = Checkpoint.load(self.best_path, map_location=self.device)
                self.model.load_state_dict(best.model_state)
                with tempfile.TemporaryDirectory() as tmp:
                    report = final_report(self.model, self.val_images,
                                          normalization_entry(self.config.data), self.device,
                                          Path(tmp) / "validation_report")
                    tracker.client.log_artifacts(tracker.run_id, str(report), "validation_report")
        finally:
            self.pending = tracker.end(status)


def train(config: Config, resume: Path | None = None, *, stop_at: int | None = None,
          on_validation: Optional[ValidationHook] = None) -> TrainResult:
    """Train a model as configured (resuming ``resume`` exactly if given); returns where the
    run and its checkpoints are. ``stop_at``, ``on_validation``: see :class:`Trainer`."""
    return Trainer(config, resume, on_validation=on_validation, stop_at=stop_at).run()
