"""Face recognition: GhostFaceNet embeddings trained through an ArcFace / CosFace margin head, verified with the LFW protocol.

Its models are registered under the task tag ``face`` (``list_models(task="face")``); its commands are
``ghostnet face <mode>`` (`SPEC`).
"""

from ..spec import TaskSpec
from . import models as models  # registers the task's models
from .cli import MODES
from .task import FaceConfig, FaceTask, train_face

__all__ = ["SPEC", "FaceConfig", "FaceTask", "train_face"]

SPEC = TaskSpec(
    "face", "train, evaluate, embed with, verify with and export GhostFaceNet embeddings", FaceConfig, MODES
)
