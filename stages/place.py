"""Place one annotation file where the training scripts look for it.

Reads the fetched file in `--source` (a fetch output folder holding one file)
and writes a byte-identical copy to `--dest` under the data root.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from llava_data.common import atomic_path, only_file, run_main


def place(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` atomically."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, type=Path, help="fetch output folder")
    ap.add_argument("--dest", required=True, type=Path)
    args = ap.parse_args(argv)
    place(only_file(args.source), args.dest)


if __name__ == "__main__":
    sys.exit(run_main(main))
