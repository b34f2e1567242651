"""How a raw camera image becomes network input, and how the output goes back to camera units.

Two methods, recorded in every checkpoint (``checkpoint["normalization"]``):

- ``mean_std`` (default since v2): ``(x - mean) / (std + eps)`` over the whole image, population
  std (ddof 0), eps 1e-6. This is the zoo's ``zero_mean_unit_variance`` preprocessing, and
  bioimageio.core and deepImageJ/JDLL compute it identically (JDLL: mean and std in double,
  ``(x - mean) / (std + eps)``), so every consumer feeds the network the same numbers. The
  network is trained to output the ISM image *in the same normalised units as its input*
  (``training.dataset`` fits the ISM intensities to the confocal ones), so
  ``output * (std + eps) + mean`` is the prediction in the input's camera units.
- ``percentiles`` (the v1 release): ``(x - p_low) / (p_high - p_low)``, the zoo's
  ``scale_range``. Consumers compute percentiles differently (JDLL takes ``sorted[int(N p)]``,
  core interpolates), so deepImageJ's numbers differ slightly; kept to run v1 checkpoints.

A normalisation is stored as the ``(low, high)`` pair with ``normalized = (x - low) / (high -
low)``: for ``mean_std`` that is ``(mean, mean + std + eps)``.
"""

from __future__ import annotations

import numpy as np

MEAN_STD, PERCENTILES = "mean_std", "percentiles"
EPS = 1e-6  # zero_mean_unit_variance default in bioimageio.core and JDLL
_STATS_PIXELS = 1_000_000  # pixels read to estimate an image's percentiles


def method_of(normalization: dict) -> str:
    """The method of a checkpoint's ``normalization`` entry (v1 checkpoints hold percentiles)."""
    method = normalization.get("method", PERCENTILES)
    if method not in (MEAN_STD, PERCENTILES):
        raise ValueError(f"unknown normalization method {method!r}; expected {MEAN_STD!r} or "
                         f"{PERCENTILES!r}")
    return method


def robust_percentiles(image: np.ndarray, percentiles) -> tuple[float, float]:
    """Percentiles of an image from a strided subsample of at most ~1e6 pixels."""
    stride = max(1, int(np.sqrt(image.size / _STATS_PIXELS)))
    sample = np.asarray(image[::stride, ::stride], dtype=np.float32)
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high)


def mean_std_range(image: np.ndarray) -> tuple[float, float]:
    """``(mean, mean + std + eps)`` of the whole image in float64, population std.

    Summed row block by row block, so a memory-mapped image larger than RAM works.
    """
    total, count, rows = 0.0, 0, max(1, 4_000_000 // max(1, image.shape[-1]))
    for start in range(0, image.shape[0], rows):
        block = np.asarray(image[start:start + rows], dtype=np.float64)
        total, count = total + block.sum(), count + block.size
    mean = total / count
    squares = 0.0
    for start in range(0, image.shape[0], rows):
        block = np.asarray(image[start:start + rows], dtype=np.float64)
        squares += float(((block - mean) ** 2).sum())
    std = float(np.sqrt(squares / count))
    return float(mean), float(mean + std + EPS)


def input_range(image: np.ndarray, normalization: dict) -> tuple[float, float]:
    """``(low, high)`` of a raw input image under a checkpoint's ``normalization``."""
    if method_of(normalization) == MEAN_STD:
        return mean_std_range(image)
    return robust_percentiles(image, normalization["lr_percentiles"])


def normalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(image - low) / (high - low)`` as float32."""
    return ((np.asarray(image, dtype=np.float32) - low) / max(high - low, 1e-6)).astype(np.float32)


def denormalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Inverse of :func:`normalize`: back to the units ``low`` and ``high`` were measured in."""
    return (np.asarray(image, dtype=np.float64) * (high - low) + low).astype(np.float32)
