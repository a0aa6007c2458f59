"""Re-parameterisable Ghost blocks (GhostNetV3, Liu et al. 2024) and the folding that makes them plain convs.

In training, each conv site is several parallel branches summed before the activation: three k x k conv+BN
branches, a 1x1 conv+BN "scale" branch and a BN-only identity branch where shapes allow. All are linear, so
for inference each site folds exactly into one conv with bias (BN folded into each branch, the 1x1 kernel
zero-padded to k x k, the identity written as a one-hot kernel, kernels and biases summed): the folded model
has GhostNetV2's cost.

Attribute names follow the official release (``primary_rpr_conv``, ``cheap_rpr_scale``, ``dw_rpr_conv``, ...,
branches as ``conv`` + ``bn``), so its checkpoints load unchanged; the folded form's names are the plain Ghost
module's (``primary_conv.0``, ``cheap_operation.0``, ``conv_dw``), with a bias.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import cast

import torch
from torch import nn

from .blocks import SqueezeExcite, ghost_shortcut
from .dfc import DFCAttention

__all__ = ["GhostModuleV3", "GhostBottleneckV3", "conv_bn", "fold_branches", "reparameterize"]

Branches = tuple[nn.ModuleList, nn.Module | None, nn.Module | None]  # k x k convs, 1x1 scale, BN identity


def conv_bn(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """k x k conv (no bias, "same" padding), BN: one re-parameterisable branch."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_chs),
        )
    )


def _branches(in_chs: int, out_chs: int, kernel_size: int, stride: int, groups: int, num_branches: int) -> Branches:
    """The branches of one site: `num_branches` k x k conv+BN, a 1x1 conv+BN if k > 1, a BN identity if possible."""
    convs = nn.ModuleList(conv_bn(in_chs, out_chs, kernel_size, stride, groups) for _ in range(num_branches))
    scale = conv_bn(in_chs, out_chs, 1, stride, groups) if kernel_size > 1 else None
    skip = nn.BatchNorm2d(in_chs) if in_chs == out_chs and stride == 1 else None
    return convs, scale, skip


def _run_branches(
    x: torch.Tensor, convs: nn.ModuleList, scale: nn.Module | None, skip: nn.Module | None
) -> torch.Tensor:
    out = sum((branch(x) for branch in convs), torch.zeros((), dtype=x.dtype, device=x.device))
    if scale is not None:
        out = out + scale(x)
    if skip is not None:
        out = out + skip(x)
    return out


def _fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of `kernel` followed by `bn` in eval mode, in float64 (the sum of branches is rounded once)."""
    assert bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var.double() + bn.eps).sqrt()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(std)
    return kernel.double() * (gamma / std).reshape(-1, 1, 1, 1), beta - bn.running_mean.double() * gamma / std


def fold_branches(
    convs: nn.ModuleList, scale: nn.Module | None, skip: nn.Module | None, template: nn.Conv2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one (kernel, bias) equal to the sum of a site's branches, shaped like `template`'s kernel."""
    k = template.kernel_size[0]
    weight = torch.zeros_like(template.weight, dtype=torch.float64)
    bias = torch.zeros(template.out_channels, dtype=torch.float64, device=weight.device)
    for branch in convs:
        w, b = _fold_bn(_conv(branch).weight, _bn(branch))
        weight, bias = weight + w, bias + b
    if scale is not None:
        w, b = _fold_bn(_conv(scale).weight, _bn(scale))
        pad = k // 2
        weight, bias = weight + nn.functional.pad(w, [pad, pad, pad, pad]), bias + b
    if skip is not None:
        identity = torch.zeros_like(weight)
        per_group = weight.shape[1]  # input channels each output channel sees
        for i in range(weight.shape[0]):
            identity[i, i % per_group, k // 2, k // 2] = 1.0
        w, b = _fold_bn(identity, cast(nn.BatchNorm2d, skip))
        weight, bias = weight + w, bias + b
    return weight, bias


def _conv(branch: nn.Module) -> nn.Conv2d:
    return cast(nn.Conv2d, branch.get_submodule("conv"))


def _bn(branch: nn.Module) -> nn.BatchNorm2d:
    return cast(nn.BatchNorm2d, branch.get_submodule("bn"))


def _folded_conv(template: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(
        template.in_channels,
        template.out_channels,
        template.kernel_size,  # type: ignore[arg-type]
        template.stride,  # type: ignore[arg-type]
        template.padding,  # type: ignore[arg-type]
        template.dilation,  # type: ignore[arg-type]
        groups=template.groups,
        bias=True,
    ).to(device=weight.device, dtype=template.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)  # type: ignore[union-attr]
    return conv


class GhostModuleV3(nn.Module):
    """[k x k conv+BN] x3 (+ 1x1, + BN id) summed, [ReLU] -> m maps; [dw d x d conv+BN] x3 + dw 1x1 conv+BN + BN id
    summed, [ReLU] -> m(s-1) ghosts; concat; [x DFC gate]. Folded: k x k conv (bias), [ReLU]; dw d x d conv (bias).

    Args:
        in_channels, out_channels, kernel_size, ratio, dw_size, stride, relu: as `GhostModule`.
        attention: multiply the output by a DFC attention gate (``short_conv``), as GhostNetV2.
        num_branches: parallel k x k conv+BN branches per site in the training form (3 in the paper).
        folded: build the inference form directly (one conv with bias per site).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
        *,
        attention: bool = False,
        num_branches: int = 3,
        folded: bool = False,
    ) -> None:
        super().__init__()
        if ratio < 2 or num_branches < 1:
            raise ValueError(f"GhostModuleV3 needs ratio >= 2 and num_branches >= 1, got {ratio}, {num_branches}")
        self.out_channels = out_channels
        init, new = math.ceil(out_channels / ratio), math.ceil(out_channels / ratio) * (ratio - 1)
        self.primary_activation = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.cheap_activation = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.folded = folded
        self.trim = init * ratio != out_channels  # a static flag, not a shape test: keeps the module traceable
        if folded:
            self.primary_conv = nn.Sequential(
                nn.Conv2d(in_channels, init, kernel_size, stride, kernel_size // 2, bias=True), self.primary_activation
            )
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(init, new, dw_size, 1, dw_size // 2, groups=init, bias=True), self.cheap_activation
            )
        else:
            primary = _branches(in_channels, init, kernel_size, stride, 1, num_branches)
            self.primary_rpr_conv, self.primary_rpr_scale, self.primary_rpr_skip = primary
            cheap = _branches(init, new, dw_size, 1, init, num_branches)
            self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip = cheap
        self.short_conv = DFCAttention(in_channels, out_channels, kernel_size, stride) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            x1 = self.primary_conv(x)  # (B, m, H', W')
            x2 = self.cheap_operation(x1)  # (B, m(s-1), H', W')
        else:
            x1 = self.primary_activation(
                _run_branches(x, self.primary_rpr_conv, self.primary_rpr_scale, self.primary_rpr_skip)
            )
            x2 = self.cheap_activation(
                _run_branches(x1, self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip)
            )
        out = torch.cat([x1, x2], dim=1)
        if self.trim:
            out = out[:, : self.out_channels]
        if self.short_conv is not None:
            out = out * self.short_conv(x, (out.shape[-2], out.shape[-1]))
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every site's branches into one conv with bias, in place (eval-mode BN statistics)."""
        if self.folded:
            return
        primary_template, cheap_template = _conv(self.primary_rpr_conv[0]), _conv(self.cheap_rpr_conv[0])
        w, b = fold_branches(self.primary_rpr_conv, self.primary_rpr_scale, self.primary_rpr_skip, primary_template)
        self.primary_conv = nn.Sequential(_folded_conv(primary_template, w, b), self.primary_activation)
        w, b = fold_branches(self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip, cheap_template)
        self.cheap_operation = nn.Sequential(_folded_conv(cheap_template, w, b), self.cheap_activation)
        for name in (
            "primary_rpr_conv",
            "primary_rpr_scale",
            "primary_rpr_skip",
            "cheap_rpr_conv",
            "cheap_rpr_scale",
            "cheap_rpr_skip",
        ):
            delattr(self, name)
        self.folded = True


class GhostBottleneckV3(nn.Module):
    """GhostV3 module (ReLU) expand, [dw k x k stride 2 as re-parameterisable branches], [SE], GhostV3 module
    (linear) reduce, + shortcut. Folded, the depthwise branches are one dw conv with bias (``conv_dw``).

    Args: as `GhostBottleneck`, plus `attention` (DFC gate on the expansion), `num_branches`, `folded`.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        *,
        attention: bool = False,
        num_branches: int = 3,
        folded: bool = False,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.stride, self.folded = stride, folded
        rep = dict(num_branches=num_branches, folded=folded)
        self.ghost1 = GhostModuleV3(in_chs, mid_chs, relu=True, attention=attention, **rep)  # type: ignore[arg-type]
        self.conv_dw: nn.Module | None = None
        self.bn_dw: nn.Module | None = None
        if stride > 1 and folded:
            pad = (dw_kernel_size - 1) // 2
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=True)
            self.bn_dw = nn.Identity()
        elif stride > 1:
            self.dw_rpr_conv = nn.ModuleList(
                conv_bn(mid_chs, mid_chs, dw_kernel_size, stride, mid_chs) for _ in range(num_branches)
            )
            self.dw_rpr_scale = conv_bn(mid_chs, mid_chs, 1, stride, mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModuleV3(mid_chs, out_chs, relu=False, **rep)  # type: ignore[arg-type]
        self.shortcut = ghost_shortcut(in_chs, out_chs, dw_kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)  # (B, out, H/s, W/s)
        x = self.ghost1(x)  # (B, mid, H, W)
        if self.stride > 1 and self.conv_dw is not None:
            x = self.conv_dw(x)  # (B, mid, H/s, W/s)
        elif self.stride > 1:
            x = _run_branches(x, self.dw_rpr_conv, self.dw_rpr_scale, None)
        if self.se is not None:
            x = self.se(x)
        return self.ghost2(x) + shortcut  # (B, out, H/s, W/s)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold both Ghost modules and the depthwise branches, in place."""
        self.ghost1.reparameterize()
        self.ghost2.reparameterize()
        if self.stride > 1 and not self.folded:
            template = _conv(self.dw_rpr_conv[0])
            w, b = fold_branches(self.dw_rpr_conv, self.dw_rpr_scale, None, template)
            self.conv_dw, self.bn_dw = _folded_conv(template, w, b), nn.Identity()
            del self.dw_rpr_conv, self.dw_rpr_scale
        self.folded = True


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """`model` with every re-parameterisable block folded (the inference form); eval mode only.

    Folding is exact up to float rounding and idempotent; a model without such blocks comes back unchanged.

    Raises:
        ValueError: the model is in training mode (folding uses the BN running statistics).
    """
    if model.training:
        raise ValueError("reparameterize needs a model in eval mode (call model.eval()): folding uses BN statistics")
    if not inplace:
        model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, (GhostModuleV3, GhostBottleneckV3)):
            m.reparameterize()
    kwargs = getattr(model, "model_kwargs", None)
    if isinstance(kwargs, dict) and any(isinstance(m, GhostModuleV3) for m in model.modules()):
        setattr(model, "model_kwargs", {**kwargs, "folded": True})  # noqa: B010 - rebuilt from a checkpoint folded
    return model
