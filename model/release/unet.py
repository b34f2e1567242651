"""srunet architecture v2: a phase-free ("a trous") UNet with an anti-imaged sub-pixel 2x head.

This file imports only torch and the standard library: BioImage Model Zoo consumers load it on
its own as the `pytorch_state_dict` architecture. It reads top to bottom: blocks first, model last.
See docs/architecture_study.md for the measurements behind the choices.

Geometry. Pixel (i, j) of the input covers output pixels (2i..2i+1, 2j..2j+1), so the output
pixel centres sit at half-pixel offsets of the input grid. This is PyTorch's
``align_corners=False`` convention, used for the residual upsampling; the sub-pixel head puts
sub-pixel (a, b) of input pixel (i, j) at output pixel (2i + a, 2j + b), the same convention.

Why phase-free. A pooling UNet computes level l on a grid of stride 2**l anchored at the image
origin, so its output depends on the position modulo 2**depth and tiles placed at arbitrary
offsets disagree. Here every level stays at the input resolution and the encoder widens its
view with dilated convolutions (dilation 2**level) instead: every layer is a convolution, so
shifting the input by any integer number of pixels shifts the output by exactly twice that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DilatedBlock(nn.Module):
    """Two 3x3 convolutions with the same dilation, each followed by LeakyReLU.

    No normalisation layer: batch statistics would make a tile's output depend on its
    neighbours in the batch and on the tile size, which breaks tiled == whole-image prediction.
    Zero padding of ``dilation`` keeps the size; it only touches the image border, which the
    tiling halo (``SRUNet.receptive_radius``) keeps away from the tile interior.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))))


class Merge(nn.Module):
    """Decoder step: 1x1 conv of the deeper features, concatenation with the skip, DilatedBlock.

    Same as a UNet "up" step, minus the upsampling: both inputs are already at full resolution.
    """

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.reduce = nn.Conv2d(deep_channels, skip_channels, 1)
        self.block = DilatedBlock(2 * skip_channels, out_channels, dilation)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.reduce(deep), skip], dim=1))


def icnr_(weight: torch.Tensor, scale: int = 2) -> None:
    """ICNR initialisation of a sub-pixel convolution weight, in place.

    The ``scale**2`` sub-pixel kernels of each output channel start identical, so the head
    starts as nearest upsampling of one map: no checkerboard at initialisation.
    """
    out_channels = weight.shape[0] // scale**2
    sub = torch.empty(out_channels, *weight.shape[1:])
    nn.init.kaiming_normal_(sub, a=0.1)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale**2, dim=0))


class AntiImagingShuffleHead(nn.Module):
    """Sub-pixel 2x head followed by a fixed binomial low-pass at the output resolution.

    Two 3x3 convolutions at the input resolution make the four sub-pixel phases, PixelShuffle
    interleaves them. Phases made by independent kernels leave spectral images near the output
    Nyquist frequency (flagged by FRC as detail "beyond the ISM limit"); the separable
    [1, 2, 1] / 4 filter is zero there and costs 1 input pixel of halo. It is a fixed buffer,
    not a weight, so it is not in the state dict. ICNR makes the head start artefact-free.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.to_subpixels = nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        icnr_(self.to_subpixels.weight)
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4
        kernel = (taps[:, None] * taps[None, :]).expand(out_channels, 1, 3, 3).clone()
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.to_subpixels(self.act(self.conv(x))))
        # Replicate padding: the low-pass must not pull the correction towards 0 at the border.
        out = F.pad(out, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(out, self.kernel, groups=out.shape[1])


class SRUNet(nn.Module):
    """Phase-free UNet at the input resolution with an anti-imaged sub-pixel 2x head and a
    residual over the bilinearly upsampled input.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels (1 for a single fluorescence channel).
    depth : int
        Number of encoder levels below the first; level l uses dilation 2**l, so the deepest
        level sees as far as a pooling UNet of the same depth.
    base_channels : int
        Feature channels at level 0.
    channel_growth : int
        Extra channels per level: level l has ``base_channels + channel_growth * l`` channels.
        All levels run at full resolution, so widths grow slowly (0 keeps them constant).
    residual : bool
        Add the bilinear 2x upsampling of the input to the network output, so the network
        learns only the correction (requires in_channels == out_channels).

    The defaults (depth 3, 24 channels: 91k parameters, 45 kFLOP per output pixel, halo 47 input
    px) are the released network, sized for CPU training and inference. ``depth=4,
    base_channels=32`` (209k, 104 kFLOP, halo 95) gained most in the architecture study
    (docs/architecture_study.md) at equal steps, at 2.3x the cost.

    Accepts any input size >= 1x1 and returns exactly twice its height and width. Shifting the
    input by an integer number of pixels shifts the output by twice that (``grid`` is 1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 3,
        base_channels: int = 24,
        channel_growth: int = 0,
        residual: bool = True,
    ):
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if base_channels < 1 or channel_growth < 0:
            raise ValueError(
                f"need base_channels >= 1 and channel_growth >= 0, got {base_channels}, {channel_growth}"
            )
        if residual and in_channels != out_channels:
            raise ValueError(
                f"residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depth, self.base_channels = depth, base_channels
        self.channel_growth, self.residual = channel_growth, residual
        widths = [base_channels + channel_growth * level for level in range(depth + 1)]
        self.stem = DilatedBlock(in_channels, widths[0], dilation=1)
        self.encoder = nn.ModuleList(
            DilatedBlock(widths[i], widths[i + 1], dilation=2 ** (i + 1)) for i in range(depth)
        )
        self.decoder = nn.ModuleList(
            Merge(widths[i + 1], widths[i], widths[i], dilation=2**i) for i in range(depth)
        )
        self.head = self.make_head(widths[0], out_channels)
        # Weights in channels_last: the CPU's convolutions (oneDNN) run 1.3-2x faster in it,
        # with the same numbers up to float rounding (bench/inference_layout.py); forward()
        # follows the weights' layout, so a model moved back to the standard layout runs in it.
        # The head's fixed kernel stays standard (DistributedDataParallel's buffer broadcast
        # refuses a channels_last buffer with size-1 dimensions).
        self.to(memory_format=torch.channels_last)
        self.head.kernel = self.head.kernel.contiguous()

    def make_head(self, in_channels: int, out_channels: int) -> nn.Module:
        """The 2x head (a method so that studies can swap it)."""
        return AntiImagingShuffleHead(in_channels, out_channels)

    @property
    def grid(self) -> int:
        """Input size multiple the network needs, and its phase period: 1 (shift-equivariant)."""
        return 1

    def receptive_radius(self) -> int:
        """Exact distance, in input pixels, over which an output pixel depends on the input.

        Each 3x3 convolution with dilation d adds d: two per encoder level l = 0..depth
        (dilation 2**l) and two per decoder level l = 0..depth-1. The head adds 2 for its two
        3x3 convolutions at the input resolution and 1 for the 3-tap low-pass at the output
        resolution (1 output pixel reaches 1 input pixel across a pixel border). The residual's
        bilinear upsampling needs 1 pixel, which this already covers. Tiles with at least this halo reproduce the whole-image
        prediction exactly (up to float rounding), at any offset.
        """
        encoder = 2 * sum(2**level for level in range(self.depth + 1))
        decoder = 2 * sum(2**level for level in range(self.depth))
        return encoder + decoder + 2 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = self.head.conv.weight.is_contiguous(memory_format=torch.channels_last)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.stem(x)
        skips = []
        for block in self.encoder:
            skips.append(features)
            features = block(features)
        for merge, skip in zip(self.decoder[::-1], skips[::-1]):
            features = merge(features, skip)
        out = self.head(features)
        if self.residual:
            out = out + F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return out.contiguous()  # the standard layout for every consumer
