"""Behaviour of llava_data.mixcore: components, multiset compare, weights, multiplicity, order."""

from __future__ import annotations

import math
from hashlib import blake2b

import numpy as np
import pytest

from llava_data.common import StageError
from llava_data.jsonscan import INVALID_IMAGE
from llava_data.mixcore import (
    UnknownPrefixError,
    assign_components,
    compare,
    draws,
    emission_order,
    multiplicity,
    parse_strategy,
    sample,
    validate_weights,
)

PREFIXES = {
    "coco/": "sharegpt4v",
    "llava/": "llava_other",
    "llava/llava_pretrain/images/": "sharegpt4v",
    "allava_vflan/": "allava",
    "docvqa/": "docvqa",
}


def digests_for(n: int, salt: int = 0) -> np.ndarray:
    """n distinct 16-byte digests, as a scan would give them."""
    rows = [blake2b(f"{salt}-{i}".encode(), digest_size=16).digest() for i in range(n)]
    return np.frombuffer(b"".join(rows), np.uint8).reshape(n, 16)


def test_components_by_longest_prefix_and_text_only():
    images = [
        "coco/train2017/1.jpg",
        None,
        "llava/llava_pretrain/images/00001/1.jpg",
        "llava/other/2.jpg",
        "allava_vflan/images/x.jpg",
        "docvqa/train/documents/a.png",
    ]
    got = assign_components(images, PREFIXES, "sharegpt4v")
    assert got.tolist() == [
        "sharegpt4v",
        "sharegpt4v",
        "sharegpt4v",
        "llava_other",
        "allava",
        "docvqa",
    ]


def test_a_multi_image_record_goes_by_its_first_image_and_an_invalid_one_is_text_only():
    images = [
        ("docvqa/train/a.png", "coco/b.jpg"),
        ("llava/llava_pretrain/images/1.jpg", "docvqa/x.png"),
        ("llava/x.jpg",),
        INVALID_IMAGE,
        "coco/c.jpg",
        None,
    ]
    got = assign_components(images, PREFIXES, "text")
    assert got.tolist() == ["docvqa", "sharegpt4v", "llava_other", "text", "sharegpt4v", "text"]


def test_a_multi_image_record_under_an_unknown_folder_is_reported():
    images = [("coco/a.jpg", "sam/b.jpg"), ("sam/c.jpg", "coco/d.jpg"), INVALID_IMAGE]
    with pytest.raises(UnknownPrefixError) as err:
        assign_components(images, PREFIXES, "t", ids=["a", "b", "c"])
    message = str(err.value)
    assert message.startswith("1 records have an image under a folder no prefix covers")
    assert "  sam/: 1 records, e.g. record 1 (id 'b'): ('sam/c.jpg', 'coco/d.jpg')" in message


def test_components_do_not_depend_on_prefix_order():
    images = ["llava/llava_pretrain/images/1.jpg", "llava/x.jpg", "coco/a.jpg"] * 3
    reordered = dict(reversed(list(PREFIXES.items())))
    assert (
        assign_components(images, PREFIXES, "t").tolist()
        == assign_components(images, reordered, "t").tolist()
    )


def test_prefix_without_slash_matches_by_plain_string_prefix():
    got = assign_components(["web-celebrity/a.jpg", "web-landmark/b.jpg"], {"web-": "web"}, "t")
    assert got.tolist() == ["web", "web"]


def test_unknown_prefix_error_lists_each_folder_count_and_three_examples():
    images = ["coco/1.jpg"] + [f"sam/images/{i}.jpg" for i in range(5)] + ["geoqa+/g.png", "x.jpg"]
    ids = [f"id{i}" for i in range(len(images))]
    with pytest.raises(UnknownPrefixError) as err:
        assign_components(images, PREFIXES, "sharegpt4v", ids=ids)
    message = str(err.value)
    assert isinstance(err.value, StageError)
    assert message.startswith("7 records have an image under a folder no prefix covers")
    assert "  sam/: 5 records, e.g. record 1 (id 'id1'): 'sam/images/0.jpg'" in message
    assert "record 3 (id 'id3'): 'sam/images/2.jpg'" in message
    assert "sam/images/3.jpg" not in message  # at most three examples per folder
    assert "  geoqa+/: 1 records, e.g. record 6 (id 'id6'): 'geoqa+/g.png'" in message
    assert "  x.jpg: 1 records" in message
    assert "coco/1.jpg" not in message


def test_unknown_prefix_error_without_ids_still_names_record_and_image():
    with pytest.raises(UnknownPrefixError, match=r"record 0: 'ai2d/a.png'"):
        assign_components(["ai2d/a.png"], PREFIXES, "t")


def test_compare_counts_identical_and_one_sided_records():
    d = digests_for(5)
    mix = d[[0, 1, 2]]
    upstream = d[[1, 2, 3, 4]]
    assert compare(mix, upstream) == {"identical": 2, "only_in_mix": 1, "only_in_upstream": 2}


def test_compare_uses_multiset_counts():
    d = digests_for(3)
    mix = d[[0, 0, 1, 2, 2, 2]]
    upstream = d[[0, 1, 1, 2]]
    assert compare(mix, upstream) == {"identical": 3, "only_in_mix": 3, "only_in_upstream": 1}


def test_compare_handles_empty_sides_and_digests_equal_in_their_first_bytes():
    d = digests_for(2)
    assert compare(d[:0], d) == {"identical": 0, "only_in_mix": 0, "only_in_upstream": 2}
    assert compare(d, d[:0]) == {"identical": 0, "only_in_mix": 2, "only_in_upstream": 0}
    a = np.zeros((2, 16), np.uint8)
    a[1, 15] = 1  # differs only in the last byte
    assert compare(a[[0]], a[[1]]) == {"identical": 0, "only_in_mix": 1, "only_in_upstream": 1}
    # the same first 8 bytes, interleaved: A (mix), then B and A (upstream)
    assert compare(a[[1]], a[[0, 1]]) == {"identical": 1, "only_in_mix": 0, "only_in_upstream": 1}
    assert compare(a[[1, 0, 1]], a[[0, 1, 0]]) == {
        "identical": 2,
        "only_in_mix": 1,
        "only_in_upstream": 1,
    }


def test_compare_is_fast_enough_for_a_million_records():
    rng = np.random.default_rng(0)
    mix = rng.integers(0, 256, (700_000, 16), dtype=np.uint8)
    upstream = np.concatenate([mix[:600_000], rng.integers(0, 256, (65_000, 16), np.uint8)])
    assert compare(mix, upstream) == {
        "identical": 600_000,
        "only_in_mix": 100_000,
        "only_in_upstream": 65_000,
    }


def test_validate_weights_accepts_numbers_and_returns_floats():
    got = validate_weights({"b": 2, "a": 0.5, "c": 0}, ["a", "b", "c"])
    assert got == {"a": 0.5, "b": 2.0, "c": 0.0}
    assert all(type(v) is float for v in got.values())


@pytest.mark.parametrize(
    "raw, key, what",
    [
        ({"a": -1, "b": 1}, "mix.a", "negative"),
        ({"a": "0.5", "b": 1}, "mix.a", "not a number"),
        ({"a": True, "b": 1}, "mix.a", "not a number"),
        ({"a": None, "b": 1}, "mix.a", "not a number"),
        ({"a": [1], "b": 1}, "mix.a", "not a number"),
        ({"a": math.nan, "b": 1}, "mix.a", "not finite"),
        ({"a": math.inf, "b": 1}, "mix.a", "not finite"),
        ({"a": 101, "b": 1}, "mix.a", "above the maximum 100"),
        ({"a": 1, "b": 1, "zz": 1}, "mix.zz", "unknown component"),
        ({"a": 1}, "mix.b", "missing"),
    ],
)
def test_validate_weights_refuses_bad_values_naming_the_key(raw, key, what):
    with pytest.raises(StageError, match=f"{key}: .*{what}"):
        validate_weights(raw, ["a", "b"])


def test_validate_weights_reports_every_problem_at_once():
    with pytest.raises(StageError) as err:
        validate_weights({"a": -1, "zz": 1}, ["a", "b"])
    message = str(err.value)
    assert "mix.a" in message and "mix.zz" in message and "mix.b" in message


def test_validate_weights_refuses_a_non_mapping():
    with pytest.raises(StageError, match="mapping"):
        validate_weights([1, 2], ["a"])


def test_draws_follow_the_documented_hash():
    d = digests_for(4)
    u = draws(d, 12345)
    for row, value in zip(d, u, strict=True):
        h = blake2b((12345).to_bytes(8, "little") + bytes(row), digest_size=8).digest()
        assert value == (int.from_bytes(h, "little") >> 11) / 2**53
    assert np.all((u >= 0) & (u < 1))


def test_draws_refuse_a_bad_seed():
    for seed in (-1, 2**64, 1.5, True, "1"):
        with pytest.raises(StageError, match="seed"):
            draws(digests_for(1), seed)


N = 20_000


def comps(n: int = N) -> np.ndarray:
    return np.array(["a", "b"] * (n // 2), dtype=object)


def test_records_kept_at_a_lower_fraction_are_a_subset_of_those_at_a_higher():
    d, c = digests_for(N), comps()
    low = multiplicity(c, d, {"a": 0.3, "b": 1.3}, seed=7)
    high = multiplicity(c, d, {"a": 0.5, "b": 1.5}, seed=7)
    assert np.all(low <= high)
    assert np.all(low[c == "b"] - 1 <= high[c == "b"] - 1)
    assert 0.27 < low[c == "a"].mean() < 0.33
    assert 0.47 < high[c == "a"].mean() < 0.53


def test_same_seed_same_result_other_seed_other_selection():
    d, c = digests_for(N), comps()
    w = {"a": 0.5, "b": 2.5}
    first = multiplicity(c, d, w, seed=1)
    assert np.array_equal(first, multiplicity(c, d, w, seed=1))
    other = multiplicity(c, d, w, seed=2)
    assert not np.array_equal(first, other)
    assert 0.4 < np.mean(first != other) < 0.6  # independent draws differ half the time


def test_result_depends_neither_on_weight_key_order_nor_on_record_order():
    d, c = digests_for(N), comps()
    w = {"a": 0.3, "b": 2.5}
    base = multiplicity(c, d, w, seed=3)
    assert np.array_equal(base, multiplicity(c, d, dict(reversed(w.items())), seed=3))
    perm = np.random.default_rng(0).permutation(N)
    assert np.array_equal(base[perm], multiplicity(c[perm], d[perm], w, seed=3))
    # a record's multiplicity does not depend on which other components exist
    only_a = multiplicity(c[c == "a"], d[c == "a"], {"a": 0.3}, seed=3)
    assert np.array_equal(base[c == "a"], only_a)


def test_whole_weights_give_exact_counts_and_fractions_vary_by_one():
    d, c = digests_for(N), comps()
    assert np.all(multiplicity(c, d, {"a": 0, "b": 0}, seed=0) == 0)
    assert np.all(multiplicity(c, d, {"a": 1, "b": 1}, seed=0) == 1)
    assert np.all(multiplicity(c, d, {"a": 3, "b": 0}, seed=0) == np.where(c == "a", 3, 0))
    mult = multiplicity(c, d, {"a": 2.5, "b": 1}, seed=0)
    assert set(mult[c == "a"].tolist()) == {2, 3}
    assert 0.47 < (mult[c == "a"] == 3).mean() < 0.53
    assert mult.dtype == np.int64


def test_multiplicity_refuses_a_component_without_weight():
    with pytest.raises(StageError, match="no mixture weight for component"):
        multiplicity(comps(4), digests_for(4), {"a": 1}, seed=0)


def test_emission_order_is_passes_in_file_order():
    assert emission_order([2, 0, 1, 3]).tolist() == [0, 2, 3, 0, 3, 3]
    assert emission_order([1] * 5).tolist() == [0, 1, 2, 3, 4]
    assert emission_order([0, 0]).tolist() == []
    assert emission_order([]).tolist() == []
    with pytest.raises(ValueError):
        emission_order([1, -1])


# ---- LLaVA-NeXT sampling strategies ------------------------------------------------------


def records(n: int) -> np.ndarray:
    return np.array([list(blake2b(str(i).encode(), digest_size=16).digest()) for i in range(n)],
                    dtype=np.uint8)  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("all", list(range(10))),
        ("first:3", [0, 1, 2]),
        ("end:3", [7, 8, 9]),
        ("first:25%", [0, 1, 2]),  # ceil(25 * 10 / 100) = 3, as LLaVA-NeXT counts
        ("end:1%", [9]),
        ("first:50", list(range(10))),
        ("first:0", []),
    ],
)
def test_strategies_count_as_llava_next_does(strategy, expected):
    assert sample(strategy, records(10), seed=0).tolist() == expected


def test_random_is_seeded_stable_nested_and_in_file_order():
    digests = records(1000)
    thirty, fifty = sample("random:30%", digests, 7), sample("random:50%", digests, 7)
    assert len(thirty) == 300 and len(fifty) == 500
    assert set(thirty) <= set(fifty)
    assert thirty.tolist() == sorted(thirty.tolist())
    assert np.array_equal(thirty, sample("random:30%", digests.copy(), 7))
    assert not np.array_equal(thirty, sample("random:30%", digests, 8))
    # the draw belongs to the record: the same records are kept in another order
    order = np.arange(1000)[::-1]
    again = sample("random:30%", digests[order], 7)
    assert sorted(order[again].tolist()) == thirty.tolist()


@pytest.mark.parametrize(
    ("strategy", "match"),
    [
        ("some", "not one of"),
        ("all:3", "not one of"),
        ("first", "not one of"),
        ("random:x", "whole count"),
        ("first:150%", "0% to 100%"),
        ("end:0", "every record in LLaVA-NeXT"),
        (3, "not a strategy"),
    ],
)
def test_bad_strategies_are_refused_naming_the_key(strategy, match):
    with pytest.raises(StageError, match=match):
        parse_strategy(strategy, "mixtures.mine.llava")
