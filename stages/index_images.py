"""Hash every image of the layout and of the evaluation sets (`llava_data.imageindex`).

Reads each tree's manifest (the files extraction wrote under the data root) and each
evaluation set's Parquet files (`--eval <name>=<folder>`, the sets `layout.evals` of the
registry names); writes one Parquet file per tree (`<out>/<tree>.parquet`) and per set
(`<out>/eval/<name>.parquet`): a row per image with its byte, pixel and perceptual hashes.
A file whose input did not change since it was written (the manifest's or the set's files'
sha256, in its metadata) is kept as it is: only what changed is hashed again. The shards
run on `index.jobs` local processes, or on the Dask cluster LLAVA_DATA_CLUSTER names
(`llava_data.engine`); either way the files are the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from llava_data import engine, imageindex, parts
from llava_data.common import (
    StageError,
    file_digest,
    load_params,
    named_folders,
    remove_path,
    run_main,
)
from llava_data.layout import tree_specs
from llava_data.verify import read_manifest


def eval_folders(pairs: list[str], evals: dict) -> dict[str, Path]:
    """`--eval name=folder` arguments, checked against the registry's `layout.evals`."""
    out = named_folders(pairs, "--eval")
    if set(out) != set(evals):
        raise StageError(
            f"dvc.yaml names the evaluation sets {sorted(out)}, the registry's layout.evals "
            f"{sorted(evals)}: list the same sets in both (stage index_images)"
        )
    for name, folder in out.items():
        if folder.name != evals[name]["source"]:
            raise StageError(
                f"--eval {name}={folder}: layout.evals.{name} takes source "
                f"{evals[name]['source']!r}, so its folder is downloads/{evals[name]['source']}"
            )
    return dict(sorted(out.items()))


def parquet_files(name: str, folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise StageError(
            f"evaluation set {name}: no Parquet file in {folder}; run `dvc repro "
            f"fetch@{folder.name}`"
        )
    return files


def tree_tasks(manifest: Path, root: Path, shard: int) -> list[tuple]:
    """The tasks hashing every file a tree's manifest lists, in path order."""
    rels = sorted(row[0] for row in read_manifest(manifest))
    return imageindex.file_tasks(root, rels, shard)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--manifests", required=True, type=Path)
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--eval", action="append", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)

    # every parameter is checked before any file is read
    params = imageindex.IndexParams.parse(load_params(args.params, "index"))
    layout = load_params(args.registry, "layout")
    trees = tree_specs(layout)
    evals = eval_folders(args.eval, layout.get("evals") or {})
    engine.cluster_address()

    # per index file: the digest of its input, and the tasks that hash it
    parts_of: dict[Path, tuple[str, Callable[[], list[tuple]]]] = {}
    root = args.data_root.resolve()
    for tree in trees:
        manifest = args.manifests / f"{tree}.tsv"
        parts_of[args.out / f"{tree}.parquet"] = (
            file_digest(manifest),
            partial(tree_tasks, manifest, root, params.shard_images),
        )
    for name, folder in evals.items():
        files = parquet_files(name, folder)
        parts_of[args.out / "eval" / f"{name}.parquet"] = (
            parts.listing_digest(parts.listing(folder, tuple(f.name for f in files))),
            partial(imageindex.parquet_tasks, files, params.shard_images),
        )
    todo = {p: d for p, (d, _) in parts_of.items() if not imageindex.current(p, d)}
    kept = len(parts_of) - len(todo)
    tasks: list[tuple] = []
    owners: list[Path] = []  # the index file of each task
    for path in todo:
        new = parts_of[path][1]()
        tasks += new
        owners += [path] * len(new)

    started = time.monotonic()
    if tasks:
        print(
            f"index_images: hashing {len(todo)} part(s) in {len(tasks)} task(s) on "
            f"{engine.describe(params.jobs)}; {kept} part(s) unchanged",
            file=sys.stderr,
        )
    results = engine.run(imageindex.index_task, tasks, params.jobs)
    rows: dict[Path, list[tuple]] = {path: [] for path in todo}
    for path, result in zip(owners, results, strict=True):
        rows[path] += result
    images = 0
    for path, digest in todo.items():  # rows in task order: a tree's by path, a set's by row
        imageindex.write_index(path, rows[path], digest)
        images += len(rows[path])
    for folder in (args.out, args.out / "eval"):
        for stray in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            if stray not in parts_of:
                remove_path(stray)
    if tasks:
        seconds = time.monotonic() - started
        print(
            f"index_images: {images:,} images hashed in {seconds:.1f} s "
            f"({images / max(seconds, 1e-9):,.0f} images/s)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(run_main(main))
