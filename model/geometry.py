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
and halo are multiples of the network's pooling grid, so every block sees the same pooling phase.
"""

from __future__ import annotations

SCALE = 2


def lr_to_hr(y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Map an LR region (top-left y, x and size) to the HR region it covers exactly."""
    for name, value in (("y", y), ("x", x), ("height", height), ("width", width)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return SCALE * y, SCALE * x, SCALE * height, SCALE * width


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return -(-int(value) // multiple) * multiple


def input_halo(receptive_radius: int, grid: int) -> int:
    """Input halo (LR px): the receptive radius rounded up to the pooling grid."""
    if receptive_radius < 0:
        raise ValueError(f"receptive_radius must be >= 0, got {receptive_radius}")
    return round_up(receptive_radius, grid)


def output_halo(receptive_radius: int, grid: int) -> int:
    """Output halo (HR px), as the zoo package declares it on the output axes."""
    return SCALE * input_halo(receptive_radius, grid)
