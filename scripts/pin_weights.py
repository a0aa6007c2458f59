#!/usr/bin/env python
"""Pin the SHA-256 of every published weights file (needs network): download each afresh, check that it loads
into its model (V3 also folded), and print the lines of `PINNED_SHA256` to paste into src/ghostnet/models/hub.py.

    python scripts/pin_weights.py                      # all files, into a temporary folder deleted afterwards
    python scripts/pin_weights.py --model ghostnet_100 --cache-dir ~/.cache/ghostnet-pin

A file whose hash is already pinned is verified against it (a mismatch is reported, not re-pinned).
"""

import argparse
import sys
import tempfile

try:
    from ghostnet.models import create_model
    from ghostnet.models.checkpoint import CheckpointError, load_weights
    from ghostnet.models.hub import PUBLISHED_WEIGHTS, Weights, download_weights, sha256_of
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")


def check(w: Weights, cache: str) -> str:
    """The file's SHA-256 after downloading it and loading it strictly into its model."""
    path = download_weights(w.url, w.sha256, cache, filename=w.filename, progress=sys.stderr.isatty())
    load_weights(create_model(w.model), path)
    if w.form == "training":  # the same file, folded on the way into the inference form
        load_weights(create_model(w.model, folded=True), path)
    return sha256_of(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", help="only these models (repeatable); default all")
    p.add_argument("--cache-dir", help="download here and keep the files (default: a temporary folder)")
    a = p.parse_args()
    files = [
        w for name, by_source in PUBLISHED_WEIGHTS.items() if not a.model or name in a.model for w in by_source.values()
    ]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ghostnet-pin-") as tmp:
        lines = []
        for w in files:
            try:
                digest = check(w, a.cache_dir or tmp)
            except CheckpointError as e:
                print(f"FAILED {w.model} ({w.source}): {e}", file=sys.stderr)
                failed += 1
                continue
            print(f"ok {w.model} ({w.source}): {digest}", file=sys.stderr)
            lines.append(f'    "{w.url}": "{digest}",')
    print("PINNED_SHA256: dict[str, str] = {", *lines, "}", sep="\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
