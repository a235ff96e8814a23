"""The labelled near-duplicate set: rebuilt byte for byte, its labels, the benchmark's core."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import pytest

from bench.nearset import Label, pair_classes, read_labels, score, tally
from llava_data.imageindex import hash_image
from miniature import nearset
from miniature.nearset import jpeg
from miniature.pictures import picture

ROOT = Path(__file__).resolve().parent.parent
SET = ROOT / "miniature" / "nearset"


def distance(x: int, y: int) -> int:
    return (x ^ y).bit_count()


def test_the_committed_set_is_what_the_generator_writes(tmp_path):
    assert nearset.main(["--out", str(tmp_path)]) == 0
    for name in ("nearset.zip", "labels.tsv"):
        assert (tmp_path / name).read_bytes() == (SET / name).read_bytes(), name
    assert sorted(p.name for p in SET.iterdir()) == ["labels.tsv", "nearset.zip"]


def test_labels_name_only_images_of_the_zip_and_every_image_is_named():
    labels = read_labels((SET / "labels.tsv").read_text(encoding="utf-8"))
    with zipfile.ZipFile(SET / "nearset.zip") as archive:
        images = {name for name in archive.namelist() if not name.endswith("/")}
    named = {name for label in labels for name in (label.a, label.b)}
    assert named == images
    kinds = Counter((label.duplicate, label.kind) for label in labels)
    assert kinds == {
        (duplicate, kind): nearset.BASES
        for duplicate, made in ((True, nearset.COPIES), (False, nearset.LOOK_ALIKES))
        for kind in made
    }


def test_read_labels_refuses_a_label_other_than_duplicate_or_distinct():
    with pytest.raises(ValueError, match="line 2"):
        read_labels("a\tb\tlabel\tkind\nx.jpg\ty.jpg\tsame\tresize\n")


def test_score_counts_every_pair_of_a_hand_made_set():
    # Base p with two copies and a look-alike; base q with one copy; r alone.
    labels = [
        Label("p", "p-small", True, "resize"),
        Label("p", "p-crop", True, "crop"),
        Label("p", "p-moved", False, "moved"),
        Label("q", "q-small", True, "resize"),
    ]
    hashes = {
        "p": 0b0000_0000,
        "p-small": 0b0000_0011,  # 2 from p
        "p-crop": 0b1111_0000,  # 4 from p, 6 from p-small
        "p-moved": 0b0000_0001,  # 1 from p and from p-small, 5 from p-crop
        "q": 0b1111_1111,
        "q-small": 0b1111_1110,  # 1 from q
        "r": 0b0011_1111,  # 2 from q, 3 or more from the others
    }
    classes = pair_classes(labels)
    assert classes == {
        ("p", "p-small"): (True, "resize"),
        ("p", "p-crop"): (True, "crop"),
        ("p-crop", "p-small"): (True, "copies"),
        ("q", "q-small"): (True, "resize"),
        ("p", "p-moved"): (False, "moved"),
        ("p-moved", "p-small"): (False, "moved"),
        ("p-crop", "p-moved"): (False, "moved"),
    }
    counts = tally(hashes, classes)
    assert sum(counts.values()) == 21

    at2 = score(counts, 2)
    assert at2.found == {"copies": (0, 1), "crop": (0, 1), "resize": (2, 2)}
    assert at2.mistaken == {"moved": (2, 3), "unrelated": (1, 14)}
    assert (at2.true, at2.false) == (2, 3)
    assert at2.precision == pytest.approx(2 / 5)
    assert at2.recall == pytest.approx(2 / 4)
    assert at2.f1 == pytest.approx(2 * 2 / (2 * 2 + 3 + 2))

    at6 = score(counts, 6)
    assert at6.found == {"copies": (1, 1), "crop": (1, 1), "resize": (2, 2)}
    assert at6.recall == 1.0
    nothing = score(Counter({(True, "resize", 9): 1}), 3)
    assert nothing.precision != nothing.precision  # nothing matched: no precision
    assert (nothing.recall, nothing.f1) == (0.0, 0.0)


def test_a_look_alike_that_is_also_labelled_a_copy_is_refused():
    labels = [Label("p", "x", True, "resize"), Label("p", "x", False, "moved")]
    with pytest.raises(ValueError, match="p and x both duplicates and distinct"):
        pair_classes(labels)


def test_pictures_of_two_keys_are_far_apart_and_a_resized_copy_is_near():
    first, second = picture("test/first", 140, 110), picture("test/second", 140, 110)
    smaller = first.resize((84, 66))
    a, b, c = (hash_image(jpeg(image)).phash for image in (first, second, smaller))
    assert distance(a, b) > 16
    assert distance(a, c) <= 4
    assert picture("test/first", 140, 110).tobytes() == first.tobytes()
