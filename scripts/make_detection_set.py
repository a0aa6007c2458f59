#!/usr/bin/env python
"""Build a small COCO-format detection set from real images: Fashion-MNIST (or digits) objects pasted onto
scikit-learn's two bundled photographs, with known boxes. See docs/RESULTS.md for the runs trained on it.

    python scripts/make_detection_set.py data/det-fmnist --source fashion_mnist --train 800 --val 200
    ghostnet detect train --data-dir data/det-fmnist --min-size 320 --max-size 320 ...
"""

import argparse
import json
import sys

try:
    from ghostnet.tasks.detect.synth import make_detection_set
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out_dir", help="where to write train/, val/ and annotations/")
    p.add_argument(
        "--source", default="fashion_mnist", choices=["fashion_mnist", "mnist", "digits"], help="the object images"
    )
    p.add_argument("--data-dir", help="where the source dataset is (default: the usual search path)")
    p.add_argument("--train", type=int, default=800, help="training images")
    p.add_argument("--val", type=int, default=200, help="validation images")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--objects", type=int, nargs=2, default=[1, 4], metavar=("MIN", "MAX"), help="objects per image")
    p.add_argument(
        "--object-size", type=int, nargs=2, default=[40, 112], metavar=("MIN", "MAX"), help="pasted object side, pixels"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    a = p.parse_args()
    try:
        summary = make_detection_set(
            a.out_dir,
            a.train,
            a.val,
            a.image_size,
            tuple(a.objects),
            tuple(a.object_size),
            a.source,
            a.data_dir,
            a.seed,
            a.overwrite,
        )
    except ValueError as e:  # includes a missing source dataset
        print(f"make_detection_set: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
