"""Losses and the learning-rate schedule of the training loop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def schedule_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier at optimizer step ``step``: linear warmup to 1 over ``warmup``
    steps, then cosine decay to 0.01 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


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


def training_loss(prediction: torch.Tensor, target: torch.Tensor, train) -> torch.Tensor:
    """The configured loss (``train.loss``, ``train.ssim_weight``).

    L1 is robust to outliers in the targets (a median-like estimator); MSE estimates the mean
    of the noisy targets, the quantity PSNR rewards.
    """
    if train.loss == "mse":
        return F.mse_loss(prediction, target)
    loss = F.l1_loss(prediction, target)
    if train.loss == "l1+ssim":
        loss = (1 - train.ssim_weight) * loss + train.ssim_weight * ssim_loss(prediction, target)
    return loss
