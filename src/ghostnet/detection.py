"""Deprecated path, kept so that existing imports work: the detectors are in `ghostnet.models.detection`."""

import warnings

from .models.detection import *  # noqa: F403
from .models.detection import __all__  # noqa: F401

warnings.warn(
    "ghostnet.detection is deprecated; import from ghostnet.models.detection", DeprecationWarning, stacklevel=2
)
