"""Check every extracted tree against its manifest; name each damaged one and its fix.

Reads `layout.trees` of the registry, `<manifests>/<tree>.tsv` and the files
under the data root. With `--repair`, deletes the stamp of each damaged tree,
so that the next `dvc repro` sees it and extracts the tree again (`make repro`
runs `--quick --repair` before `dvc repro`, so a damaged tree is rebuilt).
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from stages.common import CHUNK, StageError, load_params, run_main
from stages.extract import STAMP_NAME
from stages.validate import missing_images


@dataclass(frozen=True)
class TreeReport:
    tree: str
    dest: str
    files: int
    missing: tuple[str, ...]
    wrong: tuple[str, ...]
    stamp_missing: bool

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.stamp_missing)


def read_manifest(path: Path) -> list[tuple[str, int, int]]:
    """Manifest rows: (path relative to the data root, size, crc32)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rel, size, crc = line.rstrip("\n").split("\t")
            rows.append((rel, int(size), int(crc, 16)))
    return rows


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            crc = zlib.crc32(block, crc)
    return crc


def check_tree(
    tree: str, dest: str, rows, data_root: Path, with_crc: bool, quick: bool = False
) -> TreeReport:
    """Compare the files on disk with the manifest rows of one tree.

    `quick` only checks that every file exists, listing each folder once (seconds for
    a million files); otherwise each file's size (and with `with_crc` its CRC) is checked.
    """
    stamp_missing = not (data_root / dest / STAMP_NAME).is_file()
    if quick:
        missing = sorted(missing_images(data_root, (rel for rel, _, _ in rows)))
        return TreeReport(tree, dest, len(rows), tuple(missing), (), stamp_missing)
    missing, wrong = [], []
    for rel, size, crc in rows:
        path = data_root / rel
        try:
            st = os.stat(path)
        except FileNotFoundError:
            missing.append(rel)
            continue
        if st.st_size != size or (with_crc and file_crc(path) != crc):
            wrong.append(rel)
    return TreeReport(tree, dest, len(rows), tuple(missing), tuple(wrong), stamp_missing)


def describe(report: TreeReport) -> str:
    if report.ok:
        return f"ok      {report.tree}: data/{report.dest} ({report.files:,} files)"
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing):,} missing (e.g. {report.missing[0]})")
    if report.wrong:
        parts.append(f"{len(report.wrong):,} changed (e.g. {report.wrong[0]})")
    if report.stamp_missing:
        parts.append("not extracted yet")
    return (
        f"DAMAGED {report.tree}: data/{report.dest}: {'; '.join(parts)}. "
        f"Rebuild it with: dvc repro --force --single-item extract@{report.tree}"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True)
    ap.add_argument("--manifests", required=True, type=Path)
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--crc", action="store_true", help="also compare CRC-32s (reads every byte)")
    ap.add_argument("--quick", action="store_true", help="only check that every file exists")
    ap.add_argument(
        "--repair",
        action="store_true",
        help="delete the stamp of damaged trees so `dvc repro` rebuilds them",
    )
    args = ap.parse_args(argv)

    trees = load_params(args.registry, "layout.trees")
    damaged = []
    for tree in sorted(trees):
        manifest = args.manifests / f"{tree}.tsv"
        if not manifest.is_file():
            if args.repair:
                print(f"not yet built {tree}: `dvc repro` extracts it")
                continue
            raise StageError(f"{manifest} is missing: run `dvc repro` (or `dvc pull`) first")
        dest = trees[tree]["dest"]
        report = check_tree(
            tree, dest, read_manifest(manifest), args.data_root, args.crc, args.quick
        )
        if args.repair and report.stamp_missing:
            continue  # dvc repro sees the missing stamp and extracts the tree anyway
        print(describe(report))
        if not report.ok:
            damaged.append(report)
            if args.repair:
                (args.data_root / report.dest / STAMP_NAME).unlink(missing_ok=True)
    if damaged and args.repair:
        print(f"{len(damaged)} damaged trees: their stamps were removed; `dvc repro` rebuilds them")
    elif damaged:
        raise StageError(
            f"{len(damaged)} of {len(trees)} trees are damaged; rebuild each with the command "
            f"above, or run `make verify ARGS=--repair` then `dvc repro`"
        )


if __name__ == "__main__":
    sys.exit(run_main(main))
