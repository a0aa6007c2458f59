#!/usr/bin/env python
"""Measure the params and MACs of every registered model with the profiler and write the table `ghostnet list`
shows (src/ghostnet/analysis/model_table.json). Run it after adding or changing a model:

    uv run python scripts/model_table.py            # rewrite the table
    uv run python scripts/model_table.py --check    # exit 1 if the stored table is out of date
"""

import argparse
import sys

try:
    from ghostnet.analysis.model_table import TABLE_PATH, load_table, measure, write_table
    from ghostnet.models import list_models
    from ghostnet.models.registry import IMAGE_TASKS
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on any difference")
    args = p.parse_args()
    if not args.check:
        table = write_table()
        print(f"wrote {TABLE_PATH}: {len(table)} models")
        return 0
    stored, stale = load_table(), []
    for name in list_models(task=IMAGE_TASKS):
        if stored.get(name) != measure(name):
            stale.append(name)
    stale += sorted(set(stored) - set(list_models(task=IMAGE_TASKS)))
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/model_table.py", file=sys.stderr)
        return 1
    print(f"{TABLE_PATH} matches the profiler for all {len(stored)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
