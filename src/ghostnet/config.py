"""Deprecated path, kept so that existing imports work: use `ghostnet.engine.config` instead."""

import warnings

from .engine.config import *  # noqa: F403
from .engine.config import __all__  # noqa: F401

warnings.warn("ghostnet.config is deprecated; import from ghostnet.engine.config", DeprecationWarning, stacklevel=2)
