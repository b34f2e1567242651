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

from srunet.model.unet import SRUNet
from srunet.training import dataset as ds
from srunet.training.checkpoint import load_checkpoint, load_weights, save_checkpoint
from srunet.training.config import Config, ModelConfig
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
    from srunet.training.config import flatten

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


def train(config: Config, resume: Path | None = None) -> TrainResult:
    """Train a model as configured; returns where the run and its checkpoints are."""
    rank, world = _distributed()
    device = _device(config, rank)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    out_dir = Path(config.out_dir).resolve()
    ckpt_dir = out_dir / "checkpoints"
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)

    pairs = ds.find_pairs(*config.data.folders())
    train_pairs, val_pairs = ds.split_by_image(pairs, config.data.val_fraction, config.seed)
    tile = config.data.tile_size
    train_images = ds.load_images(train_pairs, config.data.lr_percentiles, config.data.hr_percentiles, tile)
    val_images = ds.load_images(val_pairs[:config.data.max_val_images], config.data.lr_percentiles,
                                config.data.hr_percentiles, tile)
    dataset = ds.TileDataset(train_images, tile, config.data.tiles_per_epoch, config.seed,
                             config.data.foreground_fraction)
    steps_per_epoch = len(dataset) // (config.train.batch_size * world)
    if steps_per_epoch < 1:
        raise ValueError(f"data.tiles_per_epoch={len(dataset)} is smaller than one batch "
                         f"({config.train.batch_size} x {world} processes); raise it")
    total_steps = config.train.epochs * steps_per_epoch
    if config.train.max_steps:
        total_steps = min(total_steps, config.train.max_steps)

    model = SRUNet(**config.model.model_dump()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate,
                                  weight_decay=config.train.weight_decay)
    # The schedule spans the configured epochs, not max_steps, so a run cut short by max_steps
    # and resumed follows the same learning-rate curve as an uninterrupted one.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.train.warmup_steps, config.train.epochs * steps_per_epoch))
    state = {"step": 0, "best_psnr": -math.inf, "bad_epochs": 0, "epoch_loss": 0.0,
             "epoch_batches": 0, "run_id": None, "metrics": {}}
    if config.train.init_from is not None and resume is None:
        _initial_weights(config, model, device)
    if resume is not None:
        saved = load_checkpoint(resume, map_location=device)
        if "optimizer" not in saved:
            raise ValueError(f"{resume} holds weights only (no training state); cannot resume it")
        resume_note = _check_resume(config, saved["config"], Path(resume))
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        state.update(saved["state"])

    wrapped = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    tracker = None
    if rank == 0:
        from srunet.training.tracking import Tracker

        tracker = Tracker(config, out_dir, run_id=state["run_id"])
        state["run_id"] = tracker.run_id
        if resume is not None:  # the run's params are the original config: record the changes
            tracker.client.set_tag(tracker.run_id, f"resumed_at_step_{state['step']}", resume_note)
        if resume is None:
            tracker.log_data_digests([p.lr for p in pairs] + [p.hr for p in pairs])
            tracker.log_json({"train": [p.name for p in train_pairs],
                              "validation": [p.name for p in val_pairs]}, "split.json")
            if config.train.init_from is not None:  # which weights a fine-tune started from
                from srunet.files import file_sha256

                tracker.client.set_tag(tracker.run_id, "init_from_sha256",
                                       file_sha256(config.train.init_from))

    amp = config.train.amp and device.type == "cuda"
    best_path, last_path = ckpt_dir / "best.pt", ckpt_dir / "last.pt"

    def checkpoint(improved: bool) -> None:
        payload = {
            "model_kwargs": config.model.model_dump(), "model_state": model.state_dict(),
            "normalization": {"lr_percentiles": list(config.data.lr_percentiles),
                              "hr_percentiles": list(config.data.hr_percentiles)},
            "config": config.model_dump(mode="json"), "epoch": state["step"] // steps_per_epoch,
            "step": state["step"], "metrics": state["metrics"], "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": _rng_state(), "state": dict(state),
        }
        save_checkpoint(last_path, payload)
        if improved:
            shutil.copyfile(last_path, best_path)

    def end_of_epoch(epoch: int, complete: bool) -> bool:
        """Validate, log, checkpoint; True when early stopping says stop.

        A run stopped mid-epoch (max_steps) is validated and saved too, but leaves the
        epoch's loss sum and the early-stopping state as they were, so a resumed run
        continues exactly like an uninterrupted one.
        """
        metrics, panels = validate(model, val_images, device)
        metrics["train_loss"] = state["epoch_loss"] / max(1, state["epoch_batches"])
        metrics["learning_rate"] = scheduler.get_last_lr()[0]
        if complete:
            state["epoch_loss"], state["epoch_batches"] = 0.0, 0
            improved = metrics["val_psnr"] > state["best_psnr"]
            state["best_psnr"] = max(state["best_psnr"], metrics["val_psnr"])
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["metrics"] = metrics
        checkpoint(improved=complete and state["bad_epochs"] == 0)
        if not best_path.exists():  # a run shorter than one epoch still leaves a best.pt
            shutil.copyfile(last_path, best_path)
        tracker.log_metrics(metrics, step=state["step"])
        tracker.flush()
        if epoch % config.train.preview_every == 0 or epoch == 1:
            with tempfile.TemporaryDirectory() as tmp:
                png = save_preview(panels[0], Path(tmp) / f"epoch_{epoch:04d}.png",
                                   f"epoch {epoch}: PSNR {metrics['val_psnr']:.2f} dB "
                                   f"(bicubic {metrics['val_bicubic_psnr']:.2f} dB)")
                tracker.log_artifact(png, "previews")
        return state["bad_epochs"] >= config.train.patience

    model.train()
    status = "FAILED"
    try:
        progress = tqdm(total=total_steps, initial=state["step"], disable=rank != 0,
                        desc="training", unit="step")
        stop = state["step"] >= total_steps
        while not stop:
            epoch, offset = divmod(state["step"], steps_per_epoch)
            dataset.set_epoch(epoch)
            # This rank's batches of this epoch, from the step where a resumed run left off.
            per_rank = steps_per_epoch * config.train.batch_size
            indices = range(rank * per_rank + offset * config.train.batch_size, (rank + 1) * per_rank)
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(dataset, list(indices)), batch_size=config.train.batch_size,
                shuffle=False, drop_last=True, num_workers=config.train.num_workers,
                pin_memory=device.type == "cuda")
            for lr_tiles, hr_tiles in loader:
                lr_tiles, hr_tiles = lr_tiles.to(device), hr_tiles.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    prediction = wrapped(lr_tiles)
                prediction = prediction.float()
                # L1 is robust to outliers in the targets (a median-like estimator); MSE
                # estimates the mean of the noisy targets, the quantity PSNR rewards.
                if config.train.loss == "mse":
                    loss = F.mse_loss(prediction, hr_tiles)
                else:
                    loss = F.l1_loss(prediction, hr_tiles)
                if config.train.loss == "l1+ssim":
                    loss = (1 - config.train.ssim_weight) * loss + config.train.ssim_weight * ssim_loss(prediction, hr_tiles)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
                optimizer.step()
                scheduler.step()
                state["step"] += 1
                loss_value = loss.item()
                state["epoch_loss"] += loss_value
                state["epoch_batches"] += 1
                progress.update(1)
                progress.set_postfix(loss=f"{loss_value:.4f}", epoch=epoch + 1)
                if state["step"] >= total_steps:
                    break
            epoch_done = state["step"] % steps_per_epoch == 0
            stop = state["step"] >= total_steps
            if rank == 0:
                if epoch_done or stop:
                    stop = end_of_epoch(epoch + 1, complete=epoch_done) or stop
            if world > 1:  # every rank follows rank 0's early-stopping decision
                flag = torch.tensor([int(stop)], device=device)
                torch.distributed.broadcast(flag, 0)
                stop = bool(flag.item())
        progress.close()
        status = "FINISHED"
    finally:
        if tracker is not None:
            try:
                if status == "FINISHED" and best_path.exists():
                    tracker.log_artifact(best_path, "checkpoints")
                    # The QC report of the best weights on the validation images lands in the run.
                    best = load_checkpoint(best_path, map_location=device)
                    model.load_state_dict(best["model_state"])
                    with tempfile.TemporaryDirectory() as tmp:
                        report = final_report(model, val_images, config.data.lr_percentiles,
                                              device, Path(tmp) / "validation_report")
                        tracker.client.log_artifacts(tracker.run_id, str(report),
                                                     "validation_report")
            finally:
                tracker.end(status)
    result = TrainResult(tracker.uri if tracker else "", state["run_id"] or "", best_path,
                         last_path, state["metrics"])
    if world > 1:
        torch.distributed.destroy_process_group()
    return result
