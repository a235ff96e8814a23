"""Duplicates from hand-written index rows, and what a recipe of a few records holds of them:
the links by kind, clusters, evaluation overlap, counts per record and per part pair, and the
records decontamination leaves out."""

from __future__ import annotations

import pandas as pd
import pytest

from llava_data import audit, dedup
from llava_data.common import StageError

B = {n: bytes([n]) * 32 for n in range(1, 20)}  # sha256 stand-ins
P = {n: bytes([n]) * 16 for n in range(1, 20)}  # pixel-hash stand-ins
FAR = (0x0F0F0F0F0F0F0F0F, 0x00FF00FF00FF00FF, 0x3333333333333333, 0x5555555555555555)


def index(rows):
    """rows: (key, origin, bytes id, pixels id or None, phash or None)."""
    return pd.DataFrame(
        {
            "key": [r[0] for r in rows],
            "origin": [r[1] for r in rows],
            "sha256": [B[r[2]] for r in rows],
            "pixels": [P[r[3]] if r[3] is not None else None for r in rows],
            "phash": pd.array([r[4] for r in rows], dtype="UInt64"),
        }
    )


ROWS = [
    ("coco/1.jpg", "coco", 1, 1, FAR[0]),
    ("coco/2.jpg", "coco", 2, 2, FAR[1]),
    ("gqa/1.jpg", "gqa", 1, 1, FAR[0]),  # the same bytes as coco/1.jpg
    ("vg/1.jpg", "vg", 3, 2, FAR[1]),  # coco/2.jpg's pixels, other bytes
    ("vg/2.jpg", "vg", 4, 4, FAR[2] ^ 0b111),  # near coco/3 (3 bits)
    ("coco/3.jpg", "coco", 5, 5, FAR[2]),
    ("ocr/bad.jpg", "ocr", 6, None, None),  # does not decode
    ("web/1.jpg", "web", 7, 7, FAR[3]),  # alone
    ("test-0.parquet#0", "eval:pope", 8, 8, FAR[2] ^ 0b1),  # near coco/3 and vg/2
    ("test-0.parquet#1", "eval:pope", 1, 1, FAR[0]),  # coco/1's bytes
    ("val-0.parquet#0", "eval:textvqa_val", 9, 9, FAR[3] ^ (0xFFFF << 20)),  # far from all
]


@pytest.fixture
def dups():
    return dedup.find(index(ROWS), max_distance=4)


def item(dups, key):
    return dups.items.set_index("key").loc[key]


def test_groups_links_and_clusters(dups):
    assert item(dups, "coco/1.jpg")["exact"] == item(dups, "gqa/1.jpg")["exact"]
    assert item(dups, "coco/2.jpg")["pixels"] == item(dups, "vg/1.jpg")["pixels"]
    assert item(dups, "coco/2.jpg")["exact"] != item(dups, "vg/1.jpg")["exact"]
    assert item(dups, "ocr/bad.jpg")["pixels"] == -1
    clusters = dups.items.groupby("cluster")["key"].agg(sorted).tolist()
    assert sorted(clusters) == sorted(
        [
            ["coco/1.jpg", "gqa/1.jpg", "test-0.parquet#1"],
            ["coco/2.jpg", "vg/1.jpg"],
            ["coco/3.jpg", "test-0.parquet#0", "vg/2.jpg"],
            ["ocr/bad.jpg"],
            ["web/1.jpg"],
            ["val-0.parquet#0"],
        ]
    )
    # a cluster is named by its first item
    assert item(dups, "gqa/1.jpg")["cluster"] == 0
    distances = {(int(a), int(b)): int(d) for a, b, d in dups.near.itertuples(index=False)}
    assert sorted(distances.values()) == [1, 2, 3]


def test_evaluation_matches_per_training_image(dups):
    assert item(dups, "coco/1.jpg")["evals_exact"] == ["pope"]
    assert item(dups, "gqa/1.jpg")["evals_exact"] == ["pope"]
    assert item(dups, "coco/3.jpg")["evals_near"] == ["pope"]
    assert item(dups, "vg/2.jpg")["evals_near"] == ["pope"]
    assert item(dups, "web/1.jpg")["evals_exact"] == item(dups, "web/1.jpg")["evals_near"] == []


def test_summary(dups):
    s = dedup.summary(dups)
    assert s["images"] == 8 and s["undecodable"] == 1
    assert s["exact"] == {"groups": 1, "images": 2}
    assert s["pixels"] == {"groups": 1, "images": 2}
    assert s["near"] == {"links": 1, "images": 2}
    assert s["clusters"] == {"count": 3, "images": 6, "largest": 2}
    assert s["across_trees"] == {"coco|gqa": 2, "coco|vg": 4}
    assert s["evals"] == {
        "pope": {"images": 2, "training_images_exact": 2, "training_images_near": 2},
        "textvqa_val": {"images": 1, "training_images_exact": 0, "training_images_near": 0},
    }


def test_the_cluster_report_lists_clusters_of_two_or_more(dups):
    rows = dedup.cluster_rows(dups)
    assert {r[2] for r in rows} == {
        "coco/1.jpg",
        "gqa/1.jpg",
        "test-0.parquet#1",
        "coco/2.jpg",
        "vg/1.jpg",
        "coco/3.jpg",
        "vg/2.jpg",
        "test-0.parquet#0",
    }
    assert [r[1] for r in rows[:3]] == ["coco", "eval:pope", "gqa"]  # by cluster, origin


def test_the_tables_read_back(dups, tmp_path):
    dedup.write_tables(dups, tmp_path)
    back = dedup.read_tables(tmp_path)
    cols = list(dedup.ITEM_COLUMNS)
    pd.testing.assert_frame_equal(back.items[cols], dups.items[cols])
    assert back.near.values.tolist() == dups.near.values.tolist()
    assert back.evals == ["pope", "textvqa_val"]


@pytest.mark.parametrize("value", [-1, 17, 2.5, "6"])
def test_max_distance_is_checked(value):
    with pytest.raises(StageError, match="dedup.max_distance"):
        dedup.DedupParams.parse({"max_distance": value})


# ---- a recipe ----------------------------------------------------------------------------


RECORDS = [  # record, part, image field
    (0, "llava", "coco/1.jpg"),
    (1, "llava", "coco/1.jpg"),  # the same file as record 0
    (2, "gqa", "gqa/1.jpg"),  # coco/1.jpg's bytes
    (3, "vg", "vg/1.jpg"),  # coco/2.jpg's pixels
    (4, "llava", "coco/2.jpg"),
    (5, "vg", "vg/2.jpg"),  # near coco/3.jpg, near pope
    (6, "llava", "coco/3.jpg"),  # near pope
    (7, "web", "web/1.jpg"),
    (8, "text", None),
    (9, "vg", ("vg/1.jpg", "web/1.jpg")),  # multi-image
    (10, "ocr", "ocr/missing.jpg"),  # not in the layout
]


@pytest.fixture
def attached(dups):
    return audit.attach(audit.uses_table(RECORDS), dups.items)


def test_duplicate_records_by_kind_and_part_pair(dups, attached):
    counts, per_record = audit.duplicates(attached, dups.near)
    kinds = dict(zip(per_record["record"], per_record["kind"], strict=True))
    assert kinds == {
        0: "exact",
        1: "exact",
        2: "exact",
        3: "pixels",
        4: "pixels",
        9: "pixels",
        5: "near",
        6: "near",
    }
    assert counts["records"] == 8
    assert (counts["exact"], counts["pixels"], counts["near"]) == (3, 3, 2)
    # 0 and 1 share coco/1.jpg, 3 and 9 vg/1.jpg, 7 and 9 web/1.jpg
    assert counts["same_file"] == 5
    assert counts["parts"] == {
        "gqa": {"llava": 1},
        "llava": {"gqa": 2, "vg": 2},  # 0 and 1 (coco/1.jpg); 4 and 6
        "vg": {"llava": 3},
    }


def test_two_records_of_one_file_are_not_duplicates_of_each_other(dups):
    attached = audit.attach(
        audit.uses_table([(0, "a", "coco/1.jpg"), (1, "a", "coco/1.jpg")]), dups.items
    )
    counts, _ = audit.duplicates(attached, dups.near)
    assert counts["records"] == 0 and counts["same_file"] == 2


def test_overlap_per_evaluation_set(attached):
    assert audit.overlap(attached, ["pope", "textvqa_val"]) == {
        "pope": {"records_exact": 3, "records_near": 2, "images": 4},
        "textvqa_val": {"records_exact": 0, "records_near": 0, "images": 0},
    }


def test_decontamination_leaves_out_exactly_the_matching_records(attached):
    records, per_part, per_set = audit.decontaminate(attached, ["pope"])
    assert records == {0, 1, 2, 5, 6}
    assert per_part == {"llava": 3, "gqa": 1, "vg": 1}
    assert per_set == {"pope": 5}
    assert audit.decontaminate(attached, []) == (set(), {}, {})
    assert audit.decontaminate(attached, ["textvqa_val"]) == (set(), {}, {"textvqa_val": 0})


def test_the_report_names_each_flagged_record(dups, attached):
    _, per_record = audit.duplicates(attached, dups.near)
    rows = audit.report_rows(per_record, attached, dups.items, lambda r: f"id{r}")
    by_id = {r[1]: r for r in rows}
    assert set(by_id) == {"id0", "id1", "id2", "id3", "id4", "id5", "id6", "id9"}
    assert by_id["id5"][4:] == ("near", "llava", "pope")
    assert by_id["id9"][3] == "vg/1.jpg" and by_id["id9"][6] == "-"
