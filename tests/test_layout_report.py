"""Per-tree counts against expectations, known damage, and what missing images cost."""

from __future__ import annotations

from stages.layout_report import count_trees, manifest_prefix

TREES = {
    "coco": {"archive": "coco_zip", "dest": "coco/train2017"},
    "vg2": {"archive": "vg2_zip", "dest": "vg/VG_100K_2"},
    "vg": {"archive": "vg_zip", "dest": "vg/VG_100K"},
}


def test_counts_differences_damage_and_records_lost_per_tree():
    rows = {
        "coco": [("coco/train2017/1.jpg", 5, 0, ""), ("coco/train2017/2.jpg", 0, 0, "empty")],
        "vg2": [("vg/VG_100K_2/9.jpg", 40, 0, "unrecognised"), ("vg/VG_100K_2/8.jpg", 9, 0, "")],
    }
    expected = {"coco": (3, "mirror"), "vg2": (2, "published"), "vg": (None, "published")}
    reports = {
        "mix1m": [
            {"image": "coco/train2017/3.jpg", "reason": "image_missing"},
            {"image": "coco/train2017/3.jpg", "reason": "image_missing"},
            {"image": "vg/VG_100K_2/9.jpg", "reason": "image_unreadable"},
            {"image": "vg/VG_100K/7.jpg", "reason": "image_missing"},
            {"image": "coco/train2017/1.jpg", "reason": "image_token_count"},
        ],
        "llava_v1_5_mix665k": [{"image": "coco/train2017/3.jpg", "reason": "image_missing"}],
    }
    out, damaged = count_trees(TREES, rows, {"coco": "train2017/"}, expected, reports)
    assert out["coco"] == {
        "dest": "coco/train2017",
        "from": "train2017/",
        "files": 2,
        "expected": 3,
        "expected_known": "mirror",
        "difference": -1,
        "damaged": {"empty": 1, "unrecognised": 0, "format_mismatch": 0},
        "referenced_missing": 1,
        "referenced_unreadable": 0,
        "records_lost": {"llava_v1_5_mix665k": 1, "mix1m": 2},
    }
    # the longest folder wins: VG_100K_2's image is not counted for VG_100K
    assert out["vg2"]["referenced_unreadable"] == 1 and out["vg2"]["difference"] == 0
    assert out["vg"]["files"] is None and out["vg"]["records_lost"] == {"mix1m": 1}
    assert damaged == [
        ("coco", "coco/train2017/2.jpg", "empty"),
        ("vg2", "vg/VG_100K_2/9.jpg", "unrecognised"),
    ]


def test_the_manifest_header_names_the_prefix_used(tmp_path):
    manifest = tmp_path / "t.tsv"
    manifest.write_text("# t: members of a.zip under 'images/'\nt/a.jpg\t1\t00000000\n")
    assert manifest_prefix(manifest) == "images/"
    manifest.write_text("t/a.jpg\t1\t00000000\n")
    assert manifest_prefix(manifest) is None
