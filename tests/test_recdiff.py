"""The streaming record diff: what two versions of a training file add, remove, reorder."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from llava_data import jsonscan, recdiff


def rec(i: int, image: str | None = None) -> dict:
    out = {"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}]}
    if image:
        out["image"] = image
    return out


def write(path, records, indent=None):
    """As the pipeline writes (one canonical record per line) or, with indent, as upstream."""
    if indent is None:
        body = ",\n".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in records)
        path.write_text("[\n" + body + ("\n]\n" if records else "]\n"), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, indent=indent), encoding="utf-8")
    return path


def ids(found: recdiff.Records, rows) -> list[str]:
    return [r["id"] for r in found.read(rows)]


def test_same_records_compare_equal_however_written(tmp_path):
    records = [rec(i, f"coco/{i}.jpg") for i in range(20)]
    lines = recdiff.records(write(tmp_path / "a.json", records))
    indented = recdiff.records(write(tmp_path / "b.json", records, indent=2))
    assert lines.digests.tobytes() == indented.digests.tobytes()
    assert recdiff.compare(lines, indented).same
    # the line reader's digest is jsonscan's canonical digest
    index = jsonscan.scan(tmp_path / "b.json", digests=True)
    assert np.ascontiguousarray(index.digests).tobytes() == lines.digests.tobytes()


def test_added_removed_and_reordered_are_named(tmp_path):
    old = [rec(i) for i in range(10)]
    new = [old[0], old[2], old[1], *old[3:8], rec(100), old[9]]  # 1 and 2 swap, 8 gone, 100 new
    a = recdiff.records(write(tmp_path / "a.json", old))
    b = recdiff.records(write(tmp_path / "b.json", new))
    diff = recdiff.compare(a, b)
    assert ids(a, diff.removed) == ["8"]
    assert ids(b, diff.added) == ["100"]
    assert len(diff.reordered) == 1 and ids(b, diff.reordered)[0] in {"1", "2"}
    assert diff.common == 9


def test_repeats_count_as_multisets(tmp_path):
    old = [rec(1), rec(2), rec(3)]
    new = [rec(1), rec(2), rec(3), rec(1), rec(2), rec(3)]  # a weight of 2: every record twice
    diff = recdiff.compare(
        recdiff.records(write(tmp_path / "a.json", old)),
        recdiff.records(write(tmp_path / "b.json", new)),
    )
    assert diff.added.tolist() == [3, 4, 5] and diff.removed.size == 0 and diff.reordered.size == 0
    back = recdiff.compare(
        recdiff.records(tmp_path / "b.json"), recdiff.records(tmp_path / "a.json")
    )
    assert back.removed.tolist() == [3, 4, 5] and back.added.size == 0


def test_reordering_counts_the_fewest_moves(tmp_path):
    rng = random.Random(3)
    old = [rec(i) for i in range(300)]
    new = list(old)
    moved = rng.sample(range(300), 7)
    for k in moved:  # move 7 records to the end
        new.remove(old[k])
    new += [old[k] for k in moved]
    diff = recdiff.compare(
        recdiff.records(write(tmp_path / "a.json", old)),
        recdiff.records(write(tmp_path / "b.json", new)),
    )
    assert diff.removed.size == 0 and diff.added.size == 0
    assert len(diff.reordered) <= 7
    reversed_diff = recdiff.compare(
        recdiff.records(tmp_path / "a.json"),
        recdiff.records(write(tmp_path / "c.json", old[::-1])),
    )
    assert len(reversed_diff.reordered) == 299


def test_empty_and_long_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(recdiff, "CHUNK", 64)  # records longer than the buffer, lines split
    empty = recdiff.records(write(tmp_path / "e.json", []))
    assert len(empty) == 0
    big = [rec(i, "x/" + "é" * (50 + i)) for i in range(30)]
    found = recdiff.records(write(tmp_path / "b.json", big))
    assert ids(found, range(30)) == [str(i) for i in range(30)]
    diff = recdiff.compare(empty, found)
    assert diff.added.tolist() == list(range(30))


@pytest.mark.parametrize(
    "text",
    [
        '[\n{"id":"1"},\n{"id":"2"}\n]\n',  # canonical
        '[\n{"id": "1"},\n{"id": "2"}\n]\n',  # one per line, not canonical
        '[\n{"id":"1"}\n,{"id":"2"}\n]\n',  # comma at the line's start
        '[{"id":"1"},{"id":"2"}]',  # one line
        '[\n{"id":1},\n{"id":"2"}\n]\n',  # an integer id: canonical form is a string
    ],
)
def test_every_way_of_writing_gives_the_canonical_digests(tmp_path, text):
    path = tmp_path / "f.json"
    path.write_text(text, encoding="utf-8")
    found = recdiff.records(path)
    want = [jsonscan.record_digest(b'{"id":"1"}'), jsonscan.record_digest(b'{"id":"2"}')]
    assert found.digests.tobytes() == b"".join(want)


def test_a_truncated_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[\n{"id":"1"},\n{"id":"2"', encoding="utf-8")
    with pytest.raises(jsonscan.StageError, match="t.json"):
        recdiff.records(path)


@pytest.mark.parametrize(
    "text",
    [
        '[\n{"id":"1"},\n]\n',  # a comma after the last record
        '[\n{"id":"1"}\n{"id":"2"}\n]\n',  # no comma between two records
        '[\n{"id":"1"}\n]\n]\n',  # a second closing bracket
    ],
)
def test_malformed_arrays_are_errors_not_records(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(jsonscan.StageError, match="bad.json"):
        recdiff.records(path)
