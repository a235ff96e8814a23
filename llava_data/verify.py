"""Check every extracted tree against its manifest; name each damaged one and its fix.

Reads `layout.trees` of the registry, `<manifests>/<tree>.tsv`, the files under
the data root and (with `--lock`) the outputs dvc.lock lists. With `--repair`,
deletes the stamp of each damaged tree, so that the next `dvc repro` sees it and
extracts the tree again (`make repro` runs `--quick --repair` before `dvc repro`,
so a damaged tree is rebuilt). Also lists the temporaries that killed runs left
beside any output or tree (`.<name>.tmp-<pid>`, `.<name>.old-<pid>`); `--repair`
removes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from llava_data.common import (
    CHUNK,
    StageError,
    load_params,
    remove_path,
    run_main,
    stale_temporaries,
)
from llava_data.layout import STAMP_NAME, extract_stage, tree_specs
from llava_data.validate import missing_images


@dataclass(frozen=True)
class TreeReport:
    tree: str
    dest: str
    files: int
    missing: tuple[str, ...]
    wrong: tuple[str, ...]
    stamp_missing: bool
    stage: str = ""  # the stage that extracts it (extract@<tree> when not given)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.stamp_missing)


def read_manifest(path: Path, with_damage: bool = False) -> list[tuple]:
    """Manifest rows: (path relative to the data root, size, crc32[, known damage or ""]).

    The `# ` header line (which candidate prefix the archive had) is skipped."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("# "):
                continue
            rel, size, crc, *damage = line.rstrip("\n").split("\t")
            row = (rel, int(size), int(crc, 16))
            rows.append((*row, damage[0] if damage else "") if with_damage else row)
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
    stage = report.stage or f"extract@{report.tree}"
    return (
        f"DAMAGED {report.tree}: data/{report.dest}: {'; '.join(parts)}. "
        f"Rebuild it with: dvc repro --force --single-item {stage}"
    )


def output_paths(lock: Path | None, data_root: Path, trees: dict) -> list[Path]:
    """Every output dvc.lock lists, and every tree folder of the layout."""
    paths = [data_root / tree.dest for tree in trees.values()]
    if lock is not None and lock.is_file():
        with open(lock, encoding="utf-8") as fh:
            stages = (yaml.safe_load(fh) or {}).get("stages") or {}
        paths += [Path(out["path"]) for stage in stages.values() for out in stage.get("outs", [])]
    return paths


def stale_beside(paths: list[Path]) -> list[Path]:
    """Temporaries of killed runs beside any of `paths` or their folders (one listing each)."""
    names: dict[Path, set[str]] = {}
    for path in paths:
        for node in (path, *path.parents):
            if node.name:
                names.setdefault(node.parent, set()).add(node.name)
    return sorted(p for folder in sorted(names) for p in stale_temporaries(folder, names[folder]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True)
    ap.add_argument("--manifests", required=True, type=Path)
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--lock", type=Path, help="dvc.lock: look for temporaries beside its outputs")
    ap.add_argument("--crc", action="store_true", help="also compare CRC-32s (reads every byte)")
    ap.add_argument("--quick", action="store_true", help="only check that every file exists")
    ap.add_argument(
        "--repair",
        action="store_true",
        help="delete the stamp of damaged trees so `dvc repro` rebuilds them",
    )
    args = ap.parse_args(argv)

    trees = tree_specs(load_params(args.registry, "layout"))
    stale = stale_beside(output_paths(args.lock, args.data_root, trees))
    for path in stale:
        if args.repair:
            remove_path(path)
            print(f"removed {path}: left by an interrupted run")
        else:
            print(f"STALE   {path}: left by an interrupted run (`make verify ARGS=--repair`)")
    damaged = []
    for tree in sorted(trees):
        manifest = args.manifests / f"{tree}.tsv"
        if not manifest.is_file():
            if args.repair:
                print(f"not yet built {tree}: `dvc repro` extracts it")
                continue
            raise StageError(f"{manifest} is missing: run `dvc repro` (or `dvc pull`) first")
        dest = trees[tree].dest
        report = check_tree(
            tree, dest, read_manifest(manifest), args.data_root, args.crc, args.quick
        )
        report = dataclasses.replace(report, stage=extract_stage(trees[tree]))
        if args.repair and report.stamp_missing:
            continue  # dvc repro sees the missing stamp and extracts the tree anyway
        print(describe(report))
        if not report.ok:
            damaged.append(report)
            if args.repair:
                (args.data_root / report.dest / STAMP_NAME).unlink(missing_ok=True)
    if damaged and args.repair:
        print(f"{len(damaged)} damaged trees: their stamps were removed; `dvc repro` rebuilds them")
    elif damaged or stale:
        raise StageError(
            f"{len(damaged)} of {len(trees)} trees are damaged and {len(stale)} temporaries of "
            f"interrupted runs are left; rebuild each tree with the command above, or run "
            f"`make verify ARGS=--repair` then `dvc repro`"
        )


if __name__ == "__main__":
    sys.exit(run_main(main))
