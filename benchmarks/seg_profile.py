"""Params and MACs of our segmenters against torchvision's MobileNetV3-Large ones, by the same profiler.

python benchmarks/seg_profile.py [--sizes 512x512 1024x2048] [--classes 21]
"""

from __future__ import annotations

import argparse
import sys

try:
    import torch
    from torchvision.models import segmentation as tvs

    from ghostnet.analysis.profile import profile_model
    from ghostnet.models import create_model
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")


def models(classes: int) -> dict[str, torch.nn.Module]:
    """Ours and torchvision's, all at output stride 16, no auxiliary head, `classes` outputs."""
    return {
        "lraspp_ghostnet_100": create_model("lraspp_ghostnet_100", num_classes=classes),
        "tv lraspp_mobilenet_v3_large": tvs.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=classes
        ),
        "deeplabv3_ghostnet_100": create_model("deeplabv3_ghostnet_100", num_classes=classes),
        "tv deeplabv3_mobilenet_v3_large": tvs.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=classes, aux_loss=False
        ),
        "deeplabv3_ghostnet_100 (os 8)": create_model("deeplabv3_ghostnet_100", num_classes=classes, output_stride=8),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1024x2048"], help="HxW input sizes")
    ap.add_argument("--classes", type=int, default=21)
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    head = "| model | params | " + " | ".join(f"GMACs at {h}x{w}" for h, w in sizes) + " |"
    print(head + "\n|" + "---|" * (2 + len(sizes)))
    with torch.no_grad():
        for name, model in models(args.classes).items():
            model.eval()
            profiles = [profile_model(model, (h, w), in_chans=3) for h, w in sizes]
            macs = " | ".join(f"{p.macs / 1e9:.2f}" for p in profiles)
            print(f"| {name} | {profiles[0].params / 1e6:.2f} M | {macs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
