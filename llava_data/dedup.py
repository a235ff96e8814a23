"""Which images are the same picture: exact copies, the same pixels, near duplicates.

Reads the image index (`llava_data.imageindex`): every image of the layout's trees and of
the evaluation sets, each with its sha256, pixel hash and pHash. Three links join two
different images:
- `exact`: the same bytes (sha256);
- `pixels`: other bytes, the same decoded pixels (the same picture saved again);
- `near`: other pixels, pHashes at most `dedup.max_distance` bits apart (resized,
  re-encoded, slightly cropped or brightened copies; `llava_data.nearpairs`).
Equal bytes and equal pixels are groups; near links join pixel groups. A cluster is a
connected set of linked images (near links chain: a cluster can hold two images further
apart than the distance; what counts a record or a match below is always a direct link).
Everything here works on groups, never on all pairs of a group's members, so a picture
copied ten thousand times costs ten thousand rows, not fifty million pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from llava_data import nearpairs
from llava_data.common import StageError

EVAL_PREFIX = "eval:"
KINDS = ("exact", "pixels", "near")  # strongest first


@dataclass(frozen=True)
class DedupParams:
    """params.yaml `dedup`: the largest pHash distance (bits of 64) of a near duplicate."""

    max_distance: int = 6

    @classmethod
    def parse(cls, raw: object) -> DedupParams:
        if not isinstance(raw, dict) or set(raw) != {"max_distance"}:
            raise StageError("params.yaml: `dedup` must be a mapping with `max_distance`")
        value = raw["max_distance"]
        if type(value) is not int or not 0 <= value <= 16:
            raise StageError(
                f"params.yaml: dedup.max_distance must be a whole number of bits from 0 to 16 "
                f"(of pHash's 64), not {value!r}"
            )
        return cls(value)


@dataclass
class Duplicates:
    """Every indexed image (`items`, one row each, in index order) and the near links.

    items: `key` (a tree's image path under data/, or `<file>#<row>` of an evaluation set),
    `origin` (the tree, or `eval:<set>`), `exact` (group of equal bytes), `pixels` (group
    of equal pixels; -1: the image does not decode), `cluster` (the smallest item number of
    its cluster), `phash` (nullable), and for the training images `evals_exact` and
    `evals_near`: the evaluation sets holding a copy of it (exact: the same bytes or
    pixels; near: only a near link).
    near: `a` < `b` (pixel groups), `distance`.
    """

    items: pd.DataFrame
    near: pd.DataFrame

    @property
    def evals(self) -> list[str]:
        return sorted(o[len(EVAL_PREFIX) :] for o in self.items["origin"].unique() if is_eval(o))

    def training(self) -> pd.DataFrame:
        return self.items[~self.items["origin"].map(is_eval)]


def is_eval(origin: str) -> bool:
    return origin.startswith(EVAL_PREFIX)


def _codes(values: pd.Series) -> np.ndarray:
    """Group numbers in order of first appearance (-1 for a missing value)."""
    codes, _ = pd.factorize(values.reset_index(drop=True), use_na_sentinel=True)
    return codes.astype(np.int64)


def _first_of(codes: np.ndarray) -> np.ndarray:
    """Per item, the first item with the same code (itself where the code is missing)."""
    out = np.arange(len(codes))
    present = np.flatnonzero(codes >= 0)
    uniq, first = np.unique(codes[present], return_index=True)
    out[present] = present[first][np.searchsorted(uniq, codes[present])]
    return out


def find(index: pd.DataFrame, max_distance: int) -> Duplicates:
    """The groups, near links and clusters of `index` (columns key, origin, sha256,
    pixels (None: does not decode), phash (nullable UInt64)), in its row order."""
    items = index[["key", "origin"]].reset_index(drop=True).copy()
    n = len(items)
    exact = _codes(index["sha256"])
    pixels = _codes(index["pixels"])
    items["exact"], items["pixels"] = exact, pixels
    decodable = np.flatnonzero(pixels >= 0)
    groups, first = np.unique(pixels[decodable], return_index=True)
    reps = decodable[first]  # the first item of each pixel group, in group order
    phash = index["phash"].reset_index(drop=True).astype("UInt64")
    rep_hash = phash.iloc[reps].to_numpy(dtype=np.uint64)
    gi, gj, dist = nearpairs.near_pairs(rep_hash, max_distance)
    near = pd.DataFrame(
        {"a": groups[gi].astype(np.int64), "b": groups[gj].astype(np.int64), "distance": dist}
    )
    src = np.concatenate([np.arange(n), decodable, reps[gi]])
    dst = np.concatenate([_first_of(exact), _first_of(pixels)[decodable], reps[gj]])
    items["cluster"] = nearpairs.clusters(n, src, dst)
    items["phash"] = phash
    dups = Duplicates(items, near)
    evals_exact, evals_near = eval_matches(dups)
    items["evals_exact"], items["evals_near"] = evals_exact, evals_near
    return dups


def near_neighbours(near: pd.DataFrame) -> pd.DataFrame:
    """The near links both ways: columns g (a pixel group), other, distance."""
    return pd.concat(
        [
            near.rename(columns={"a": "g", "b": "other"}),
            near.rename(columns={"b": "g", "a": "other"}),
        ],
        ignore_index=True,
    )


def eval_matches(dups: Duplicates) -> tuple[list, list]:
    """Per item: the evaluation sets with an exact (bytes or pixels) copy of it, and those
    with only a near one (empty lists for the evaluation sets' own images)."""
    items = dups.items
    origin = items["origin"].to_numpy()
    evals = items[items["origin"].map(is_eval)]
    names = evals["origin"].str.slice(len(EVAL_PREFIX))
    by_exact = names.groupby(evals["exact"]).agg(set)
    by_pixels = names[evals["pixels"] >= 0].groupby(evals["pixels"][evals["pixels"] >= 0]).agg(set)
    linked = near_neighbours(dups.near).merge(
        pd.DataFrame({"other": by_pixels.index, "sets": by_pixels.to_numpy()}), on="other"
    )
    by_near = linked.groupby("g")["sets"].agg(lambda s: set().union(*s))
    strong_out, near_out = [], []
    for e, p, o in zip(items["exact"], items["pixels"], origin, strict=True):
        if is_eval(o):
            strong_out.append([])
            near_out.append([])
            continue
        strong = set(by_exact.get(e, ())) | set(by_pixels.get(p, ()) if p >= 0 else ())
        weak = set(by_near.get(p, ()) if p >= 0 else ()) - strong
        strong_out.append(sorted(strong))
        near_out.append(sorted(weak))
    return strong_out, near_out


def summary(dups: Duplicates) -> dict:
    """Counts for the metrics: images, copies by kind, clusters, across trees, per set."""
    train = dups.training()
    out: dict = {"images": int(len(train)), "undecodable": int((train["pixels"] < 0).sum())}
    exact_sizes = train.groupby("exact").size()
    out["exact"] = {
        "groups": int((exact_sizes > 1).sum()),
        "images": int(exact_sizes[exact_sizes > 1].sum()),
    }
    decodable = train[train["pixels"] >= 0]
    bytes_per_pixels = decodable.groupby("pixels")["exact"].nunique()
    out["pixels"] = {  # same pixels, more than one set of bytes
        "groups": int((bytes_per_pixels > 1).sum()),
        "images": int(decodable["pixels"].isin(bytes_per_pixels.index[bytes_per_pixels > 1]).sum()),
    }
    groups = set(decodable["pixels"])
    near = dups.near[dups.near["a"].isin(groups) & dups.near["b"].isin(groups)]
    out["near"] = {
        "links": int(len(near)),
        "images": int(decodable["pixels"].isin(set(near["a"]) | set(near["b"])).sum()),
    }
    sizes = train.groupby("cluster").size()
    out["clusters"] = {
        "count": int((sizes > 1).sum()),
        "images": int(sizes[sizes > 1].sum()),
        "largest": int(sizes.max()) if len(sizes) else 0,
    }
    # per pair of trees: the images of either that share a cluster with the other's
    across: dict[str, int] = {}
    shared = train[train["cluster"].map(train.groupby("cluster")["origin"].nunique()) > 1]
    for _, members in shared.groupby("cluster"):
        trees = sorted(set(members["origin"]))
        for i, a in enumerate(trees):
            for b in trees[i + 1 :]:
                key = f"{a}|{b}"
                across[key] = across.get(key, 0) + int(members["origin"].isin([a, b]).sum())
    out["across_trees"] = dict(sorted(across.items()))
    exact = train["evals_exact"].explode().value_counts()
    near = train["evals_near"].explode().value_counts()
    images = dups.items.groupby("origin")["exact"].nunique()
    out["evals"] = {
        name: {
            "images": int(images[EVAL_PREFIX + name]),
            "training_images_exact": int(exact.get(name, 0)),
            "training_images_near": int(near.get(name, 0)),
        }
        for name in dups.evals
    }
    return out


def cluster_rows(dups: Duplicates) -> list[tuple[str, ...]]:
    """The report: every image of a cluster of two or more, cluster by cluster."""
    items = dups.items
    sizes = items.groupby("cluster")["key"].transform("size")
    members = items[sizes > 1].sort_values(["cluster", "origin", "key"], kind="stable")
    rows = []
    for item in members.itertuples():
        rows.append(
            (
                str(item.cluster),
                item.origin,
                item.key,
                str(item.exact),
                str(item.pixels) if item.pixels >= 0 else "-",
                f"{int(item.phash):016x}" if not pd.isna(item.phash) else "-",
            )
        )
    return rows


CLUSTER_HEADER = ("cluster", "origin", "image", "bytes_group", "pixels_group", "phash")


ITEM_COLUMNS = ("key", "origin", "exact", "pixels", "cluster", "evals_exact", "evals_near")


def write_tables(dups: Duplicates, out) -> None:
    """images.parquet (every item, no pHash) and near.parquet into the folder `out`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llava_data.common import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    item_schema = pa.schema(
        [
            ("key", pa.string()),
            ("origin", pa.string()),
            ("exact", pa.int64()),
            ("pixels", pa.int64()),
            ("cluster", pa.int64()),
            ("evals_exact", pa.list_(pa.string())),
            ("evals_near", pa.list_(pa.string())),
        ]
    )
    near_schema = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("distance", pa.uint8())])
    tables = (
        ("images.parquet", dups.items[list(ITEM_COLUMNS)], item_schema),
        ("near.parquet", dups.near, near_schema),
    )
    for name, frame, schema in tables:
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        with atomic_path(out / name) as tmp:
            pq.write_table(
                table, tmp, compression="zstd", compression_level=3, write_statistics=False
            )


def read_tables(folder) -> Duplicates:
    """What `write_tables` wrote (the items without their pHash)."""
    import pyarrow.parquet as pq

    from llava_data.common import StageError as _Err

    try:
        items = pq.read_table(folder / "images.parquet").to_pandas()
        near = pq.read_table(folder / "near.parquet").to_pandas()
    except FileNotFoundError:
        raise _Err(f"{folder} holds no duplicate tables: run `dvc repro dedup`") from None
    items["evals_exact"] = items["evals_exact"].map(list)
    items["evals_near"] = items["evals_near"].map(list)
    return Duplicates(items, near)
