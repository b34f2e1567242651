"""The package's halo: it covers the network's receptive field, and no less would do.

The declared input halo is checked three ways: against the reach of one perturbed pixel, by an
independent ring test on the package's own weights (changing every input pixel at distance
h + 1 from a kept block leaves it exactly unchanged, at distance h it does not), and against a
radius formula that undercounts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srunet.model.predictor import load_model, package_blocks

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_halo_covers_measured_receptive_field(tiny_descr, tiny_checkpoint):
    """Perturb one input pixel: outputs farther than the halo (or the radius) do not change."""
    from srunet.model.checkpoint import build_model, load_checkpoint

    model = build_model(load_checkpoint(tiny_checkpoint)).double()
    size, centre = 128, 64  # a multiple of the grid: the internal padding plays no part
    image = torch.rand(1, 1, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bumped = image.clone()
    bumped[..., centre, centre] += 1.0
    with torch.no_grad():
        changed = (model(bumped) - model(image)).abs()[0, 0].numpy() > 1e-12
    ys, xs = np.nonzero(changed)
    reach = int(max(np.abs(ys // 2 - centre).max(), np.abs(xs // 2 - centre).max()))
    declared = package_blocks(tiny_descr).halo
    assert 0 < reach <= model.receptive_radius() <= declared, (reach, model.receptive_radius(), declared)


def _ring(size: int, region: slice, distance: int) -> np.ndarray:
    """Mask of the input pixels at Chebyshev distance exactly ``distance`` from the square
    ``region`` x ``region`` of a ``size`` x ``size`` image."""
    index = np.arange(size)
    gap = np.maximum(np.maximum(region.start - index, index - (region.stop - 1)), 0)
    return np.maximum(gap[:, None], gap[None, :]) == distance


def _kept_output_change(network, halo: int, distance: int) -> float:
    """Largest change of the output over a kept region (the 2x image of a 16 px input square)
    when the input pixels at ``distance`` from that square get random values; float64."""
    size = 16 + 2 * (halo + 9)  # the perturbed ring stays inside the image, off its border
    region = slice(halo + 9, halo + 9 + 16)
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 1, size, size, dtype=torch.float64, generator=generator)
    ring = torch.from_numpy(_ring(size, region, distance))
    bumped = image.clone()
    bumped[0, 0][ring] += torch.randn(int(ring.sum()), dtype=torch.float64, generator=generator)
    kept = (slice(None), slice(None), slice(2 * region.start, 2 * region.stop),
            slice(2 * region.start, 2 * region.stop))
    with torch.no_grad():
        return float((network(bumped)[kept] - network(image)[kept]).abs().max())


def _package_network(rdf: Path):
    """The package's state-dict weights in its architecture file's class, as a consumer
    builds them, in float64."""
    import yaml

    from srunet.model.unet import SRUNet

    weights = yaml.safe_load(rdf.read_text(encoding="utf-8"))["weights"]["pytorch_state_dict"]
    network = SRUNet(**weights["architecture"]["kwargs"]).double().eval()
    network.load_state_dict(torch.load(rdf.parent / weights["source"], weights_only=True))
    return network


@pytest.mark.parametrize("which", ["tiny", "release"])
def test_declared_halo_is_needed_and_sufficient(which, tiny_package):
    """Independent of how the halo was computed: with the rdf's declared halo h (input px),
    changing every input pixel at distance h + 1 from a kept block leaves its outputs exactly
    unchanged (the halo suffices), and changing those at distance h changes some of them (a
    smaller halo would not do)."""
    rdf = tiny_package if which == "tiny" else REPO_ROOT / "rdf.yaml"
    halo = package_blocks(load_model(rdf)).halo
    network = _package_network(rdf)
    assert _kept_output_change(network, halo, halo + 1) == 0.0
    # Small (only the block's border pixels reach that far, through the outermost taps: ~1e-7
    # for the release, ~3e-9 for the tiny net) but far above float64 rounding (~1e-16 of
    # outputs of order 1): the dependence is real, as the exact zero above shows.
    assert _kept_output_change(network, halo, halo) > 1e-12


def test_ring_mask():
    ring = _ring(7, slice(3, 4), 2)  # pixels at distance 2 from the centre pixel
    assert ring.sum() == 16 and ring[1, 1] and ring[5, 3] and not ring[2, 3] and not ring[0, 0]


def test_measured_radius_catches_an_undercounting_formula(tiny_checkpoint):
    from srunet.model.checkpoint import build_model, load_checkpoint
    from srunet.model.package import measured_radius

    model = build_model(load_checkpoint(tiny_checkpoint))
    model.receptive_radius = lambda: 3  # a formula that forgot most layers
    with pytest.raises(RuntimeError, match="fix the formula"):
        measured_radius(model)
