"""Behaviour of llava_data.nearpairs: exact near pairs against brute force, skew, clusters."""

from __future__ import annotations

import numpy as np
import pytest

from llava_data import nearpairs
from llava_data.nearpairs import Chunk, check_layout, clusters, near_pairs, pigeonhole, plan


def brute_force(hashes: np.ndarray, max_distance: int):
    """Every pair i < j within the distance, sorted by (i, j): the reference."""
    found_i, found_j, found_d = [], [], []
    for i in range(hashes.size - 1):
        d = np.bitwise_count(hashes[i] ^ hashes[i + 1 :])
        j = np.flatnonzero(d <= max_distance)
        found_i.append(np.full(j.size, i))
        found_j.append(i + 1 + j)
        found_d.append(d[j])
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return (
        np.concatenate(found_i).astype(np.int64),
        np.concatenate(found_j).astype(np.int64),
        np.concatenate(found_d).astype(np.uint8),
    )


def flip(rng: np.random.Generator, hashes: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Each hash with bits[k] distinct random bits flipped."""
    out = hashes.copy()
    for k, count in enumerate(bits.tolist()):
        for bit in rng.choice(64, count, replace=False).tolist():
            out[k] ^= np.uint64(1) << np.uint64(bit)
    return out


def planted(seed: int = 0, n: int = 1500) -> np.ndarray:
    """Random hashes, as many near copies of some of them (0 to 14 bits off), a few repeats."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, n, dtype=np.uint64)
    near = flip(rng, base[rng.integers(0, n, n)], rng.integers(0, 15, n))
    repeats = np.repeat(base[:5], 4)
    hashes = np.concatenate((base, near, repeats))
    return hashes[rng.permutation(hashes.size)]


def skewed(seed: int = 1) -> np.ndarray:
    """One "blank document" hash 3,000 times, 600 hashes within 6 bits of it (some repeated),
    a second value 2 bits from it 400 times, and 1,000 random hashes, shuffled."""
    rng = np.random.default_rng(seed)
    blank = rng.integers(0, 2**64, 1, dtype=np.uint64)
    near = flip(rng, np.repeat(blank, 600), rng.integers(1, 7, 600))
    second = flip(rng, blank, np.array([2]))
    hashes = np.concatenate(
        (
            np.repeat(blank, 3000),
            near,
            near[:50],
            np.repeat(second, 400),
            rng.integers(0, 2**64, 1000, dtype=np.uint64),
        )
    )
    return hashes[rng.permutation(hashes.size)]


def assert_same(got, want):
    for g, w, dtype in zip(got, want, (np.int64, np.int64, np.uint8), strict=True):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("max_distance", [0, 1, 4, 8, 12])
def test_near_pairs_equal_brute_force_on_planted_pairs(max_distance):
    hashes = planted()
    want = brute_force(hashes, max_distance)
    assert want[0].size >= 50  # the planted pairs are there to find (the repeats at least)
    assert_same(near_pairs(hashes, max_distance), want)


@pytest.mark.parametrize("max_distance", [0, 1, 4, 8, 12])
def test_the_plain_pigeonhole_layout_finds_the_same_pairs(max_distance):
    hashes = planted(seed=2, n=800)
    want = brute_force(hashes, max_distance)
    assert_same(near_pairs(hashes, max_distance, layout=pigeonhole(max_distance)), want)


def test_every_distance_up_to_16_and_every_planned_layout_is_exact():
    hashes = planted(seed=3, n=400)
    for max_distance in range(17):
        want = brute_force(hashes, max_distance)
        assert_same(near_pairs(hashes, max_distance), want)
        for distinct in (10, 1000, 100_000, 3_000_000):
            layout = plan(distinct, max_distance)
            assert check_layout(layout, max_distance) == layout
            assert_same(near_pairs(hashes, max_distance, layout=layout), want)


def test_a_layout_that_could_miss_a_pair_is_refused():
    with pytest.raises(ValueError, match="add up to 4"):
        check_layout([Chunk(0, 21, 1), Chunk(21, 21, 1)], 4)
    with pytest.raises(ValueError, match="overlaps"):
        check_layout([Chunk(0, 21, 2), Chunk(20, 21, 2)], 3)
    with pytest.raises(ValueError, match="at most 24 bits"):
        check_layout([Chunk(0, 32, 1), Chunk(32, 32, 1)], 3)
    # a chunk whose radius covers its width catches every pair: all pairs, always exact
    assert check_layout([Chunk(0, 0, 0)], 64) == (Chunk(0, 0, 0),)


@pytest.mark.parametrize("max_distance", [0, 3, 6, 8])
def test_a_hash_repeated_thousands_of_times_with_near_neighbours(max_distance):
    hashes = skewed()
    got = near_pairs(hashes, max_distance)
    assert_same(got, brute_force(hashes, max_distance))
    assert got[0].size >= 3000 * 2999 // 2  # every pair among the copies, at distance 0


@pytest.mark.parametrize("max_distance", [0, 4, 8])
def test_small_blocks_cut_large_buckets_and_copies_into_many_pieces(monkeypatch, max_distance):
    """The same answer when candidates, 2-D blocks and runs of copies are cut very small."""
    monkeypatch.setattr(nearpairs, "BLOCK", 997)
    monkeypatch.setattr(nearpairs, "RUN", 300)
    monkeypatch.setattr(nearpairs._Pairs, "SLAB", 1000)
    hashes = skewed(seed=4)
    assert_same(near_pairs(hashes, max_distance), brute_force(hashes, max_distance))


def test_the_answer_does_not_depend_on_the_workers():
    hashes = np.concatenate((skewed(seed=5), planted(seed=6, n=500)))
    one = near_pairs(hashes, 6, workers=1)
    for workers in (2, 3):
        assert_same(near_pairs(hashes, 6, workers=workers), one)
    assert_same(near_pairs(hashes, 6, workers=2), one)


def test_empty_and_single_inputs_give_no_pairs():
    for hashes in (np.zeros(0, np.uint64), np.array([7], np.uint64)):
        for max_distance in (0, 8, 64):
            i, j, d = near_pairs(hashes, max_distance)
            assert (i.dtype, j.dtype, d.dtype) == (np.int64, np.int64, np.uint8)
            assert i.size == j.size == d.size == 0


def test_equal_hashes_are_pairs_at_distance_zero_and_64_takes_every_pair():
    hashes = np.array([5, 9, 5, 5, 2**64 - 1, 0], np.uint64)
    i, j, d = near_pairs(hashes, 0)
    assert (i.tolist(), j.tolist(), d.tolist()) == ([0, 0, 2], [2, 3, 3], [0, 0, 0])
    i, j, d = near_pairs(hashes, 64)
    assert i.size == 15 and d.max() == 64
    assert [(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True)] == sorted(
        (a, b) for a in range(6) for b in range(a + 1, 6)
    )


def test_bad_inputs_are_refused():
    with pytest.raises(TypeError, match="uint64"):
        near_pairs(np.array([1, 2], np.int64), 1)
    with pytest.raises(TypeError, match="uint64"):
        near_pairs([1, 2], 1)
    with pytest.raises(TypeError, match="uint64"):
        near_pairs(np.zeros((2, 2), np.uint64), 1)
    with pytest.raises(ValueError, match="0 .. 64"):
        near_pairs(np.zeros(2, np.uint64), -1)
    with pytest.raises(ValueError, match="0 .. 64"):
        near_pairs(np.zeros(2, np.uint64), 65)
    with pytest.raises(TypeError, match="integer"):
        near_pairs(np.zeros(2, np.uint64), 2.0)
    with pytest.raises(TypeError, match="integer"):
        near_pairs(np.zeros(2, np.uint64), True)
    with pytest.raises(ValueError, match="workers"):
        near_pairs(np.zeros(2, np.uint64), 2, workers=0)


def test_clusters_label_each_component_by_its_smallest_item():
    # components {0, 1, 3, 7}, {2}, {4}, {5, 6}; an edge twice and a self-loop change nothing
    i = np.array([6, 3, 1, 7, 1, 4])
    j = np.array([5, 0, 3, 1, 3, 4])
    assert clusters(8, i, j).tolist() == [0, 0, 2, 0, 4, 5, 5, 0]
    assert clusters(8, i, j).dtype == np.int64
    assert clusters(3, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [0, 1, 2]
    assert clusters(0, [], []).size == 0


def test_clusters_of_near_pairs():
    hashes = np.array([0b0, 0b1, 0b111000, 0b11, 0b111001, 0xFFFF << 48], np.uint64)
    i, j, _ = near_pairs(hashes, 1)
    assert clusters(hashes.size, i, j).tolist() == [0, 0, 2, 0, 2, 5]


def test_clusters_refuse_edges_outside_the_items():
    with pytest.raises(ValueError, match="outside"):
        clusters(3, np.array([0]), np.array([3]))
    with pytest.raises(ValueError, match="one length"):
        clusters(3, np.array([0, 1]), np.array([1]))
    with pytest.raises(TypeError, match="integer"):
        clusters(3, np.array([0.0]), np.array([1.0]))
