"""Is the 2-core CPU busy with compute or with data loading? Images/s of the loader alone vs a train step.

python benchmarks/data_loader.py [--dataset fashion_mnist] [--model ghostnet_small_050] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time

try:
    import torch
    import torch.nn.functional as F

    from ghostnet import create_model
    from ghostnet.data import TensorLoader, load_dataset
    from ghostnet.tasks.options import positive_int
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist", help="an in-memory dataset (digits, fashion_mnist, ...)")
    ap.add_argument("--model", default="ghostnet_small_050")
    ap.add_argument("--batch-size", type=positive_int, default=128)
    ap.add_argument("--steps", type=positive_int, default=20)
    args = ap.parse_args()

    try:
        data = load_dataset(args.dataset)
    except ValueError as e:  # DatasetError: not found, with where it looked
        ap.exit(2, f"data_loader.py: error: {e}\n")
    if not data.in_memory:
        ap.exit(
            2, "data_loader.py: error: the loader benchmark takes in-memory datasets (digits, fashion_mnist, ...)\n"
        )
    loader = TensorLoader(data.train, args.batch_size, train=True, augment=data.augment, mean=data.mean, std=data.std)
    t0, n = time.perf_counter(), 0
    for _, y in loader.batches(0):
        n += len(y)
    loader_rate = n / (time.perf_counter() - t0)

    model = create_model(args.model, num_classes=data.num_classes, in_chans=data.in_chans)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = itertools.cycle(list(loader.batches(1)))  # a small dataset (digits) has fewer batches than steps
    for i in range(args.steps + 3):
        if i == 3:  # warm-up done
            t0 = time.perf_counter()
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step_rate = args.steps * args.batch_size / (time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "model": args.model,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "loader_images_per_s": round(loader_rate),
                "train_step_images_per_s": round(step_rate, 1),
                "loader_share_of_step_time": round(step_rate / loader_rate, 5),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
