"""Make a relative symlink to a built file where another training script looks for it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llava_data.common import atomic_path, run_main


def link(alias: Path, target: Path) -> None:
    """Make `alias` a relative symlink to `target`, atomically."""
    alias.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(alias) as tmp:
        tmp.symlink_to(os.path.relpath(target, alias.parent))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, type=Path)
    ap.add_argument("--alias", required=True, type=Path)
    args = ap.parse_args(argv)
    link(args.alias, args.target)


if __name__ == "__main__":
    sys.exit(run_main(main))
