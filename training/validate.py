"""Validation during training: whole validation images, model vs bicubic, and preview panels."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from srunet.evaluation.figures import side_by_side
from srunet.evaluation.metrics import all_metrics, upsample_bicubic
from srunet.evaluation.report import evaluate_arrays
from srunet.geometry import hr_slices
from srunet.normalization import Normalization, input_range, normalize
from srunet.training.dataset import ImagePair

MAX_VAL_EDGE = 384  # LR pixels; larger validation images are centre-cropped to bound the cost


def validation_arrays(image: ImagePair) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (LR, HR) arrays of a validation pair, centre-cropped to MAX_VAL_EDGE."""
    height, width = image.lr.shape
    y0 = max(0, (height - MAX_VAL_EDGE) // 2)
    x0 = max(0, (width - MAX_VAL_EDGE) // 2)
    h, w = min(height, MAX_VAL_EDGE), min(width, MAX_VAL_EDGE)
    lr = normalize(image.lr[y0:y0 + h, x0:x0 + w], *image.lr_range)
    hr = normalize(image.hr[hr_slices(y0, x0, h, w)], *image.hr_range)
    return lr, hr


@torch.no_grad()
def predict_array(model: torch.nn.Module, lr: np.ndarray, device: torch.device) -> np.ndarray:
    """Run the network on one normalised 2-D image (whole, no tiling)."""
    was_training = model.training
    model.eval()
    out = model(torch.from_numpy(lr)[None, None].to(device)).float().cpu().numpy()[0, 0]
    model.train(was_training)
    return out


class ValidationImage(NamedTuple):
    """A validation pair, normalised and cropped, with its bicubic baseline scored once."""

    lr: np.ndarray
    hr: np.ndarray
    bicubic: np.ndarray
    bicubic_scores: dict


def prepare_validation(images: list[ImagePair]) -> list[ValidationImage]:
    """Arrays and bicubic scores of the validation images (they do not change during a run)."""
    prepared = []
    for image in images:
        lr, hr = validation_arrays(image)
        bicubic = upsample_bicubic(lr)
        prepared.append(ValidationImage(lr, hr, bicubic, all_metrics(hr, bicubic)))
    return prepared


def validate(model, data: list[ValidationImage], device) -> tuple[dict[str, float], list]:
    """Mean metrics over the validation images for the model (``val_*``) and bicubic
    (``val_bicubic_*``), and the arrays (lr, bicubic, sr, hr) of each image for previews."""
    rows, panels = [], []
    for item in data:
        sr = predict_array(model, item.lr, device)
        rows.append({**{f"val_{k}": v for k, v in all_metrics(item.hr, sr).items()},
                     **{f"val_bicubic_{k}": v for k, v in item.bicubic_scores.items()}})
        panels.append((item.lr, item.bicubic, sr, item.hr))
    means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    return means, panels


def save_preview(panel, path: Path, title: str = "") -> Path:
    """PNG panel LR | bicubic | SR | HR of one validation image."""
    names = ("LR (confocal)", "bicubic 2x", "SR (srunet)", "HR (ISM)")
    return side_by_side(path, list(zip(names, panel)), title=title)


def final_report(model, images: list[ImagePair], normalization: Normalization, device,
                 out_dir: Path) -> Path:
    """The evaluation report (metrics vs bicubic, FRC, consistency, TTA uncertainty and its
    calibration) of ``model`` on the validation images; returns the report folder."""
    def predict(lr: np.ndarray) -> np.ndarray:
        # the same per-image normalisation as the package's preprocessing
        return predict_array(model, normalize(lr, *input_range(lr, normalization)), device)

    pairs = [(image.files.name, *validation_arrays(image)) for image in images]
    # predictions stay in the input's normalised units: the error bar's scale there is 1
    return evaluate_arrays(pairs, predict, out_dir, overwrite=True, tta=True,
                           model_name="end-of-training validation",
                           output_scale=lambda lr: 1.0).parent
