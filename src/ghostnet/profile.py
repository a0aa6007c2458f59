"""Deprecated path, kept so that existing imports work: use `ghostnet.analysis.profile` instead."""

import warnings

from .analysis.profile import *  # noqa: F403
from .analysis.profile import __all__  # noqa: F401

warnings.warn("ghostnet.profile is deprecated; import from ghostnet.analysis.profile", DeprecationWarning, stacklevel=2)
