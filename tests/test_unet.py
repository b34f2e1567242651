"""The architecture: exact 2x shapes at any size, receptive field bound, config one to one."""

import pytest
import torch

from srunet.model.unet import SRUNet
from srunet.training.config import ModelConfig


@pytest.mark.parametrize("shape", [(97, 131), (64, 64), (1, 1), (33, 17), (8, 200)])
@pytest.mark.parametrize("depth", [1, 3])
def test_output_is_exactly_twice_the_input(shape, depth):
    net = SRUNet(depth=depth, base_channels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 1, 2 * shape[0], 2 * shape[1])


def test_receptive_radius_bounds_the_measured_dependence():
    torch.manual_seed(0)
    net = SRUNet(depth=2, base_channels=4).eval()
    size, centre = 96, 48
    x = torch.randn(1, 1, size, size, requires_grad=True)
    # gradient of one output pixel w.r.t. the input marks every input pixel it depends on
    net(x)[0, 0, 2 * centre, 2 * centre].backward()
    ys, xs = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
    measured = int(max((ys - centre).abs().max(), (xs - centre).abs().max()))
    assert 0 < measured <= net.receptive_radius()
    assert net.receptive_radius() - measured <= 2 * net.grid  # the bound is not vacuous


def test_built_from_config_one_to_one():
    config = ModelConfig(depth=2, base_channels=6, residual=False)
    net = SRUNet(**config.model_dump())
    assert (net.depth, net.base_channels, net.residual) == (2, 6, False)


def test_residual_of_constant_is_constant():
    # with a zeroed head, the output is the bilinear 2x of the input: constant stays constant
    net = SRUNet(depth=2, base_channels=4).eval()
    torch.nn.init.zeros_(net.head.to_subpixels.weight)
    torch.nn.init.zeros_(net.head.to_subpixels.bias)
    with torch.no_grad():
        out = net(torch.full((1, 1, 13, 21), 3.0))
    assert torch.allclose(out, torch.full_like(out, 3.0))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="depth"):
        SRUNet(depth=-1)
    with pytest.raises(ValueError, match="residual"):
        SRUNet(in_channels=1, out_channels=2, residual=True)


def test_channels_last_weights_change_the_layout_not_the_numbers():
    """SRUNet() keeps its convolution weights in channels_last (faster CPU convolutions for
    every PyTorch consumer); the output is the standard layout's to float rounding, in NCHW."""
    torch.manual_seed(0)
    net = SRUNet(depth=2, base_channels=8).eval()
    assert net.head.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.head.conv.weight.is_contiguous()
    assert net.head.kernel.is_contiguous()  # the fixed buffer stays standard (DDP broadcast)
    standard = SRUNet(depth=2, base_channels=8).eval()
    standard.load_state_dict(net.state_dict())  # copy_ keeps the destination's layout
    standard.to(memory_format=torch.contiguous_format)
    assert standard.head.conv.weight.is_contiguous()
    x = torch.randn(2, 1, 45, 38)
    with torch.no_grad():
        out, reference = net(x), standard(x)
    assert out.is_contiguous() and reference.is_contiguous()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert not torch.equal(out, torch.zeros_like(out))
