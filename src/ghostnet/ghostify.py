"""Deprecated path, kept so that existing imports work: use `ghostnet.nn` (`ghostify`, `ghostify_report`)."""

import warnings

from .nn.ghostify import GhostifyReport, ReplacedConv, ghostify, ghostify_report
from .nn.surgery import conv_bn_pairs, set_submodule

__all__ = ["GhostifyReport", "ReplacedConv", "conv_bn_pairs", "ghostify", "ghostify_report", "set_submodule"]

warnings.warn("ghostnet.ghostify is deprecated; import from ghostnet.nn", DeprecationWarning, stacklevel=2)
