"""Paired LR/HR images and the aligned, augmented, normalised tiles cut from them.

Images are opened memory-mapped where the TIFF allows it, so a dataset larger than RAM trains;
only tiles are read. Tile k is drawn from its own generator seeded by (seed, k): the tiles do not
depend on worker count, process count or on where a resumed run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from srunet.evaluation.metrics import gain_offset
from srunet.geometry import dihedral, lr_to_hr
from srunet.physics.optics import degrade_to_lr
from srunet.normalization import MEAN_STD, mean_std_range, normalize, robust_percentiles
from srunet.tiff import PairFiles, open_image
from srunet.training.config import DataConfig

@dataclass
class ImagePair:
    """One checked LR/HR pair with its normalisation and a coarse foreground map."""

    files: PairFiles
    lr: np.ndarray
    hr: np.ndarray
    lr_range: tuple[float, float]
    hr_range: tuple[float, float]
    foreground: np.ndarray = field(repr=False)  # candidate tile corners (y, x), LR pixels

    @classmethod
    def load(cls, files: PairFiles, data: DataConfig, tile: int) -> "ImagePair":
        lr, hr = open_image(files.lr), open_image(files.hr)
        if hr.shape != (2 * lr.shape[0], 2 * lr.shape[1]):
            raise ValueError(
                f"pair {files.name!r}: HR {files.hr} has shape {hr.shape}, but it must be exactly "
                f"2x the LR {files.lr} shape {lr.shape}, i.e. {(2 * lr.shape[0], 2 * lr.shape[1])}"
            )
        if min(lr.shape) < tile:
            raise ValueError(
                f"pair {files.name!r}: LR {files.lr} shape {lr.shape} is smaller than the tile "
                f"size {tile}; lower data.tile_size, remove the image, or set "
                "data.skip_smaller_than_tile=true"
            )
        for path, image in ((files.lr, lr), (files.hr, hr)):
            _check_values(path, image)
        if data.normalization == MEAN_STD:
            lr_range = mean_std_range(lr)
            hr_range = target_range(lr, hr, lr_range, files.hr)
        else:
            lr_range = robust_percentiles(lr, data.lr_percentiles)
            hr_range = robust_percentiles(hr, data.hr_percentiles)
        return cls(files, lr, hr, lr_range, hr_range, _foreground_corners(lr, tile, lr_range))

    def tile(self, y: int, x: int, size: int, transform: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (LR, HR) tiles at LR corner (y, x), dihedral ``transform`` in 0..7."""
        hy, hx, hsize, _ = lr_to_hr(y, x, size, size)
        lr = normalize(self.lr[y:y + size, x:x + size], *self.lr_range)
        hr = normalize(self.hr[hy:hy + hsize, hx:hx + hsize], *self.hr_range)
        return dihedral(lr, transform), dihedral(hr, transform)


def target_range(lr: np.ndarray, hr: np.ndarray, lr_range: tuple[float, float],
                 hr_path: Path) -> tuple[float, float]:
    """``(low, high)`` that puts the HR image into the LR image's normalised units.

    The two detectors count in different units (camera ADU vs photons) and see different
    haze, so the HR image is mapped by the gain/offset that best explains the LR image from it
    (least squares of the LR image on the HR image blurred by the PSF difference and binned
    2x2). The network then predicts the ISM image in its input's units, which is what lets a
    user undo the normalisation (``srunet.normalization``).
    """
    gain, offset = gain_offset(np.asarray(lr, np.float64), degrade_to_lr(np.asarray(hr, np.float64)))
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"{hr_path}: its intensities do not rise with the LR image's (fitted gain "
                         f"{gain:.3g}); check that the pair shows the same field (`srunet pairs`)")
    low, high = lr_range
    # a * hr + b normalised by (low, high) == (hr - low') / (high' - low')
    hr_low = (low - offset) / gain
    return float(hr_low), float(hr_low + (high - low) / gain)


def _check_values(path: Path, image: np.ndarray) -> None:
    # Chunked, so a memory-mapped image larger than RAM is checked without loading it whole.
    rows = max(1, 4_000_000 // max(1, image.shape[1]))
    low, high = np.inf, -np.inf
    for start in range(0, image.shape[0], rows):
        chunk = np.asarray(image[start:start + rows], dtype=np.float64)
        if not np.all(np.isfinite(chunk)):
            raise ValueError(f"{path} contains NaN or inf values (rows {start}..{start + rows}); "
                             "clean or remove the image")
        low, high = min(low, chunk.min()), max(high, chunk.max())
    if high <= low:
        raise ValueError(f"{path} is constant (all pixels {low}); it carries no signal to learn")


def _foreground_corners(lr: np.ndarray, tile: int, lr_range) -> np.ndarray:
    """Tile corners (stride tile/4) whose tile mean is above the Otsu threshold of all means."""
    from skimage.filters import threshold_otsu

    step = max(1, tile // 4)
    ys = np.arange(0, lr.shape[0] - tile + 1, step)
    xs = np.arange(0, lr.shape[1] - tile + 1, step)
    means = np.array([[float(np.mean(lr[y:y + tile:4, x:x + tile:4])) for x in xs] for y in ys])
    corners = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    if np.ptp(means) <= 0:
        return corners
    keep = means.ravel() > threshold_otsu(means)
    return corners[keep] if keep.any() else corners


def split_by_image(pairs: list[PairFiles], val_fraction: float, seed: int):
    """Seeded train/validation split by image (never by tile). Needs >= 2 images."""
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 image pairs to hold one out for validation, got {len(pairs)}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = min(len(pairs) - 1, max(1, int(round(val_fraction * len(pairs)))))
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [pairs[i] for i in train], [pairs[i] for i in val]


class TileDataset(torch.utils.data.Dataset):
    """An endless sequence of random aligned tile pairs.

    Tile ``k`` (any index >= 0) is drawn from a generator seeded by (seed, k) alone, so one
    DataLoader (persistent workers) serves the whole run, and a resumed or multi-process run
    draws the same tiles (the training loop gives step s the tiles of its global batch, see
    :class:`StepTiles`). It has no length: the loop's sampler says which tiles to draw.
    """

    def __init__(self, images: list[ImagePair], tile_size: int, seed: int,
                 foreground_fraction: float = 0.75):
        if not images:
            raise ValueError("TileDataset needs at least one image pair")
        self.images, self.tile_size, self.seed = images, tile_size, seed
        self.foreground_fraction = foreground_fraction
        # Pick images in proportion to their area, so large fields are not under-sampled.
        areas = np.array([im.lr.size for im in images], dtype=np.float64)
        self.weights = areas / areas.sum()

    def spec(self, index: int) -> tuple[int, int, int, int]:
        """(image index, y, x, transform) of tile ``index``."""
        if index < 0:
            raise IndexError(f"tile index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        which = int(rng.choice(len(self.images), p=self.weights))
        image = self.images[which]
        if rng.random() < self.foreground_fraction:
            y, x = image.foreground[rng.integers(len(image.foreground))]
            # jitter within the corner grid step so tiles are not locked to it
            jitter = rng.integers(0, max(1, self.tile_size // 4), size=2)
            y = min(int(y + jitter[0]), image.lr.shape[0] - self.tile_size)
            x = min(int(x + jitter[1]), image.lr.shape[1] - self.tile_size)
        else:
            y = int(rng.integers(0, image.lr.shape[0] - self.tile_size + 1))
            x = int(rng.integers(0, image.lr.shape[1] - self.tile_size + 1))
        return which, int(y), int(x), int(rng.integers(8))

    def __getitem__(self, index: int):
        which, y, x, transform = self.spec(index)
        lr, hr = self.images[which].tile(y, x, self.tile_size, transform)
        return torch.from_numpy(lr)[None], torch.from_numpy(hr)[None]


class StepTiles(torch.utils.data.Sampler):
    """This rank's tile indices from step ``start`` on, without end.

    Step s takes the tiles [s * B * world, (s + 1) * B * world) and rank r the r-th slice of B,
    so ranks are disjoint and together see exactly what one process with batch B * world sees:
    a torchrun run equals a single-process run of the global batch, and a resumed run draws
    what the uninterrupted one drew.
    """

    def __init__(self, start: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.batch, self.rank, self.world = start, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            first = (step * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)
            step += 1


def at_least(pairs: list[PairFiles], tile: int) -> tuple[list[PairFiles], list[PairFiles]]:
    """(pairs whose LR image has both sides >= ``tile``, the others); reads headers only."""
    kept, small = [], []
    for pair in pairs:
        (kept if min(open_image(pair.lr).shape) >= tile else small).append(pair)
    return kept, small


def load_images(pairs: list[PairFiles], data: DataConfig, tile: int) -> list[ImagePair]:
    """Open and check every pair (errors name the file)."""
    return [ImagePair.load(p, data, tile) for p in pairs]

