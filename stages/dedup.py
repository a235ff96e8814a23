"""Find the duplicate images of the layout and the evaluation sets' images in it.

Reads the image index (`--index`: `<tree>.parquet` per tree, `eval/<set>.parquet` per
evaluation set) and `dedup.max_distance`; writes `--out` (images.parquet: each image's
groups, cluster and the evaluation sets holding a copy of it; near.parquet: the near links
between pixel groups), the report of every cluster (`--report`) and the metrics
(`llava_data.dedup`). The recipes read `--out` to count their duplicates and to leave out
what `recipes.<name>.decontaminate` names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from llava_data import dedup
from llava_data.common import (
    StageError,
    load_params,
    run_main,
    write_json,
    write_report,
)


def read_index(folder: Path) -> pd.DataFrame:
    """Every row of the index, trees by name then evaluation sets by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [(p.stem, p) for p in sorted(folder.glob("*.parquet"))]
    parts += [(dedup.EVAL_PREFIX + p.stem, p) for p in sorted((folder / "eval").glob("*.parquet"))]
    if not parts:
        raise StageError(f"{folder} holds no index file: run `dvc repro index_images`")
    frames = []
    for origin, path in parts:
        table = pq.read_table(path, columns=["path", "sha256", "pixels", "phash"])
        frame = table.to_pandas(types_mapper={pa.uint64(): pd.UInt64Dtype()}.get)
        frame = frame.rename(columns={"path": "key"})
        frame.insert(1, "origin", origin)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path)
    args = ap.parse_args(argv)

    params = dedup.DedupParams.parse(load_params(args.params, "dedup"))
    dups = dedup.find(read_index(args.index), params.max_distance)
    dedup.write_tables(dups, args.out)
    write_report(args.report, dedup.cluster_rows(dups), dedup.CLUSTER_HEADER)
    write_json(args.metrics, {"max_distance": params.max_distance, **dedup.summary(dups)})


if __name__ == "__main__":
    sys.exit(run_main(main))
