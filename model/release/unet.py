"""srunet architecture: a UNet that maps a confocal image to a 2x denser ISM-like image.

This file imports only torch and the standard library: BioImage Model Zoo consumers load it on
its own as the `pytorch_state_dict` architecture. It reads top to bottom: blocks first, model last.

Geometry. Pixel (i, j) of the input covers output pixels (2i..2i+1, 2j..2j+1), so the output
pixel centres sit at half-pixel offsets of the input grid. This is PyTorch's
``align_corners=False`` convention, used for the residual upsampling below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by GroupNorm-free LeakyReLU.

    No normalisation layer: batch statistics would make a tile's output depend on its
    neighbours in the batch and on the tile size, which breaks tiled == whole-image prediction.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))))


class Down(nn.Module):
    """2x2 max pooling, then a ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = ConvBlock(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.max_pool2d(x, 2))


class Up(nn.Module):
    """Nearest 2x upsampling + 1x1 conv, concatenation with the skip, then a ConvBlock.

    Nearest + 1x1 instead of a transposed convolution avoids checkerboard artefacts.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, skip_channels, 1)
        self.block = ConvBlock(2 * skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.block(torch.cat([x, skip], dim=1))


class UpsampleHead(nn.Module):
    """Sub-pixel convolution head: conv to 4*C channels, PixelShuffle(2) to 2x per axis."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.to_subpixels = nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.to_subpixels(self.act(self.conv(x))))


class SRUNet(nn.Module):
    """UNet at the input resolution with a 2x sub-pixel head and a residual over the
    bilinearly upsampled input.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels (1 for a single fluorescence channel).
    depth : int
        Number of 2x2 poolings; the input is padded internally to a multiple of 2**depth.
    base_channels : int
        Feature channels at full resolution; level l has ``base_channels * 2**l`` channels.
    residual : bool
        Add the bilinear 2x upsampling of the input to the network output, so the network
        learns only the correction (requires in_channels == out_channels).

    Accepts any input size >= 1x1 and returns exactly twice its height and width.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 3,
        base_channels: int = 24,
        residual: bool = True,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depth, self.base_channels, self.residual = depth, base_channels, residual
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.stem = ConvBlock(in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i]) for i in range(depth))
        self.head = UpsampleHead(widths[0], out_channels)

    @property
    def grid(self) -> int:
        """Input size multiple the network works on internally (2**depth)."""
        return 2**self.depth

    def receptive_radius(self) -> int:
        """Upper bound, in input pixels, of how far an output pixel sees into the input.

        Sum over the layers of (kernel_size // 2) x (pixel stride at that layer): two 3x3
        convolutions per block, pooling, nearest upsampling and the head. A test checks it
        against the measured dependence. The package halo must cover it.
        """
        radius = 2  # stem block at stride 1
        for level in range(self.depth):
            radius += 2**level  # 2x2 max pool at stride 2**level
            radius += 2 * 2 ** (level + 1)  # Down block convolutions at stride 2**(level+1)
            radius += 2 ** (level + 1)  # nearest upsampling back from stride 2**(level+1)
            radius += 2 * 2**level  # Up block convolutions at stride 2**level
        return radius + 2  # head: two 3x3 convolutions at stride 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        # Pad bottom/right to the pooling grid so any size works; the grid stays anchored at
        # the top-left pixel, so tiles starting at multiples of `grid` see the same phase.
        pad_y = (self.grid - height % self.grid) % self.grid
        pad_x = (self.grid - width % self.grid) % self.grid
        padded = F.pad(x, (0, pad_x, 0, pad_y), mode="replicate")

        features = self.stem(padded)
        skips = []
        for down in self.downs:
            skips.append(features)
            features = down(features)
        for up, skip in zip(self.ups[::-1], skips[::-1]):
            features = up(features, skip)
        out = self.head(features)[..., : 2 * height, : 2 * width]
        if self.residual:
            out = out + F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return out
