"""The review's pure parts: params and sources in words, warnings, the lock merge, the
comment's size limit."""

from __future__ import annotations

import pytest

from llava_data import lockmerge, review, review_comment
from llava_data.common import StageError

PARAMS = {
    "profile": "mini",
    "mix": {"seed": 0, "allava": 1, "dvqa": 1},
    "mixtures": {"llava_v1_5_665k": {"seed": 0, "vqav2": 1, "ocr_vqa": "all"}},
    "recipes": {
        "mix1m": {"parts": "mix1m", "weights": "mix", "out": "data/m.json"},
        "llava_v1_5_665k": {"parts": "llava_v1_5_665k", "weights": "mixtures.llava_v1_5_665k"},
    },
    "splits": {"mix1m": {"prefixes": {"coco/": "sharegpt4v"}}},
    "validate": {"policy": "drop"},
}


def changed(**edits) -> dict:
    import copy

    out = copy.deepcopy(PARAMS)
    for key, value in edits.items():
        node = out
        *path, last = key.split("__")
        for part in path:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return out


def test_weights_and_strategies_are_said_in_words():
    new = changed(mix__allava=0, mix__dvqa=0.5, mixtures__llava_v1_5_665k__ocr_vqa="random:50%")
    assert review.params_words(PARAMS, new) == [
        "recipe `mix1m`, part `allava`: weight 1 → 0 (left out)",
        "recipe `mix1m`, part `dvqa`: weight 1 → 0.5 (about 50% of its records)",
        "recipe `llava_v1_5_665k`, part `ocr_vqa`: sampling all → random:50%",
    ]
    seed = review.params_words(PARAMS, changed(mix__seed=3))
    assert seed == [
        "recipe `mix1m`: seed 0 → 3 (every fractional weight and `random:N` draws anew)"
    ]


def test_other_params_are_named_by_their_section():
    new = changed(validate__policy="keep", splits__mix1m__prefixes={"coco/": "x"}, profile="full")
    words = review.params_words(PARAMS, new)
    assert "validation: `policy` drop → keep" in words
    assert "split `mix1m`: `prefixes.coco/` sharegpt4v → x" in words
    assert any(w.startswith("profile: `mini` → `full`") for w in words)
    assert review.params_words(PARAMS, PARAMS) == []


def test_recipes_added_and_removed():
    new = changed(recipes__mine={"parts": "mix1m", "weights": "mix", "out": "data/x.json"})
    assert review.params_words(PARAMS, new) == [
        "recipe `mine` added (weights: `mix`, out: data/x.json)"
    ]
    assert review.params_words(new, PARAMS) == ["recipe `mine` removed"]


REGISTRY = {
    "sources": {
        "a": {
            "licence": "CC-BY",
            "what": "a file",
            "full": {"hf": {"repo": "o/a", "revision": "1" * 40}, "sha256": "ab" * 32, "size": 5},
        },
        "b": {"licence": "MIT", "full": {"url": "https://x/b", "sha256": None}},
    }
}


def test_source_changes_and_their_warnings():
    import copy

    new = copy.deepcopy(REGISTRY)
    new["sources"]["a"]["full"]["hf"]["revision"] = "2" * 40
    new["sources"]["a"]["full"]["sha256"] = None
    new["sources"]["a"]["what"] = "the prose changes: not a fact"
    new["sources"]["b"]["licence"] = "proprietary"
    new["sources"]["c"] = {"licence": "x", "full": {"url": "https://x/c"}}
    changes = review.source_changes(REGISTRY, new)
    assert [(c.source, c.key) for c in changes] == [
        ("a", "full.hf.revision"),
        ("a", "full.sha256"),
        ("b", "licence"),
        ("c", ""),
    ]
    assert review.source_warnings(changes) == [
        "source `a`: upstream pin `full.hf.revision` changed",
        f"source `a`: checksum `full.sha256` removed (was {'ab' * 32})",
        "source `b`: licence changed: MIT → proprietary",
    ]


def test_review_settings_are_checked():
    assert review.Settings.parse(None) == review.Settings()
    assert review.Settings.parse({"examples": 0, "tolerance": 0.1}).examples == 0
    for bad in ({"examples": -1}, {"tolerance": 1.5}, {"tolerance": "x"}, {"other": 1}, [1]):
        with pytest.raises(StageError, match="review"):
            review.Settings.parse(bad)


def test_counts_off_their_published_count(tmp_path):
    (tmp_path / "metrics/splits").mkdir(parents=True)
    (tmp_path / "metrics/splits/s.json").write_text('{"parts": {"x": 97, "y": 100}}')
    (tmp_path / "metrics/layout.json").write_text(
        '{"trees": {"t": {"dest": "t/images", "files": 90, "expected": 100, '
        '"expected_known": "published"}, "u": {"files": 1, "expected": 100, '
        '"expected_known": "assumed"}}}'
    )
    side = review.Side("workspace", None, tmp_path)
    params = {"profile": "mini", "splits": {"s": {"published": {"mini": {"x": 100, "y": 100}}}}}
    off = review.off_published(side, params, 0.02)
    assert off == {
        "split:s:x": "split `s`, part `x`: 97 records, published 100 (-3.0%)",
        "tree:t": "tree `t` (t/images): 90 images, published 100 (-10.0%)",
    }
    assert review.off_published(side, params, 0.5) == {}


def stage(cmd: str, md5: str = "0") -> dict:
    return {"cmd": cmd, "outs": [{"path": "o", "md5": md5}]}


def test_lock_merge_takes_each_side_and_marks_what_both_changed():
    base = {
        "schema": "2.0",
        "stages": {"a": stage("a"), "b": stage("b"), "c": stage("c"), "d": stage("d")},
    }
    ours = {
        "schema": "2.0",
        "stages": {"a": stage("a", "1"), "b": stage("b"), "c": stage("c", "1")},
    }
    theirs = {
        "schema": "2.0",
        "stages": {
            "a": stage("a"),
            "b": stage("b", "2"),
            "new": stage("n"),
            "c": stage("c", "2"),
            "d": stage("d"),
        },
    }
    merged, marked = lockmerge.merge(base, ours, theirs)
    stages = merged["stages"]
    assert list(stages) == ["a", "b", "new", "c"]  # d: removed by ours, untouched by theirs
    assert stages["a"] == stage("a", "1") and stages["b"] == stage("b", "2")
    assert stages["new"] == stage("n")
    assert marked == ["c"] and stages["c"]["cmd"] == lockmerge.REBUILD
    assert stages["c"]["outs"] == stage("c", "1")["outs"]
    assert lockmerge.merge(base, base, base) == (base, [])


def test_a_long_report_is_cut_to_a_comment():
    body = review_comment.body_of("x" * 70000, "https://ci/run/1")
    assert len(body) <= review_comment.LIMIT and body.startswith(review.MARKER)
    assert body.endswith("the whole report: https://ci/run/1")
    short = review_comment.body_of(review.MARKER + "\nshort")
    assert short == review.MARKER + "\nshort"
