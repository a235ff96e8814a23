"""The cores behind the split and mix stages: rules, recipes, amounts, emission, the index."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest

from llava_data import jsonscan, recipes, splitting
from llava_data.common import StageError


def scanned(tmp_path: Path, records: list[dict], name: str = "a.json") -> jsonscan.RecordIndex:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(records))
    return jsonscan.scan(path, digests=True)


def rec(id_, image, *human: str) -> dict:
    conv = [
        t for h in human for t in ({"from": "human", "value": h}, {"from": "gpt", "value": "x"})
    ]
    return {"id": id_, **({"image": image} if image else {}), "conversations": conv}


SPEC = {
    "rules": [
        {"part": "llava", "shared_with": "ref", "image_prefix": "coco/"},
        {"part": "okvqa", "prefix": "coco/", "prompt": "single word", "max_rounds": 1},
        {"part": "vqav2", "prefix": "coco/", "prompt": ["single word", "one word"]},
    ],
    "text_only": "sharegpt",
    "prefixes": {"coco/": "other", "gqa/": "gqa", "gqa/deep/": "deep"},
    "published": {"mini": {"vqav2": 2}},
}


def test_rules_place_records_by_shared_records_prompts_rounds_then_prefixes(tmp_path):
    ref = scanned(tmp_path, [rec(1, "a.jpg", "<image>\nwhat?")], "ref.json")
    records = [
        rec(1, "coco/a.jpg", "<image>\nwhat?"),  # a reference record once prefixed
        rec(2, "coco/b.jpg", "<image>\nQ? single word"),  # one round
        rec(3, "coco/c.jpg", "<image>\nQ? single word", "R?"),  # two rounds
        rec(4, "coco/d.jpg", "<image>\nQ? one word", "R?"),
        rec(5, "coco/e.jpg", "<image>\nsomething else"),
        rec(6, None, "hello"),
        rec(7, "gqa/x.jpg", "<image>\nQ? single word"),
        rec(8, "gqa/deep/y.jpg", "<image>\nQ"),
        rec(9, ["coco/m.jpg", "coco/n.jpg"], "<image><image>\nQ? single word"),
    ]
    spec = splitting.SplitSpec.parse("t", SPEC)
    index = scanned(tmp_path, records)
    refs = {"ref": splitting.reference_digests(ref, "coco/")}
    parts, evidence = splitting.assign(spec, index, refs)
    assert parts.tolist() == [
        "llava", "okvqa", "vqav2", "vqav2", "other", "sharegpt", "gqa", "deep", "okvqa"
    ]  # fmt: skip
    assert evidence["vqav2"] == {"rule 3: image under coco/, prompt 'single word' or 'one word'": 2}
    assert evidence["llava"] == {"rule 1: shared with ref": 1}
    assert spec.parts == ["deep", "gqa", "llava", "okvqa", "other", "sharegpt", "vqav2"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"rules": [{"part": "a", "prefx": "coco/"}]}, r"unknown key\(s\) \['prefx'\]"),
        ({"rules": [{"part": "a.b"}]}, "part name"),
        ({"rules": [{"part": "a", "max_rounds": -1}]}, "max_rounds"),
        ({"rules": [{"part": "a", "image_prefix": "x/"}]}, "only with shared_with"),
        ({"prefixes": {"coco": "a"}}, "must end with '/'"),
        ({"published": {"mini": {"nope": 1}}}, "published.mini.nope: not a part"),
        ({"published": {"midi": {"vqav2": 1}}}, "per profile"),
    ],
)
def test_bad_split_params_name_their_key(change, match):
    with pytest.raises(StageError, match=match):
        splitting.SplitSpec.parse("t", {**SPEC, **change})


def test_a_record_no_rule_or_prefix_places_stops_the_split_with_its_folder(tmp_path):
    spec = splitting.SplitSpec.parse("t", SPEC)
    index = scanned(tmp_path, [rec("x7", "mystery/b.jpg", "Q")])
    with pytest.raises(StageError, match="mystery/.*x7"):
        splitting.assign(spec, index, {"ref": set()})


SPLITS = {
    "one": splitting.SplitSpec.parse("one", {"prefixes": {"a/": "pa", "b/": "pb"}}),
    "two": splitting.SplitSpec.parse("two", {"prefixes": {"c/": "pc"}}),
}


def test_recipe_parts_name_split_parts_and_a_split_name_means_all_its_parts():
    whole = recipes.Recipe.parse(
        "w", {"parts": "one", "weights": "mix", "out": "data/w.json"}, SPLITS
    )
    assert [(p.name, p.split, p.source) for p in whole.parts] == [
        ("pa", "one", "pa"), ("pb", "one", "pb")
    ]  # fmt: skip
    mine = recipes.Recipe.parse(
        "mine",
        {"parts": {"x": "two/pc", "y": "one/pb"}, "weights": "mixtures.mine", "out": "data/m.json"},
        SPLITS,
    )
    assert mine.splits == ["two", "one"]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"parts": {"x": "one/nope"}}, "parts.x"),
        ({"parts": {"x": "three/pa"}}, "parts.x"),
        ({"parts": {"x": "one/pa", "y": "one/pa"}}, "both take one/pa"),
        ({"parts": "three"}, "not a split"),
        ({"weights": "mixtures.other"}, "weights"),
        ({"out": "/etc/x.json"}, "under data/"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_bad_recipes_are_refused(raw, match):
    base = {"parts": {"x": "one/pa"}, "weights": "mixtures.r", "out": "data/r.json"}
    with pytest.raises(StageError, match=match):
        recipes.Recipe.parse("r", {**base, **raw}, SPLITS)


def test_amounts_take_weights_and_strategies():
    amounts = recipes.Amounts.parse(
        "mixtures.r", {"seed": 3, "a": 0.5, "b": "random:30%", "c": 2}, ["a", "b", "c"]
    )
    assert amounts.seed == 3 and amounts.of == {"a": 0.5, "b": "random:30%", "c": 2.0}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([1, 2], "must be a mapping"),
        ({"seed": -1, "a": 1, "b": 1}, "mixtures.r.seed"),
        ({"seed": True, "a": 1, "b": 1}, "mixtures.r.seed"),
        ({"seed": 0, "a": -1, "b": 1}, "mixtures.r.a: weight -1 is negative"),
        ({"seed": 0, "a": "lots", "b": 1}, "mixtures.r.a: 'lots' is not one of"),
        ({"seed": 0, "a": "end:0", "b": 1}, "mixtures.r.a"),
        ({"seed": 0, "a": 1, "b": 1, "laion": 1}, "mixtures.r.laion"),
        ({"seed": 0, "a": 1}, "mixtures.r.b: missing"),
    ],
)
def test_bad_amounts_name_their_key(raw, match):
    with pytest.raises(StageError, match=match):
        recipes.Amounts.parse("mixtures.r", raw, ["a", "b"])


def test_emission_goes_pass_by_pass_and_split_by_split():
    raw = {"parts": {"x": "two/pc", "y": "one/pa"}, "weights": "mixtures.r", "out": "data/r.json"}
    recipe = recipes.Recipe.parse("r", raw, SPLITS)
    mult = {"two": np.array([2, 0, 1]), "one": np.array([1, 2])}
    segments = recipes.emission_segments(recipe, mult)
    assert [(s, o.tolist()) for s, o in segments] == [
        ("two", [0, 2]), ("one", [0, 1]), ("two", [0]), ("one", [1])
    ]  # fmt: skip


def test_write_segments_joins_several_files_into_one_array(tmp_path):
    a = scanned(tmp_path, [rec(1, "a/x.jpg", "Q"), rec(2, "a/y.jpg", "R")], "a.json")
    b = scanned(tmp_path, [rec(3, "c/z.jpg", "S")], "b.json")
    out = tmp_path / "out.json"
    for workers in (1, 2):
        assert jsonscan.write_segments([(a, [1]), (b, [0]), (a, [0, 1])], out, workers=workers) == 4
        assert [r["id"] for r in orjson.loads(out.read_bytes())] == ["2", "3", "1", "2"]
    jsonscan.write_segments([(a, []), (b, [])], out)
    assert out.read_bytes() == b"[\n]\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_write_segments_also_writes_each_record_to_its_part_file(tmp_path, workers):
    a = scanned(tmp_path, [rec(i, f"a/{i}.jpg", "Q" * i) for i in range(5)], "a.json")
    b = scanned(tmp_path, [rec(9, "c/z.jpg", "S")], "b.json")
    segments = [(a, [3, 0, 4]), (b, [0]), (a, [3, 1])]
    dests = [tmp_path / "p0.json", tmp_path / "p1.json", tmp_path / "p2.json"]
    labels = [1, 0, 1, 1, 1, 0]
    n = jsonscan.write_segments(
        segments, tmp_path / "all.json", workers=workers, parts=(labels, dests)
    )
    assert n == 6
    written = orjson.loads((tmp_path / "all.json").read_bytes())
    for label, dest in enumerate(dests):
        want = [r for r, lab in zip(written, labels, strict=True) if lab == label]
        jsonscan.write_array(scanned(tmp_path, want, "want.json"), range(len(want)), tmp_path / "w")
        assert dest.read_bytes() == (tmp_path / "w").read_bytes(), label
    with pytest.raises(ValueError, match="labels"):
        jsonscan.write_segments(segments, tmp_path / "x.json", parts=([0], dests))


def test_the_split_index_has_the_same_bytes_whatever_writes_it(tmp_path):
    arrays = {"offsets": np.arange(5, dtype=np.int64), "names": np.array(["a", "bc"])}
    splitting.save_npz(tmp_path / "one.npz", arrays)
    splitting.save_npz(tmp_path / "two.npz", arrays)
    data = (tmp_path / "one.npz").read_bytes()
    assert data == (tmp_path / "two.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.npz") as zf:  # no zip64 fields, fixed metadata
        assert {(i.date_time, i.extract_version, i.extra) for i in zf.infolist()} == {
            ((1980, 1, 1, 0, 0, 0), 20, b"")
        }
    with np.load(tmp_path / "one.npz") as npz:
        assert npz["offsets"].tolist() == [0, 1, 2, 3, 4] and npz["names"].tolist() == ["a", "bc"]


def test_an_index_whose_file_changed_is_refused(tmp_path):
    index = scanned(tmp_path, [rec(1, "a/x.jpg", "Q")])
    spec = splitting.SplitSpec.parse("t", {"prefixes": {"a/": "pa"}})
    parts, _ = splitting.assign(spec, index, {})
    splitting.save_index(tmp_path / "i.npz", index, np.zeros(1, np.uint8), spec.parts)
    assert splitting.load_index(tmp_path / "i.npz").rows_of("pa").tolist() == [0]
    Path(index.path).write_bytes(b"[]")
    with pytest.raises(StageError, match="missing or changed"):
        splitting.load_index(tmp_path / "i.npz")
