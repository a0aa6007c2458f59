"""Deprecated path, kept so that existing imports work: use `ghostnet.nn` instead."""

import warnings

from .nn import *  # noqa: F403
from .nn import __all__  # noqa: F401

warnings.warn("ghostnet.layers is deprecated; import from ghostnet.nn", DeprecationWarning, stacklevel=2)
