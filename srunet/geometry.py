"""The 2x coordinate mapping and the halo geometry, in exactly one place (pure functions).

Pixel convention: LR pixel (i, j) covers exactly HR pixels (2i..2i+1, 2j..2j+1); the simulator,
the tile dataset, the network's residual (align_corners=False) and the bicubic baseline share it.

Tiling (all numbers in LR/input pixels unless said otherwise)::

    outer block (what the network sees)
    +-----------------------------------+
    | halo                              |
    |   +---------------------------+   |
    |   | inner block (kept)        |   |
    |   |                           |   |
    |   +---------------------------+   |
    |                              halo |
    +-----------------------------------+

The inner block of the output is the 2x image of the inner input block; the halo must cover
the network's receptive radius so the kept pixels equal a whole-image prediction. Block starts
and halo are multiples of the network's grid (1 for a phase-free network, 2**depth for a pooling
UNet), so every block sees the same phase.
Block sizes are ``min + n * step`` (:class:`Blocks`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from srunet.physics.contract import SCALE  # the contract's 2x; re-exported here with the mapping


def lr_to_hr(y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Map an LR region (top-left y, x and size) to the HR region it covers exactly."""
    for name, value in (("y", y), ("x", x), ("height", height), ("width", width)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return SCALE * y, SCALE * x, SCALE * height, SCALE * width


def hr_slices(y: int, x: int, height: int, width: int) -> tuple[slice, slice]:
    """Index of the HR region that the LR region (y, x, height, width) covers exactly."""
    hy, hx, hh, hw = lr_to_hr(y, x, height, width)
    return slice(hy, hy + hh), slice(hx, hx + hw)


def hr_shape(lr_shape: tuple[int, int]) -> tuple[int, int]:
    """Shape of the HR image of an LR image of shape ``lr_shape``."""
    return SCALE * int(lr_shape[0]), SCALE * int(lr_shape[1])


class Blocks(NamedTuple):
    """Block geometry of a package, in input (LR) pixels: sizes ``min + n * step``, halo per side.

    ``min = 2 * halo + step``: the smallest block that keeps at least one grid cell after the
    halo is cropped on both sides (the zoo spec needs min output - 2 * halo >= 1).
    """

    min: int
    step: int
    halo: int

    @property
    def output_halo(self) -> int:
        """The halo in output (HR) pixels, as the package declares it on its output axes."""
        return SCALE * self.halo


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return -(-int(value) // multiple) * multiple


def block_geometry(receptive_radius: int, grid: int) -> Blocks:
    """Blocks for a network of this receptive radius working on a ``grid`` of input pixels.

    The halo is the radius rounded up to the grid, so every block starts on the grid.
    """
    if receptive_radius < 0:
        raise ValueError(f"receptive_radius must be >= 0, got {receptive_radius}")
    halo = round_up(receptive_radius, grid)
    return Blocks(min=2 * halo + grid, step=grid, halo=halo)


def largest_block(size: int, blocks: Blocks) -> int:
    """Largest declared block size ``min + n * step`` that is <= ``size`` (ValueError if none)."""
    if size < blocks.min:
        raise ValueError(f"size {size} is below the smallest block size {blocks.min}")
    return blocks.min + (size - blocks.min) // blocks.step * blocks.step


def smallest_block(size: int, blocks: Blocks) -> int:
    """Smallest declared block size ``min + n * step`` that is >= ``size``."""
    return blocks.min + round_up(max(0, size - blocks.min), blocks.step)


def dihedral(image: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 rotations/flips of a (y, x) array (0 = identity; >= 4 flips x after the
    rotation). They map the 2x pixel convention onto itself, so LR and HR transform alike."""
    if not 0 <= transform < 8:
        raise ValueError(f"transform must be in 0..7, got {transform}")
    out = np.rot90(image, k=transform % 4)
    return np.ascontiguousarray(out[:, ::-1] if transform >= 4 else out)


def inverse_dihedral(image: np.ndarray, transform: int) -> np.ndarray:
    """Undo :func:`dihedral` ``transform``."""
    if not 0 <= transform < 8:
        raise ValueError(f"transform must be in 0..7, got {transform}")
    out = image[:, ::-1] if transform >= 4 else image
    return np.ascontiguousarray(np.rot90(out, k=-(transform % 4)))
