"""What a recipe holds of duplicate images and of evaluation images (no I/O).

`uses` is one row per (record, image) of the recipe: `record` (a number), `part`, `key` (the
image path under data/). Joined to the duplicate tables of `llava_data.dedup`:
- a record is a **duplicate** when one of its images has a copy, another file, among the
  images the recipe uses: `exact` (the same bytes), `pixels` (the same picture saved
  again) or `near` (a direct near link); a record counts once, under its strongest link;
  `parts` counts, per pair of parts (a, b), the records of a with a copy in b;
  `same_file` counts the records whose image file another record also shows (by design in
  many sets, e.g. several conversations about one COCO image);
- a record **overlaps** an evaluation set when one of its images has a copy in the set
  (exact: bytes or pixels; near: only a near link);
- `decontaminate(...)` names the records to leave out for the sets a recipe lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llava_data.common import StageError
from llava_data.dedup import KINDS, near_neighbours

RANK = {kind: i for i, kind in enumerate(KINDS)}


def uses_table(rows: Iterable[tuple[int, str, object]]) -> pd.DataFrame:
    """(record, part, image field) -> one row per (record, image path); records without a
    valid image (text-only, malformed) have none."""
    out = []
    for record, part, image in rows:
        if isinstance(image, str):
            out.append((record, part, image))
        elif isinstance(image, tuple):
            out += [(record, part, path) for path in dict.fromkeys(image)]
    return pd.DataFrame(out, columns=["record", "part", "key"]).astype(
        {"record": np.int64, "part": object, "key": object}
    )


@dataclass
class RecipeImages:
    """The images of a recipe's chosen records, the records numbered across its splits
    (a split's records from `starts[split]` on), joined to the duplicate tables."""

    starts: dict[str, int]
    indexes: Mapping  # split -> its SplitIndex
    attached: pd.DataFrame

    @classmethod
    def of(cls, splits, indexes, mult, labels, names, items) -> RecipeImages:
        sizes = [len(indexes[s].index) for s in splits]
        starts = dict(zip(splits, np.cumsum([0, *sizes[:-1]]).tolist(), strict=True))
        uses = uses_table(
            (starts[s] + n, names[labels[s][n]], indexes[s].index.images[n])
            for s in splits
            for n in np.flatnonzero(mult[s] > 0).tolist()
        )
        return cls(starts, indexes, attach(uses, items))

    def leave_out(self, records: set[int], mult: Mapping[str, np.ndarray]) -> None:
        """Set the multiplicity of `records` to 0."""
        for split, start in self.starts.items():
            rows = [r - start for r in records if start <= r < start + len(mult[split])]
            mult[split][rows] = 0

    def kept(self, mult: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """The attached rows of the records still chosen."""
        kept = {
            start + n
            for split, start in self.starts.items()
            for n in np.flatnonzero(mult[split] > 0).tolist()
        }
        return self.attached[self.attached["record"].isin(kept)]

    def record_id(self, record: int) -> str:
        split, start = max(
            ((s, st) for s, st in self.starts.items() if st <= record), key=lambda x: x[1]
        )
        return self.indexes[split].index.ids[record - start]


def check_sets(recipe: str, asked: Iterable[str], known: list[str]) -> None:
    """The sets a recipe's `decontaminate` names must be sets of the image index."""
    unknown = sorted(set(asked) - set(known))
    if unknown:
        raise StageError(
            f"params.yaml: recipes.{recipe}.decontaminate names {unknown}, which are not "
            f"evaluation sets of the image index ({', '.join(known) or 'none'}; the "
            f"registry's layout.evals)"
        )


def attach(uses: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """`uses` with each image's item number and groups (images not in the index, i.e.
    missing from the layout, drop out)."""
    table = items[["key", "exact", "pixels", "evals_exact", "evals_near"]].reset_index(names="item")
    return uses.merge(table, on="key", how="inner")


def decontaminate(attached: pd.DataFrame, sets: Iterable[str]) -> tuple[set[int], dict, dict]:
    """The records with an image that has a copy (exact or near) in one of `sets`; the
    count per part and per set (a record matching two sets counts under each)."""
    sets = list(sets)
    if not sets or attached.empty:
        return set(), {}, {}
    matched = attached.assign(
        hit=[
            sorted((set(e) | set(n)) & set(sets))
            for e, n in zip(attached["evals_exact"], attached["evals_near"], strict=True)
        ]
    )
    matched = matched[matched["hit"].map(bool)]
    records = set(matched["record"].tolist())
    per_part = matched.drop_duplicates("record").groupby("part").size()
    per_set = matched.explode("hit").drop_duplicates(["record", "hit"]).groupby("hit").size()
    return (
        records,
        {k: int(v) for k, v in per_part.items()},
        {s: int(per_set.get(s, 0)) for s in sets},
    )


def _partners(attached: pd.DataFrame, near: pd.DataFrame) -> pd.DataFrame:
    """Per (item, partner part): the strongest link from the item to another image of
    the recipe that the partner part uses. Columns item, partner, rank."""
    used = attached[["item", "exact", "pixels", "part"]].drop_duplicates()
    frames = []
    # exact: another item with the same bytes, used by the partner part
    per_exact = used.groupby(["exact", "part"]).size().rename("n").reset_index()
    ex = used[["item", "exact", "part"]].merge(per_exact, on="exact", suffixes=("", "_b"))
    # an item appears once per part using it: the partner part holds another copy when it
    # uses more images of the group than this one (this item counts when it uses it too)
    own = used.groupby(["item", "part"]).size().rename("mine").reset_index()
    ex = ex.merge(own.rename(columns={"part": "part_b"}), on=["item", "part_b"], how="left")
    ex = ex[ex["n"] - ex["mine"].fillna(0) > 0]
    frames.append(ex[["item", "part_b"]].assign(rank=RANK["exact"]))
    # pixels: the same pixel group, other bytes
    pix = used[used["pixels"] >= 0]
    per_pix = pix.groupby(["pixels", "part"]).size().rename("n_pix").reset_index()
    per_pix_exact = pix.groupby(["pixels", "exact", "part"]).size().rename("n_same").reset_index()
    px = pix[["item", "pixels", "exact"]].drop_duplicates().merge(per_pix, on="pixels")
    px = px.merge(per_pix_exact, on=["pixels", "exact", "part"], how="left")
    px = px[px["n_pix"] - px["n_same"].fillna(0) > 0].rename(columns={"part": "part_b"})
    frames.append(px[["item", "part_b"]].assign(rank=RANK["pixels"]))
    # near: a pixel group linked to one the partner part uses
    groups = pix[["pixels", "part"]].drop_duplicates().rename(columns={"pixels": "other"})
    linked = near_neighbours(near).merge(groups, on="other")
    ne = pix[["item", "pixels"]].drop_duplicates().merge(linked, left_on="pixels", right_on="g")
    frames.append(ne[["item", "part"]].rename(columns={"part": "part_b"}).assign(rank=RANK["near"]))
    partners = pd.concat(frames, ignore_index=True)
    return partners.groupby(["item", "part_b"], as_index=False)["rank"].min()


def duplicates(attached: pd.DataFrame, near: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """The duplicate counts of the recipe, and per duplicate record its strongest link
    and partner parts (columns record, part, kind, partners)."""
    counts = {kind: 0 for kind in KINDS}
    parts: dict[str, dict[str, int]] = {}
    shared = attached.groupby("key")["record"].nunique()
    same_file = attached[attached["key"].map(shared) > 1]["record"].nunique()
    if attached.empty:
        return {"records": 0, **counts, "same_file": 0, "parts": parts}, pd.DataFrame()
    partners = _partners(attached, near)
    per_record = attached[["record", "part", "item"]].merge(partners, on="item")
    best = per_record.groupby(["record", "part"], as_index=False)["rank"].min()
    for rank, n in best.groupby("rank").size().items():
        counts[KINDS[rank]] = int(n)
    pairs = per_record.drop_duplicates(["record", "part_b"]).groupby(["part", "part_b"]).size()
    for (a, b), n in pairs.items():
        parts.setdefault(a, {})[b] = int(n)
    parts = {a: dict(sorted(v.items())) for a, v in sorted(parts.items())}
    names = per_record.groupby("record")["part_b"].agg(lambda s: ",".join(sorted(set(s))))
    best["kind"] = best["rank"].map(lambda r: KINDS[r])
    best["partners"] = best["record"].map(names)
    out = {"records": int(len(best)), **counts, "same_file": int(same_file), "parts": parts}
    return out, best[["record", "part", "kind", "partners"]]


def overlap(attached: pd.DataFrame, sets: Iterable[str]) -> dict:
    """Per evaluation set: records with an exact copy of one of its images, records with
    only a near one, and the distinct training images involved."""
    rows = attached[["record", "key"]]
    exact = rows.join(attached["evals_exact"].explode().rename("set")).dropna(subset=["set"])
    near = rows.join(attached["evals_near"].explode().rename("set")).dropna(subset=["set"])
    out = {}
    for name in sets:
        exact_records = set(exact.loc[exact["set"] == name, "record"])
        near_records = set(near.loc[near["set"] == name, "record"]) - exact_records
        keys = set(exact.loc[exact["set"] == name, "key"]) | set(
            near.loc[near["set"] == name, "key"]
        )
        out[name] = {
            "records_exact": len(exact_records),
            "records_near": len(near_records),
            "images": len(keys),
        }
    return out


REPORT_HEADER = ("cluster", "id", "part", "image", "link", "with_parts", "evaluation_sets")


def report_rows(dup_records: pd.DataFrame, attached: pd.DataFrame, items: pd.DataFrame, id_of):
    """A row per record that has a duplicate or overlaps an evaluation set, by cluster:
    its first such image, the link, the parts holding a copy, the sets holding one."""
    links = {}
    if len(dup_records):
        pairs = zip(dup_records["kind"], dup_records["partners"], strict=True)
        links = dict(zip(dup_records["record"], pairs, strict=True))
    sets = attached.assign(
        sets=[
            sorted(set(e) | set(n))
            for e, n in zip(attached["evals_exact"], attached["evals_near"], strict=True)
        ]
    )
    flagged = sets[sets["record"].isin(links) | sets["sets"].map(bool)]
    rows = []
    for record, group in flagged.groupby("record", sort=False):
        first = group.iloc[0]
        kind, partners = links.get(record, ("-", "-"))
        evals = sorted(set().union(*group["sets"]))
        rows.append(
            (
                int(items["cluster"].iat[first["item"]]),
                id_of(int(record)),
                first["part"],
                first["key"],
                kind,
                partners,
                ",".join(evals) or "-",
            )
        )
    rows.sort(key=lambda r: (r[0], r[2], r[1]))
    return [(str(r[0]), *r[1:]) for r in rows]
