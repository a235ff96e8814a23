"""Behaviour of llava_data.jsonscan: indexing, canonical forms, writing, malformed files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import xxhash

from llava_data.common import StageError
from llava_data.jsonscan import INVALID_IMAGE, canonical, scan, scan_many, write_array

TRICKY = [
    {
        "id": 1,
        "image": "coco/train2017/000000000001.jpg",
        "conversations": [
            {"from": "human", "value": '<image>\nSay "hi" {x} [y] }] back\\slash \\" end'},
            {"from": "gpt", "value": "a \\ at the end \\"},
        ],
    },
    {"image": "gqa/images/2.jpg", "id": 'quo"te', "conversations": []},
    {"id": "text-only", "conversations": [{"from": "human", "value": "no image {"}]},
    {
        "id": "nested",
        "image": "ocr_vqa/images/3.jpg",
        "meta": {"k": [1, {"z": None, "t": True}], "s": '}]"[{', "n": -2.5},
        "conversations": [{"from": "gpt", "value": "ok"}],
    },
    {"id": "ü-日本", "image": "wikiart/images/naïve 🙂.jpg", "conversations": [{"v": "é\u2028"}]},
    {"conversations": [{"from": "gpt", "value": '\\\\\\"'}], "id": 0, "image": "vg/VG_100K/0.jpg"},
    {"id": 123456789012345678901234567890, "image": "sam/images/x.jpg"},
    {"id": -5, "image": "textvqa/train_images/\\x.jpg", "conversations": ["\t\n\r\x01"]},
]
STR_IDS = [
    "1",
    'quo"te',
    "text-only",
    "nested",
    "ü-日本",
    "0",
    "123456789012345678901234567890",
    "-5",
]
IMAGES = [r.get("image") for r in TRICKY]
FORMATS = {
    "compact": {"separators": (",", ":"), "ensure_ascii": False},
    "json-default": {},
    "indent2": {"indent": 2, "ensure_ascii": False},
    "indent4-ascii": {"indent": 4},
}
CHUNKS = [16, 37, 100, 1 << 20]


def dump(records, fmt: str) -> str:
    return json.dumps(records, **FORMATS[fmt])


def write(tmp_path: Path, text: str | bytes, name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def stringified(rec: dict) -> dict:
    return {k: (str(v) if k == "id" else v) for k, v in rec.items()}


def expected_output(records) -> bytes:
    body = b",\n".join(canonical(json.dumps(r).encode()) for r in records)
    return b"[\n" + body + b"\n]\n" if records else b"[\n]\n"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("digests", [False, True])
def test_scan_finds_each_record_span_id_and_image_in_any_format(tmp_path, fmt, chunk, digests):
    path = write(tmp_path, dump(TRICKY, fmt))
    index = scan(path, digests=digests, chunk_size=chunk)
    assert len(index) == len(TRICKY)
    assert index.ids == STR_IDS
    assert index.images == IMAGES
    assert index.id_was_int.tolist() == [type(r["id"]) is int for r in TRICKY]
    raw = path.read_bytes()
    for off, length, rec in zip(index.offsets, index.lengths, TRICKY, strict=True):
        assert json.loads(raw[off : off + length]) == rec
    assert (index.digests is not None) == digests


@pytest.mark.parametrize("chunk", CHUNKS)
def test_digests_are_xxh3_128_of_the_canonical_form_and_ignore_formatting(tmp_path, chunk):
    by_format = {}
    for fmt in FORMATS:
        path = write(tmp_path, dump(TRICKY, fmt), f"{fmt}.json")
        index = scan(path, digests=True, chunk_size=chunk)
        raw = path.read_bytes()
        for i, (off, length) in enumerate(zip(index.offsets, index.lengths, strict=True)):
            canon = canonical(raw[off : off + length])
            assert bytes(index.digests[i]) == xxhash.xxh3_128_digest(canon)
            assert index.canonical_lengths[i] == len(canon)
        by_format[fmt] = index.digests
    first = by_format.pop("compact")
    for digests in by_format.values():
        assert np.array_equal(digests, first)


def test_integer_and_string_ids_of_the_same_record_have_the_same_digest(tmp_path):
    a = write(tmp_path, json.dumps([{"id": 7, "x": 1}]), "a.json")
    b = write(tmp_path, json.dumps([{"id": "7", "x": 1}], indent=4), "b.json")
    c = write(tmp_path, json.dumps([{"x": 1, "id": "7"}]), "c.json")
    da, db, dc = (scan(p, digests=True).digests for p in (a, b, c))
    assert np.array_equal(da, db)
    assert not np.array_equal(da, dc)  # key order is part of the record


def test_is_canonical_marks_records_already_in_canonical_form(tmp_path):
    text = '[{"id":"a","v":1},\n{"id": "b", "v": 1},{"id":3}]'
    index = scan(write(tmp_path, text), digests=True)
    assert index.is_canonical.tolist() == [True, False, False]


def test_canonical_keeps_key_order_unescapes_and_stringifies_int_ids():
    raw = b'{ "z": 1, "id" : 42, "a": "caf\\u00e9 \\/ \\"q\\"", "n": null }'
    assert canonical(raw) == '{"z":1,"id":"42","a":"café / \\"q\\"","n":null}'.encode()
    assert canonical(b'{"id": 123456789012345678901234567890}') == (
        b'{"id":"123456789012345678901234567890"}'
    )
    assert canonical(b'{"id": "x", "v": [1, 2.5]}') == b'{"id":"x","v":[1,2.5]}'


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_write_array_round_trip_gives_canonical_records_with_string_ids(tmp_path, fmt):
    path = write(tmp_path, dump(TRICKY, fmt))
    index = scan(path, chunk_size=64)
    out = tmp_path / "out" / "mix.json"
    assert write_array(index, range(len(TRICKY)), out) == len(TRICKY)
    assert json.loads(out.read_text()) == [stringified(r) for r in TRICKY]
    assert out.read_bytes() == expected_output(TRICKY)


@pytest.mark.parametrize("workers", [1, 2])
def test_write_array_takes_any_order_with_repeats(tmp_path, workers):
    path = write(tmp_path, dump(TRICKY, "indent2"))
    index = scan(path, digests=True, chunk_size=50)
    order = [5, 0, 0, 7, 3, 2, 2, 2, 1, 6, 4, 0]
    out = tmp_path / "out.json"
    write_array(index, order, out, workers=workers)
    assert out.read_bytes() == expected_output([TRICKY[i] for i in order])


def test_write_array_of_nothing_is_an_empty_array(tmp_path):
    index = scan(write(tmp_path, dump(TRICKY, "compact")))
    out = tmp_path / "empty.json"
    write_array(index, [], out)
    assert out.read_bytes() == b"[\n]\n"
    assert json.loads(out.read_text()) == []


def test_write_array_in_batches_and_processes_matches_one_pass(tmp_path, monkeypatch):
    records = [
        {"id": i if i % 3 else f"s{i}", "image": f"coco/{i}.jpg", "v": "x" * (i % 40) + '"{é'}
        for i in range(400)
    ]
    path = write(tmp_path, json.dumps(records, indent=2))
    index = scan(path, digests=True, chunk_size=300)
    order = np.r_[np.arange(0, 400, 3), np.arange(400)[::-1], [5, 5, 5], np.arange(50, 400)]
    expected = expected_output([records[i] for i in order])
    monkeypatch.setattr("llava_data.jsonscan.WRITE_BATCH_BYTES", 500)
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}.json"
        write_array(index, order, out, workers=workers)
        assert out.read_bytes() == expected


def test_write_array_applies_a_transform_to_each_parsed_record(tmp_path):
    path = write(tmp_path, dump(TRICKY, "indent2"))
    for index in (scan(path), scan(path, digests=True)):
        out = tmp_path / "out.json"

        def add_prefix(rec: dict) -> dict:
            if "image" in rec:
                rec["image"] = "data/" + rec["image"]
            return rec

        write_array(index, [2, 0], out, transform=add_prefix, workers=2)
        want = [stringified(TRICKY[i]) for i in (2, 0)]
        want[1]["image"] = "data/" + want[1]["image"]
        assert json.loads(out.read_text()) == want


def test_scan_many_matches_scanning_one_by_one(tmp_path):
    paths = [
        write(tmp_path, dump(TRICKY, fmt), f"{fmt}.json") for fmt in ("compact", "indent4-ascii")
    ]
    paths.append(write(tmp_path, "[]", "empty.json"))
    together = scan_many(paths, digests=True, workers=2, chunk_size=64)
    for path, index in zip(paths, together, strict=True):
        alone = scan(path, digests=True, chunk_size=64)
        assert index.path == path
        assert index.ids == alone.ids and index.images == alone.images
        assert np.array_equal(index.offsets, alone.offsets)
        assert np.array_equal(index.digests, alone.digests)


def test_records_longer_than_a_chunk_and_a_bom_are_handled(tmp_path):
    records = [{"id": str(i), "image": "a/b.jpg", "v": "y" * 5000 * (i + 1)} for i in range(3)]
    path = write(tmp_path, b"\xef\xbb\xbf \n" + json.dumps(records).encode() + b"\n\n")
    index = scan(path, digests=True, chunk_size=16)
    assert index.ids == ["0", "1", "2"]
    assert index.offsets[0] == 6


def test_empty_array_in_any_spacing_has_no_records(tmp_path):
    for text in ("[]", " [ \n ] \n", "[\n]\n"):
        assert len(scan(write(tmp_path, text), digests=True)) == 0


def test_write_array_refuses_a_source_changed_since_the_scan(tmp_path):
    path = write(tmp_path, dump(TRICKY, "compact"))
    index = scan(path)
    path.write_text(dump(TRICKY[:2], "compact"))
    with pytest.raises(StageError, match="changed since it was scanned"):
        write_array(index, [0], tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_write_array_refuses_indices_out_of_range(tmp_path):
    index = scan(write(tmp_path, dump(TRICKY, "compact")))
    with pytest.raises(ValueError, match="outside"):
        write_array(index, [0, 8], tmp_path / "out.json")


MALFORMED = {
    "not-an-array": ('{"id": "a"}', 0, "instead of `[`"),
    "empty": ("", 0, "empty file"),
    "blank": (" \n ", 3, "empty file"),
    "truncated-in-record": ('[{"id": "a"}, {"id": "b", "v": "x', 33, "truncated"),
    "truncated-after-comma": ('[{"id": "a"},', 13, "truncated"),
    "truncated-in-escape": ('[{"id": "a\\', 11, "truncated"),
    "unbalanced-close": ('[{"id": "a"]', 11, "does not match"),
    "mismatched-inner": ('[{"id": "a", "v": [1, 2}]', 23, "does not match"),
    "object-closes-array": ('[{"id": "a"}}', 12, "closes the top-level array"),
    "missing-comma": ('[{"id": "a"} {"id": "b"}]', 13, "missing `,`"),
    "double-comma": ('[{"id": "a"},, {"id": "b"}]', 13, "extra `,`"),
    "trailing-comma": ('[{"id": "a"},]', 12, "extra `,`"),
    "leading-comma": ('[, {"id": "a"}]', 1, "extra `,`"),
    "data-after": ('[{"id": "a"}] x', 14, "after the end"),
    "second-array": ('[{"id": "a"}][]', 13, "after the end"),
    "garbage-between": ('[{"id": "a"}, ; {"id": "b"}]', 14, "unexpected ';'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("chunk", [16, 1 << 20])
def test_malformed_file_is_a_stage_error_naming_file_offset_and_fix(tmp_path, case, chunk):
    text, offset, what = MALFORMED[case]
    path = write(tmp_path, text)
    for digests in (False, True):
        with pytest.raises(StageError) as err:
            scan(path, digests=digests, chunk_size=chunk)
        message = str(err.value)
        assert str(path) in message
        assert f"at byte {offset};" in message
        assert what in message
        assert "truncated or corrupt" in message
        assert f"delete {path} and run again the stage that writes it" in message
        assert "`dvc repro fetch@<source>`" in message


NOT_RECORDS = {
    "number-element": ('[{"id": "a"}, 5]', 14, "a number"),
    "negative-number-element": ('[{"id": "a"},\n-5]', 14, "a number"),
    "string-element": ('[{"id": "a"}, "{x}"]', 14, "a string"),
    "null-element": ('[{"id": "a"}, null]', 14, "null"),
    "bool-element": ('[true, {"id": "a"}]', 1, "a boolean"),
    "array-element": ('[{"id": "a"}, [{"id": "b"}]]', 14, "an array"),
}


@pytest.mark.parametrize("case", sorted(NOT_RECORDS))
@pytest.mark.parametrize("chunk", [16, 1 << 20])
def test_an_element_that_is_not_an_object_is_not_called_corrupt(tmp_path, case, chunk):
    text, offset, kind = NOT_RECORDS[case]
    path = write(tmp_path, text)
    for digests in (False, True):
        with pytest.raises(StageError) as err:
            scan(path, digests=digests, chunk_size=chunk)
        message = str(err.value)
        assert message.startswith(f"{path}: not an array of records at byte {offset}: ")
        assert f"an element that is {kind}, not an object" in message
        assert "corrupt" not in message and "truncated" not in message


def test_a_damaged_download_names_its_fetch_stage_and_the_pin_to_reset(tmp_path):
    folder = tmp_path / "downloads" / "mix1m_json"
    folder.mkdir(parents=True)
    path = write(folder, '[{"id": "a"}, {"id": "b", "v": "x', "mix1M.json")
    with pytest.raises(StageError) as err:
        scan(path)
    message = str(err.value)
    assert message.startswith(f"{path}: a truncated file")
    assert "at byte 33;" in message
    assert (
        "to download source `mix1m_json` again, delete downloads/mix1m_json/mix1M.json and "
        "run `dvc repro fetch@mix1m_json`; if sources.yaml's size/sha256 for `mix1m_json` "
        "were recorded from this very download (a first download pins what it saw; "
        "`git log -p sources.yaml` shows it), set them back to null first, or the new "
        "download will be refused by the wrong pin"
    ) in message
    assert "repro -f" not in message and "re-fetch" not in message
    write(folder, '[{"id": "a"}, 7]', "mix1M.json")
    with pytest.raises(StageError, match=r"not an array of records at byte 14: .*fetch@mix1m_json"):
        scan(path, digests=True)


def test_a_record_that_is_not_json_is_a_stage_error_when_parsed(tmp_path):
    path = write(tmp_path, '[{"id": "ok"},\n{"id": "a", "v": tru}]')
    with pytest.raises(StageError, match="not valid JSON.* at byte 15; the file is truncated"):
        scan(path, digests=True)


def test_a_record_the_quick_reader_skips_is_still_checked(tmp_path):
    path = write(tmp_path, '[{"image": "a/b.jpg", "id": tru}]')
    with pytest.raises(StageError, match="not valid JSON.* at byte 1;"):
        scan(path)


def test_a_record_that_is_not_json_fails_write_array_with_its_offset(tmp_path):
    path = write(tmp_path, '[{"id": "a", "image": "b/c.jpg", "v": nope}]')
    index = scan(path)  # the quick reader only reads id and image
    with pytest.raises(StageError, match="not valid JSON.* at byte 1;.*dvc repro fetch@"):
        write_array(index, [0], tmp_path / "out.json")


# Records of a shape the quick reader does not expect: they are records, not corruption.
UNUSUAL = [
    {"id": "ok", "image": "coco/a.jpg", "conversations": [{"from": "human", "value": "<image>"}]},
    {
        "id": "multi",
        "image": ["coco/1.jpg", 'gqa/images/2 "q".jpg', "wikiart/naïve.jpg"],
        "conversations": [{"from": "human", "value": "<image><image>\n<image> {]"}],
    },
    {"id": 12, "image": ["ocr_vqa/images/only.jpg"]},
    {"image": "coco/no-id.jpg", "conversations": []},
    {"id": 2.5, "image": "coco/float-id.jpg"},
    {"id": None, "image": "coco/null-id.jpg"},
    {"id": True},
    {"id": 1.0, "image": ["a/b.jpg"]},
    {"id": {"nested": 1}, "image": "coco/object-id.jpg"},
    {"id": "num", "image": ["coco/1.jpg", 3]},
    {"id": "empty", "image": []},
    {"id": "number", "image": 3},
    {"id": "object", "image": {"path": "coco/1.jpg"}},
    {"id": "null-image", "image": None},
    {"id": 123456789012345678901234567890, "image": ["sam/x.jpg", "sam/y.jpg"]},
]
UNUSUAL_IDS = [
    "ok",
    "multi",
    "12",
    "",
    "",
    "",
    "",
    "",
    "",
    "num",
    "empty",
    "number",
    "object",
    "null-image",
    "123456789012345678901234567890",
]
UNUSUAL_IMAGES = [
    "coco/a.jpg",
    ("coco/1.jpg", 'gqa/images/2 "q".jpg', "wikiart/naïve.jpg"),
    ("ocr_vqa/images/only.jpg",),
    "coco/no-id.jpg",
    "coco/float-id.jpg",
    "coco/null-id.jpg",
    None,
    ("a/b.jpg",),
    "coco/object-id.jpg",
    INVALID_IMAGE,
    INVALID_IMAGE,
    INVALID_IMAGE,
    INVALID_IMAGE,
    None,
    ("sam/x.jpg", "sam/y.jpg"),
]
UNUSUAL_WAS_INT = [False, False, True] + [False] * 11 + [True]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("digests", [False, True])
def test_records_of_unusual_shapes_scan_as_records(tmp_path, fmt, chunk, digests):
    path = write(tmp_path, dump(UNUSUAL, fmt))
    index = scan(path, digests=digests, chunk_size=chunk)
    assert index.ids == UNUSUAL_IDS
    assert index.images == UNUSUAL_IMAGES
    assert all(
        (got is INVALID_IMAGE) == (want is INVALID_IMAGE)
        for got, want in zip(index.images, UNUSUAL_IMAGES, strict=True)
    )
    assert index.id_was_int.tolist() == UNUSUAL_WAS_INT
    raw = path.read_bytes()
    for i, (off, length) in enumerate(zip(index.offsets, index.lengths, strict=True)):
        assert json.loads(raw[off : off + length]) == UNUSUAL[i]
        if digests:
            canon = canonical(raw[off : off + length])
            assert bytes(index.digests[i]) == xxhash.xxh3_128_digest(canon)
            assert index.canonical_lengths[i] == len(canon)


def test_canonical_form_of_unusual_ids_keeps_them_and_stringifies_only_integers():
    assert canonical(b'{"id": 2.5, "image": ["a.jpg", 3]}') == b'{"id":2.5,"image":["a.jpg",3]}'
    assert canonical(b'{"id": 1.0}') == b'{"id":1.0}'
    assert canonical(b'{"id": null}') == b'{"id":null}'
    assert canonical(b'{"id": false}') == b'{"id":false}'
    assert canonical(b'{"v": 1}') == b'{"v":1}'


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_records_of_unusual_shapes_round_trip_through_write_array(tmp_path, fmt, digests, workers):
    path = write(tmp_path, dump(UNUSUAL, fmt))
    index = scan(path, digests=digests, chunk_size=37)
    order = [1, 0, 9, 4, 14, 2, 2, *range(len(UNUSUAL))]
    out = tmp_path / "out.json"
    assert write_array(index, order, out, workers=workers) == len(order)
    assert out.read_bytes() == expected_output([UNUSUAL[i] for i in order])
    got = json.loads(out.read_text())
    assert got[0] == UNUSUAL[1]  # a multi-image record is written as it is
    assert got[3] == UNUSUAL[4]  # a float id stays a float
    assert got[5] == {"id": "12", "image": ["ocr_vqa/images/only.jpg"]}


def test_invalid_image_stays_one_object_across_processes(tmp_path):
    assert pickle.loads(pickle.dumps(INVALID_IMAGE)) is INVALID_IMAGE
    assert repr(INVALID_IMAGE) == "INVALID_IMAGE"
    small = write(tmp_path, dump(UNUSUAL[:10], "compact"), "small.json")
    big = write(tmp_path, dump(UNUSUAL * 3, "indent2"), "big.json")
    first, second = scan_many([small, big], digests=True, workers=2, chunk_size=64)
    assert first.images[9] is INVALID_IMAGE  # scanned in a spawned process
    assert second.images[10] is INVALID_IMAGE
    assert first.images == UNUSUAL_IMAGES[:10] and second.images == UNUSUAL_IMAGES * 3


def test_quick_reader_agrees_with_full_parse_on_escaped_fields(tmp_path):
    records = [
        {"id": 'a\\"b', "image": "x/\u00e9\\y.jpg"},
        {"id": 17, "image": "p/q.jpg"},
        {"id": "c", "image": 'd/"e".jpg', "id2": 1},
        {"id": "f", "image": None},
    ]
    for kwargs in ({}, {"ensure_ascii": False}, {"indent": 3}):
        path = write(tmp_path, json.dumps(records, **kwargs))
        quick, full = scan(path), scan(path, digests=True)
        assert quick.ids == full.ids == ['a\\"b', "17", "c", "f"]
        assert quick.images == full.images == [r["image"] for r in records]
        assert quick.id_was_int.tolist() == full.id_was_int.tolist() == [0, 1, 0, 0]
