import math

import pytest
import torch
from torch import nn

from ghostnet.nn import GhostBottleneck, GhostModule, SqueezeExcite, make_divisible


def test_make_divisible_matches_reference_rounding():
    assert make_divisible(16 * 0.5, 4) == 8
    assert make_divisible(24 * 1.3, 4) == 32  # 31.2 -> 32
    assert make_divisible(72 * 0.25, 4) == 20  # SE of 72 channels: 18 -> 20 (timm/official)
    assert make_divisible(10, 8) == 16  # 8 would drop more than 10%
    assert make_divisible(1, 4) == 4  # never below the divisor


@pytest.mark.parametrize("n,s", [(16, 2), (15, 2), (7, 3), (10, 4), (9, 5)])
def test_ghost_module_shapes_and_counts(n, s):
    g = GhostModule(8, n, kernel_size=3, ratio=s, dw_size=3)
    m = math.ceil(n / s)
    assert g.primary_conv[0].out_channels == m
    assert g.cheap_operation[0].out_channels == m * (s - 1)
    assert g.cheap_operation[0].groups == m  # each intrinsic map makes its own s-1 ghosts
    y = g(torch.randn(2, 8, 9, 9))
    assert y.shape == (2, n, 9, 9)


def test_ghost_module_concat_order_and_slicing():
    torch.manual_seed(0)
    g = GhostModule(6, 7, kernel_size=1, ratio=2, dw_size=3).eval()
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        y = g(x)
        intrinsic = g.primary_conv(x)
        ghosts = g.cheap_operation(intrinsic)
    m = g.init_channels  # 4
    assert torch.equal(y[:, :m], intrinsic)  # the identity half comes first
    assert torch.equal(y[:, m:], ghosts[:, : 7 - m])  # then ghosts, sliced to n


def test_ghost_module_ratio_one_is_plain_conv_bn_relu():
    torch.manual_seed(0)
    g = GhostModule(4, 6, kernel_size=3, ratio=1).eval()
    ref = nn.Sequential(nn.Conv2d(4, 6, 3, 1, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU()).eval()
    ref.load_state_dict(g.primary_conv.state_dict())
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(g(x), ref(x))
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in g.modules())


def test_ghost_module_linear_has_negative_outputs():
    g = GhostModule(4, 8, relu=False).eval()
    assert (g(torch.randn(2, 4, 6, 6)) < 0).any()
    g = GhostModule(4, 8, relu=True).eval()
    assert (g(torch.randn(2, 4, 6, 6)) >= 0).all()


def test_ghost_module_stride_and_dilation():
    assert GhostModule(3, 8, 3, stride=2)(torch.randn(1, 3, 16, 16)).shape == (1, 8, 8, 8)
    g = GhostModule(3, 8, 3, dilation=2)
    assert g.primary_conv[0].padding == (2, 2)
    assert g(torch.randn(1, 3, 16, 16)).shape == (1, 8, 16, 16)


@pytest.mark.parametrize(
    "kwargs,arg",
    [
        ({"ratio": 0}, "ratio"),
        ({"dw_size": 2}, "dw_size"),
        ({"dw_size": 0}, "dw_size"),
        ({"stride": 3}, "stride"),
        ({"out_channels": 0}, "out_channels"),
        ({"in_channels": -1}, "in_channels"),
    ],
)
def test_ghost_module_rejects_bad_arguments(kwargs, arg):
    args = {"in_channels": 4, "out_channels": 8} | kwargs
    with pytest.raises(ValueError, match=arg):
        GhostModule(**args)


def test_squeeze_excite_gate():
    se = SqueezeExcite(72, 0.25)
    assert se.conv_reduce.out_channels == 20
    x = torch.randn(2, 72, 4, 4)
    y = se(x)
    gate = y / x
    assert y.shape == x.shape
    assert (gate >= 0).all() and (gate <= 1).all()  # hard sigmoid lies in [0, 1]


@pytest.mark.parametrize("stride,cin,cout,se", [(1, 16, 16, 0), (2, 16, 24, 0), (1, 24, 40, 0.25), (2, 40, 80, 0.25)])
def test_bottleneck_shapes_and_shortcut(stride, cin, cout, se):
    b = GhostBottleneck(cin, 3 * cin, cout, 3, stride, se)
    assert isinstance(b.shortcut, nn.Identity) == (cin == cout and stride == 1)
    assert (b.conv_dw is not None) == (stride == 2)
    assert (b.se is not None) == (se > 0)
    y = b(torch.randn(2, cin, 16, 16))
    assert y.shape == (2, cout, 16 // stride, 16 // stride)


def test_bottleneck_has_no_final_activation():
    b = GhostBottleneck(8, 16, 8).eval()
    assert (b(torch.randn(2, 8, 6, 6)) < 0).any()


@pytest.mark.parametrize(
    "kwargs,arg",
    [({"stride": 4}, "stride"), ({"dw_kernel_size": 4}, "dw_kernel_size"), ({"mid_chs": 0}, "mid_chs")],
)
def test_bottleneck_rejects_bad_arguments(kwargs, arg):
    args = {"in_chs": 8, "mid_chs": 16, "out_chs": 8} | kwargs
    with pytest.raises(ValueError, match=arg):
        GhostBottleneck(**args)
