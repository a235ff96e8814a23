"""Derive a conversation file whose image paths carry a prefix (the 558K `add-path` file).

Reads `--source` (a prepared conversation file) and writes `--dest`, the same
records with `--prefix` put in front of every `image`; nothing else changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava_data import jsonscan
from llava_data.common import StageError, run_main


def with_prefix(record: dict, prefix: str) -> dict:
    """The record with `prefix` in front of its image path, or of each path of a multi-image
    record; text-only records and image values that are no paths are left as they are."""
    image = record.get("image")
    if isinstance(image, str):
        image = prefix + image
    elif isinstance(image, list) and all(isinstance(p, str) for p in image):
        image = [prefix + p for p in image]
    else:
        return record
    return {key: (image if key == "image" else value) for key, value in record.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, type=Path)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--dest", required=True, type=Path)
    args = ap.parse_args(argv)
    if not args.prefix.endswith("/") or args.prefix.startswith("/"):
        raise StageError(f"--prefix must be a relative folder ending with '/', got {args.prefix!r}")
    index = jsonscan.scan(args.source)
    jsonscan.write_array(
        index,
        range(len(index)),
        args.dest,
        transform=lambda record: with_prefix(record, args.prefix),
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
