#!/usr/bin/env python
"""The mAP of guessing: 100 random boxes (random size 20-90 px, random class, random score) per image,
scored by the same COCO evaluation as the detectors. The chance level quoted in docs/RESULTS.md.

    python scripts/chance_map.py data/det-fmnist/val data/det-fmnist/annotations/instances_val.json
"""

import argparse
import random
import sys

try:
    from ghostnet.tasks.detect.coco import load_coco_split
    from ghostnet.tasks.detect.task import coco_metrics
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images")
    p.add_argument("annotations")
    p.add_argument("--per-image", type=int, default=100)
    p.add_argument("--trials", type=int, default=3)
    a = p.parse_args()
    split = load_coco_split(a.images, a.annotations)
    rng = random.Random(0)
    for t in range(a.trials):
        records = []
        for im in split.images:
            for _ in range(a.per_image):
                w, h = rng.uniform(20, 90), rng.uniform(20, 90)
                x, y = rng.uniform(0, max(0.0, im["width"] - w)), rng.uniform(0, max(0.0, im["height"] - h))
                records.append(
                    {
                        "image_id": im["id"],
                        "category_id": rng.choice(split.category_ids),
                        "bbox": [x, y, w, h],
                        "score": rng.random(),
                    }
                )
        m = coco_metrics(split, records)
        print(f"trial {t + 1}: mAP {m['map']:.3f}  mAP@0.5 {m['map50']:.3f}")


if __name__ == "__main__":
    main()
