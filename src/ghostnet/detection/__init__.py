"""GhostNet as a detection backbone (paper Sec. 4.3): models, COCO-format data, training, mAP, drawing.

    model = retinanet_ghostnet(num_classes=81, width=1.1, backbone_weights="state_dict_73.98.pth")
    ghostnet detect-train --data-dir coco --model fasterrcnn_ghostnet
"""

from .models import (
    DETECTORS,
    GhostNetFPN,
    create_detector,
    fasterrcnn_ghostnet,
    freeze_bn,
    ghostnet_fpn_backbone,
    retinanet_ghostnet,
)

__all__ = [
    "DETECTORS",
    "GhostNetFPN",
    "create_detector",
    "fasterrcnn_ghostnet",
    "freeze_bn",
    "ghostnet_fpn_backbone",
    "retinanet_ghostnet",
]
