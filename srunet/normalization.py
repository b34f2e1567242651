"""How a raw camera image becomes network input, and how the output goes back to camera units.

Two methods, recorded in every checkpoint (``checkpoint["normalization"]``, the plain-dict form
of :class:`Normalization`):

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

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

MEAN_STD, PERCENTILES = "mean_std", "percentiles"
EPS = 1e-6  # zero_mean_unit_variance default in bioimageio.core and JDLL
_STATS_PIXELS = 1_000_000  # pixels read to estimate an image's percentiles


@dataclass(frozen=True)
class Normalization:
    """How a network's inputs (and training targets) were normalised.

    Parameters
    ----------
    method : {"mean_std", "percentiles"}
    eps : float
        Added to the std (``mean_std``; the zoo's zero_mean_unit_variance eps).
    lr_percentiles, hr_percentiles : (low, high) or None
        Percentiles of the input and target images (``percentiles`` only).
    """

    method: str = MEAN_STD
    eps: float = EPS
    lr_percentiles: Optional[tuple[float, float]] = None
    hr_percentiles: Optional[tuple[float, float]] = None

    def __post_init__(self):
        if self.method not in (MEAN_STD, PERCENTILES):
            raise ValueError(f"unknown normalization method {self.method!r}; expected "
                             f"{MEAN_STD!r} or {PERCENTILES!r}")
        if self.method == PERCENTILES and (self.lr_percentiles is None or self.hr_percentiles is None):
            raise ValueError("normalization method 'percentiles' needs lr_percentiles and "
                             "hr_percentiles, e.g. [1.0, 99.8]")

    def to_dict(self) -> dict:
        """The checkpoint entry: ``{"method", "eps"}`` or ``{"method", "lr_percentiles",
        "hr_percentiles"}`` (lists), the form every srunet checkpoint holds."""
        if self.method == MEAN_STD:
            return {"method": MEAN_STD, "eps": self.eps}
        return {"method": PERCENTILES, "lr_percentiles": list(self.lr_percentiles),
                "hr_percentiles": list(self.hr_percentiles)}

    @classmethod
    def from_dict(cls, entry: Union[dict, "Normalization"]) -> "Normalization":
        """Read a checkpoint entry; v1 entries (no ``method``) hold percentiles."""
        if isinstance(entry, Normalization):
            return entry
        method = entry.get("method", PERCENTILES)
        if method == MEAN_STD:
            known = {"method", "eps"}
        else:
            known = {"method", "lr_percentiles", "hr_percentiles"}
        if set(entry) - known:
            raise ValueError(f"normalization entry {entry} has unknown keys "
                             f"{sorted(set(entry) - known)}; a {method!r} entry holds {sorted(known)}")
        if method == MEAN_STD:
            return cls(MEAN_STD, float(entry.get("eps", EPS)))
        low_high = {key: tuple(float(v) for v in entry[key]) for key in known - {"method"}
                    if entry.get(key) is not None}
        return cls(method, lr_percentiles=low_high.get("lr_percentiles"),
                   hr_percentiles=low_high.get("hr_percentiles", low_high.get("lr_percentiles")))

    def input_range(self, image: np.ndarray) -> tuple[float, float]:
        """``(low, high)`` of a raw input image under this normalisation."""
        if self.method == MEAN_STD:
            return mean_std_range(image)
        return robust_percentiles(image, self.lr_percentiles)


def method_of(normalization: Union[dict, Normalization]) -> str:
    """The method of a checkpoint's ``normalization`` entry (v1 checkpoints hold percentiles)."""
    return Normalization.from_dict(normalization).method


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


def input_range(image: np.ndarray, normalization: Union[dict, Normalization]) -> tuple[float, float]:
    """``(low, high)`` of a raw input image under a checkpoint's ``normalization``."""
    return Normalization.from_dict(normalization).input_range(image)


def normalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(image - low) / (high - low)`` as float32."""
    return ((np.asarray(image, dtype=np.float32) - low) / max(high - low, 1e-6)).astype(np.float32)


def denormalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Inverse of :func:`normalize`: back to the units ``low`` and ``high`` were measured in."""
    return (np.asarray(image, dtype=np.float64) * (high - low) + low).astype(np.float32)
