"""Exact near-duplicate pairs among 64-bit perceptual hashes, and their clusters (numpy, no I/O).

- `near_pairs(hashes, max_distance)`: every pair i < j of positions whose Hamming distance
  popcount(hashes[i] ^ hashes[j]) is at most `max_distance`, exactly, sorted by (i, j).
- `clusters(n, i, j)`: the connected component of each of n items given those pairs as edges,
  labelled by the smallest item of the component.

The search is multi-index hashing (Norouzi, Punjani and Fleet, "Fast search in Hamming space
with multi-index hashing", CVPR 2012) over the distinct values (`np.unique`: a value repeated
10,000 times is searched once). The 64 bits are cut into chunks, each with a radius s; when
the radii plus one add up to more than `max_distance`, two values within the distance differ
by at most s bits on at least one chunk (the pigeonhole principle; radius 0 on
max_distance + 1 chunks is its plain form, `pigeonhole`). Per chunk the values are sorted
into buckets by their chunk bits. The pairs inside a bucket are candidates; so are the pairs
across buckets s bits apart or less, found by XOR-ing each value's chunk bits with every flip
mask of 1 to s bits and looking the result up in tables of 2**width entries. Each candidate
pair is checked on its full distance with `np.bitwise_count` and dropped when an earlier
chunk catches it too, so each pair is found once, without a global de-duplication. `plan`
picks the chunks from a cost model: at distance 8 over 1.46M distinct pHash-like values,
three chunks of 21 bits with radius 2 (0.51G probes, 0.44G candidate pairs) where the plain
form, nine chunks of 7 bits, checks 71G candidate pairs.

Then the pairs of values become pairs of positions, with every copy of a value paired with
its other copies (distance 0). Each output pair is one int64 key (i, j and the distance
packed) in one array sized to the answer. The pairs of values seen once or a few times are
written as they come and sorted; a heavy value (one whose copies are in a million pairs or
more, like a blank-document hash repeated 5,000 times next to 15,000 near neighbours) emits
its pairs row by row, each copy with the sorted positions near it, already in order, so they
are merged, not sorted.

Memory stays bounded on skewed input: candidates are checked BLOCK at a time (a bucket of
tens of thousands of members is cut into bands of rows), and what is kept is the answer: 8
bytes a pair of distinct values while searching, then 8 bytes a pair for the keys, split in
place into i, j and the distance (17 bytes a pair). The search, the writing of the keys and
their sorting run in `workers` threads (numpy releases the GIL in its loops); the answer is
the same for any number.

Speed (`python -m bench.nearpairs`, 1.5M pHash-like hashes on a shared 2-core VM): distance
8 in 8 s and 0.74 GB peak RSS when the answer is small (0.5M pairs); 25 s and 3.2 GB with a
20,000-hash blank-document cluster, whose 173M pairs are 2.9 GB of output by themselves; the
plain pigeonhole layout takes 113 s on the latter, brute force ~2.5 hours.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components

BLOCK = 1 << 22  # candidate pairs expanded and checked at once: ~0.2 GB of temporaries
TINY = 4  # the members of a bucket checked rank by rank; the rest of a larger one by blocks
NARROW = 8  # groups up to this size are checked member by member (1-D passes), not as blocks
RUN = 1 << 20  # a value whose copies emit this many pairs keeps them as a run of its own
MAX_WIDTH = 24  # the widest chunk with flips: its tables have 2**24 entries (150 MB)
MAX_ITEMS = 1 << 28  # i, j (28 bits each) and the distance (7) share one int64 key
BITS = 64
DIST_BITS = 7  # the distance, 0 .. 64, in the low bits of a key
VALUE_SHIFT = 35  # a pair of values (28 bits each) and its distance in one int64 word


@dataclass(frozen=True)
class Chunk:
    """Bits shift .. shift + width - 1 of a hash, searched up to `radius` flipped bits."""

    shift: int
    width: int
    radius: int

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.shift


def near_pairs(
    hashes: np.ndarray,
    max_distance: int,
    *,
    layout: Sequence[Chunk] | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j with popcount(hashes[i] ^ hashes[j]) <= max_distance, sorted by (i, j).

    Returns (i, j, distance) as int64, int64 and uint8 arrays. `layout` overrides the chunks
    that `plan` would choose (`pigeonhole(max_distance)` is the plain scheme). `workers`
    threads (default: the CPUs this process may use) share the search and the sorting; the
    result does not depend on them.
    """
    hashes = _as_hashes(hashes)
    max_distance = _as_distance(max_distance)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, not {workers!r}")
    values, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    if layout is None:
        layout = plan(values.size, max_distance)
    else:
        layout = check_layout(layout, max_distance)
    with ThreadPoolExecutor(workers) as pool:
        found = _distinct_pairs(values, max_distance, layout, pool)
        _give_back_memory()
        keys = _Expansion(inverse.ravel(), counts).keys(found, pool, workers)
        _give_back_memory()
        return _split(keys, hashes.size, pool)


def clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The connected component of each of n items, labelled by its smallest item (int64)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, not {n!r}")
    n = int(n)
    i, j = np.asarray(i), np.asarray(j)
    if i.shape != j.shape or i.ndim != 1:
        raise ValueError(f"i and j must be 1-D and of one length, not {i.shape} and {j.shape}")
    if i.size and not (np.issubdtype(i.dtype, np.integer) and np.issubdtype(j.dtype, np.integer)):
        raise TypeError(f"i and j must be integer arrays, not {i.dtype} and {j.dtype}")
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"an edge names an item outside 0 .. {n - 1}")
    if n == 0:
        return np.zeros(0, np.int64)
    # float64 weights: the type csgraph works in, so it makes no copy of its own
    edges = scipy.sparse.coo_array((np.ones(i.size), (i, j)), shape=(n, n)).tocsr()
    _, labels = connected_components(edges, directed=False)
    # np.unique sorts the labels: first[k] is the smallest item of component k
    _, first = np.unique(labels, return_index=True)
    return first[labels].astype(np.int64)


def pigeonhole(max_distance: int) -> tuple[Chunk, ...]:
    """The plain scheme: max_distance + 1 chunks of near-equal width, matched exactly."""
    max_distance = _as_distance(max_distance)
    if max_distance >= BITS:
        return (Chunk(0, 0, 0),)
    return _chunks(max_distance + 1, BITS, [0] * (max_distance + 1))


def plan(distinct: int, max_distance: int) -> tuple[Chunk, ...]:
    """The layout with the lowest estimated cost for `distinct` distinct values.

    Tries k chunks of near-equal width w (covering k * w <= 64 bits) with radii as even as
    the pigeonhole bound allows, and the single all-pairs chunk; the estimate counts table
    entries, bucket probes and candidate pairs (as if the values were uniform), weighted by
    their measured costs.
    """
    max_distance = _as_distance(max_distance)
    best = (_cost_all_pairs(distinct), (Chunk(0, 0, 0),))
    if max_distance >= BITS:
        return best[1]
    need = max_distance + 1  # sum of (radius + 1) over the chunks
    for k in range(1, need + 1):
        base, extra = divmod(need, k)
        radii = [base - 1 + (c < extra) for c in range(k)]
        for width in range(1, BITS // k + 1):
            layout = _chunks(k, k * width, radii)
            if any(c.radius >= c.width or (c.radius and c.width > MAX_WIDTH) for c in layout):
                continue
            cost = sum(_cost_chunk(distinct, c) for c in layout)
            if cost < best[0]:
                best = (cost, layout)
    return best[1]


def check_layout(layout: Sequence[Chunk], max_distance: int) -> tuple[Chunk, ...]:
    """`layout` as a tuple, or ValueError when it could miss a pair within max_distance."""
    layout = tuple(layout)
    if not layout:
        raise ValueError("a layout needs at least one chunk")
    used = 0
    for c in layout:
        if not isinstance(c, Chunk):
            raise ValueError(f"{c!r} is not a Chunk")
        if c.width < 0 or c.shift < 0 or c.shift + c.width > BITS:
            raise ValueError(f"{c} lies outside the 64 bits")
        if c.radius < 0:
            raise ValueError(f"{c} has a negative radius")
        if c.radius and c.width > MAX_WIDTH:
            raise ValueError(f"{c} has flips to enumerate: it can be at most {MAX_WIDTH} bits")
        if used & c.mask:
            raise ValueError(f"{c} overlaps another chunk")
        used |= c.mask
    slack = sum(c.radius + 1 for c in layout)
    if slack <= max_distance and not any(c.radius >= c.width for c in layout):
        raise ValueError(
            f"the radii plus one add up to {slack}: a pair at distance {max_distance} could "
            f"differ on every chunk by more than its radius"
        )
    return layout


# The planner's costs in nanoseconds of CPU, measured with this module on a 2-core VM.
COST_TABLE = 4.0  # per entry of a chunk's lookup tables (chunks with flips)
COST_VALUE = 100.0  # per distinct value of a chunk (sort, gathers)
COST_PROBE = 5.0  # per value XOR-ed with one flip mask and looked up
# per candidate pair of values checked: buckets of about one value (ranks), of a few (rows),
# of DENSE values or more (2-D blocks)
COST_SPARSE, COST_ROWS, COST_DENSE = 8.0, 14.0, 3.5
DENSE = 32


def _cost_chunk(distinct: int, chunk: Chunk) -> float:
    size = 1 << chunk.width
    volume = sum(math.comb(chunk.width, t) for t in range(chunk.radius + 1))
    candidates = distinct * (distinct - 1) / 2 * volume / size
    load = distinct / size
    per_candidate = COST_SPARSE if load < 2 else COST_ROWS if load < DENSE else COST_DENSE
    cost = COST_VALUE * distinct + per_candidate * candidates
    if chunk.radius:
        cost += COST_TABLE * size + COST_PROBE * distinct / 2 * (volume - 1)
    return cost


def _cost_all_pairs(distinct: int) -> float:
    return COST_VALUE * distinct + COST_DENSE * distinct * (distinct - 1) / 2


def _chunks(k: int, covered: int, radii: Sequence[int]) -> tuple[Chunk, ...]:
    """k chunks of near-equal width over the low `covered` bits, wider ones taking larger radii."""
    base, extra = divmod(covered, k)
    widths = [base + (c < extra) for c in range(k)]
    shifts = [0, *np.cumsum(widths)[:-1].tolist()]
    radii = sorted(radii, reverse=True)
    return tuple(Chunk(s, w, r) for s, w, r in zip(shifts, widths, radii, strict=True))


def _give_back_memory() -> None:
    """Hands the freed heap back to the system (glibc's malloc_trim), where there is glibc.

    The search frees ~0.5 GB of temporaries (bucket tables, blocks of candidates) that glibc
    otherwise keeps, fragmented around small long-lived objects, under the answer allocated
    next; elsewhere this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _as_hashes(hashes) -> np.ndarray:
    hashes = np.asarray(hashes)
    if hashes.dtype != np.uint64 or hashes.ndim != 1:
        raise TypeError(f"hashes must be a 1-D uint64 array, not {hashes.dtype} {hashes.shape}")
    if hashes.size > MAX_ITEMS:
        raise ValueError(f"at most {MAX_ITEMS:,} hashes at once, not {hashes.size:,}")
    return hashes


def _as_distance(max_distance) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, int | np.integer):
        raise TypeError(f"max_distance must be an integer, not {max_distance!r}")
    if not 0 <= max_distance <= BITS:
        raise ValueError(f"max_distance must lie in 0 .. {BITS}, not {max_distance}")
    return int(max_distance)


# ---- the search over distinct values


def _distinct_pairs(
    values: np.ndarray, max_distance: int, layout: Sequence[Chunk], pool: Executor
) -> _Pairs:
    """Each pair of distinct values within the distance, once, in no particular order.

    Each chunk's buckets, then each chunk's within-bucket pairs and each of its groups of
    flips (by highest bit), are tasks of `pool`.
    """
    found = _Pairs()
    if values.size < 2 or max_distance == 0:
        return found
    chunks = list(pool.map(lambda c: _Buckets(values, c), layout))
    tasks = []
    for k, buckets in enumerate(chunks):
        # a pair that an earlier chunk catches is that chunk's to keep
        check = _Check(buckets, max_distance, layout[:k], found)
        tasks.append(pool.submit(buckets.within, check))
        for top in range(buckets.chunk.width if buckets.chunk.radius else 0):
            tasks.append(pool.submit(buckets.across, top, check))
    for task in tasks:
        task.result()
    return found


class _Pairs:
    """Pairs of distinct values (a, b, distance), a word a << 35 | b << 7 | distance each.

    Kept in slabs of SLAB words: memory the allocator maps apart and gives back when freed, so
    the small temporaries of the search, freed around them, leave no heap behind.
    """

    SLAB = 1 << 24

    def __init__(self):
        self.slabs: list[np.ndarray] = []
        self.free = 0  # unused words at the end of the last slab
        self.size = 0
        self.lock = threading.Lock()

    def add(self, a: np.ndarray, b: np.ndarray, distance: np.ndarray) -> None:
        """Thread-safe."""
        words = a.astype(np.int64) << VALUE_SHIFT
        words |= b.astype(np.int64) << DIST_BITS
        words |= distance
        with self.lock:
            done = 0
            while done < words.size:
                if not self.free:
                    self.slabs.append(np.empty(self.SLAB, np.int64))
                    self.free = self.SLAB
                slab, at = self.slabs[-1], self.SLAB - self.free
                take = min(self.free, words.size - done)
                slab[at : at + take] = words[done : done + take]
                done += take
                self.free -= take
            self.size += words.size

    def take(self) -> list[np.ndarray]:
        """The words, slab by slab (the last one cut to its end); this store is emptied."""
        slabs, self.slabs = self.slabs, []
        if slabs:
            slabs[-1] = slabs[-1][: self.SLAB - self.free]
        self.free = self.size = 0
        return slabs


def _unpack(words: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(a, b, distance) of the words, BLOCK at a time."""
    for lo in range(0, words.size, BLOCK):
        part = words[lo : lo + BLOCK]
        yield (
            part >> VALUE_SHIFT,
            (part >> DIST_BITS) & ((1 << (VALUE_SHIFT - DIST_BITS)) - 1),
            (part & ((1 << DIST_BITS) - 1)).astype(np.uint8),
        )


class _Buckets:
    """The distinct values sorted by one chunk's bits, and their buckets."""

    def __init__(self, values: np.ndarray, chunk: Chunk):
        self.chunk = chunk
        keys = (values >> np.uint64(chunk.shift)) & np.uint64((1 << chunk.width) - 1)
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order].astype(np.int64)  # the chunk bits of each sorted value
        self.ordered = values[self.order]
        # each bucket: where its values start in `ordered`, how many
        self.starts = np.flatnonzero(np.diff(self.keys, prepend=-1))
        self.counts = np.diff(self.starts, append=keys.size)
        if chunk.radius:
            # per key: the size of its bucket (255: that many or more; 0: none), where the
            # bucket starts and its first value
            bucket_keys = self.keys[self.starts]
            self.size = np.zeros(1 << chunk.width, np.uint8)
            self.size[bucket_keys] = np.minimum(self.counts, 255)
            self.start = np.zeros(1 << chunk.width, np.int32 if values.size < 2**31 else np.int64)
            self.start[bucket_keys] = self.starts
            self.first = np.zeros(1 << chunk.width, np.uint64)
            self.first[bucket_keys] = self.ordered[self.starts]

    def within(self, check: _Check) -> None:
        """The pairs inside each bucket: each value with the values after it."""
        multi = np.flatnonzero(self.counts > 1)
        check.triangles(self.starts[multi], self.counts[multi])

    def across(self, top: int, check: _Check) -> None:
        """Each value against the bucket of its key ^ f, f a flip mask whose highest bit is `top`.

        Only the values with that bit clear probe, so each pair of buckets comes once. Most
        buckets hold one value or a few: the first value comes straight from its table, the
        next ones rank by rank (a 1-D pass over the probes that found a bucket that large),
        the rest of a larger bucket as rows.
        """
        flips = (1 << top) | _masks(top, self.chunk.radius - 1)
        x = np.flatnonzero((self.keys >> top) & 1 == 0)
        keys = self.keys[x]
        # `step` flips at once (several for a few values only), the probing values repeated
        step = max(1, BLOCK // max(1, x.size))
        x = np.tile(x, min(step, flips.size))
        values = self.ordered[x]
        for lo in range(0, flips.size, step):
            probe = (keys[None, :] ^ flips[lo : lo + step, None]).ravel()
            size = self.size[probe]
            at = np.flatnonzero(size != 0)
            key, size = probe[at], size[at]
            del probe
            check.singles(values[at] ^ self.first[key], x[at], self.start, key)
            more = np.flatnonzero(size > 1)
            at, start, size = at[more], self.start[key[more]], size[more].astype(np.int64)
            for rank in range(1, TINY):
                if rank > 1:
                    more = np.flatnonzero(size > rank)
                    at, start, size = at[more], start[more], size[more]
                y = start + rank
                check.singles(values[at] ^ self.ordered[y], x[at], y)
            # the members of a larger bucket after its first TINY
            more = np.flatnonzero(size > TINY)
            at, start, size = at[more], start[more], size[more]
            large = np.flatnonzero(size == 255)
            size[large] = self.counts[np.searchsorted(self.starts, start[large])]
            check.rows(x[at], start + TINY, size - TINY)


class _Check:
    """Checks candidate pairs of positions in one chunk's `ordered` values; keeps the hits."""

    def __init__(self, buckets: _Buckets, max_distance: int, earlier, found: _Pairs):
        self.ordered, self.order = buckets.ordered, buckets.order
        self.max_distance = max_distance
        self.earlier = [(np.uint64(c.mask), c.radius) for c in earlier]
        self.found = found

    def _keep(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which XORs are within the distance and caught by no earlier chunk; their distance."""
        distance = np.bitwise_count(z)
        hit = np.flatnonzero(distance <= self.max_distance)
        if self.earlier and hit.size:
            z = z[hit]
            for mask, radius in self.earlier:
                fresh = np.bitwise_count(z & mask) > radius
                hit, z = hit[fresh], z[fresh]
        return hit, distance[hit]

    def _add(self, x: np.ndarray, y: np.ndarray, distance: np.ndarray) -> None:
        if x.size:
            self.found.add(self.order[x], self.order[y], distance)

    def singles(self, z: np.ndarray, x: np.ndarray, y: np.ndarray, key=None) -> None:
        """Pairs (x, y) whose XOR z is already known (y[key], when `key` is given)."""
        hit, distance = self._keep(z)
        self._add(x[hit], y[hit] if key is None else y[key[hit]], distance)

    def rows(self, x: np.ndarray, y0: np.ndarray, length: np.ndarray) -> None:
        """Each x against y0 <= y < y0 + length, the rows of one length at a time."""
        ordered = self.ordered
        for size, pick in _by_size(length):
            xs, ys = x[pick], y0[pick]
            if size <= NARROW:  # column by column, a 1-D pass each
                values = ordered[xs]
                for c in range(size):
                    self.singles(values ^ ordered[ys + c], xs, ys + c)
                continue
            step = max(1, BLOCK // size)
            for lo in range(0, xs.size, step):
                xb, yb = xs[lo : lo + step], ys[lo : lo + step]
                z = ordered[xb][:, None] ^ ordered[yb[:, None] + np.arange(size)]
                hit, distance = self._keep(z.ravel())
                row, c = np.divmod(hit, size)
                self._add(xb[row], yb[row] + c, distance)

    def triangles(self, starts: np.ndarray, counts: np.ndarray) -> None:
        """Each pair x < y of positions in [start, start + count), the groups of one size at
        a time: pair by pair (a 1-D pass each), as (k, size, size) blocks, or one by one in
        bands of rows."""
        ordered = self.ordered
        for size, pick in _by_size(counts):
            first = starts[pick]
            if size * size > BLOCK:
                for s in first.tolist():
                    self._big_triangle(s, size)
            elif size <= NARROW:
                columns = [ordered[first + c] for c in range(size)]
                for a in range(size):
                    for b in range(a + 1, size):
                        self.singles(columns[a] ^ columns[b], first + a, first + b)
            else:
                step = max(1, BLOCK // (size * size))
                for lo in range(0, first.size, step):
                    fb = first[lo : lo + step]
                    block = ordered[fb[:, None] + np.arange(size)]
                    hit, distance = self._keep((block[:, :, None] ^ block[:, None, :]).ravel())
                    group, cell = np.divmod(hit, size * size)
                    a, b = np.divmod(cell, size)
                    above = np.flatnonzero(b > a)
                    group, a, b = group[above], a[above], b[above]
                    self._add(fb[group] + a, fb[group] + b, distance[above])

    def _big_triangle(self, start: int, size: int) -> None:
        """A bucket too large for one block: bands of rows, each against the values after it."""
        ordered = self.ordered
        rows = max(1, BLOCK // size)
        for r0 in range(0, size - 1, rows):
            r1 = min(size - 1, r0 + rows)
            after = ordered[start + r0 + 1 : start + size]
            hit, distance = self._keep((ordered[start + r0 : start + r1, None] ^ after).ravel())
            row, c = np.divmod(hit, after.size)
            above = np.flatnonzero(c >= row)  # y = r0 + 1 + c > x = r0 + row
            row, c = row[above], c[above]
            self._add(start + r0 + row, start + r0 + 1 + c, distance[above])


def _members(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every position of the groups [start, start + count), with the end of its group."""
    total = int(counts.sum())
    pos = np.arange(total, dtype=np.int64)
    pos += np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return pos, np.repeat(starts + counts, counts)


def _by_size(sizes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(size, the items of that size), for each size present, smallest first; sizes > 0."""
    order = np.argsort(sizes, kind="stable")
    ordered = sizes[order]
    cuts = np.flatnonzero(np.diff(ordered)) + 1
    for lo, hi in pairwise([0, *cuts.tolist(), order.size]):
        if lo < hi and ordered[lo] > 0:
            yield int(ordered[lo]), order[lo:hi]


def _masks(bits: int, most: int) -> np.ndarray:
    """Every mask over the low `bits` bits with at most `most` bits set (int64, ascending)."""
    masks = np.zeros(1, np.int64)
    for bit in range(bits if most > 0 else 0):
        grow = masks[np.bitwise_count(masks) < most]
        masks = np.concatenate((masks, grow | (1 << bit)))
    return np.sort(masks)


def _expand(
    x0: np.ndarray, nx: np.ndarray, y0: np.ndarray, ny: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs (x, y) of small rectangles, with the rectangle of each, about BLOCK at once."""
    size = nx * ny
    one = np.flatnonzero(size == 1)
    for lo in range(0, one.size, BLOCK):
        rect = one[lo : lo + BLOCK]
        yield rect, x0[rect], y0[rect]
    more = np.flatnonzero(size > 1) if one.size else np.arange(size.size)
    if not more.size:
        return
    size = size[more]
    for lo, hi in _cuts(size):
        s = size[lo:hi]
        rect = np.repeat(more[lo:hi], s)
        off = np.arange(int(s.sum()), dtype=np.int64)
        off -= np.repeat(np.cumsum(s) - s, s)
        dx, dy = np.divmod(off, ny[rect])
        yield rect, x0[rect] + dx, y0[rect] + dy


def _cuts(size: np.ndarray) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of items whose sizes add up to about BLOCK (one item at least)."""
    ends = np.cumsum(size)
    cuts = np.searchsorted(ends, np.arange(BLOCK, int(ends[-1]), BLOCK), side="right")
    for lo, hi in pairwise([0, *np.unique(cuts).tolist(), size.size]):
        if lo < hi:
            yield lo, hi


# ---- from pairs of values to pairs of positions


class _Expansion:
    """The pairs of positions behind the pairs of values, as sorted int64 keys.

    A key is i << (B + 7) | j << 7 | distance, B the bits of a position, so sorting the keys
    sorts the pairs by (i, j). Most pairs are written one key each (every position of a value
    with every position of its near value, and the copies of a value among themselves) and
    sorted. A heavy value c, whose copies are in RUN pairs or more, emits rows instead, which
    are in key order already and are merged (timsort), not sorted: each copy p with every
    position after it in U(c), the sorted positions of c and of all its near values (a pair
    of two heavy values comes from whichever holds the smaller position), and each position
    p of a near value that is not heavy with the copies of c after p.
    """

    def __init__(self, inverse: np.ndarray, counts: np.ndarray):
        self.bits = max(1, (inverse.size - 1).bit_length())
        self.shift = self.bits + DIST_BITS
        self.counts = counts
        self.members = np.argsort(inverse, kind="stable")  # positions of each value, ascending
        self.first = np.cumsum(counts) - counts  # where each value's positions start
        # the position of each value seen once, -1 for a value with copies
        self.solo = np.where(counts == 1, self.members[self.first], -1)

    def keys(self, found: _Pairs, pool: Executor, workers: int) -> np.ndarray:
        """The keys of all pairs, sorted; `found` is emptied.

        The keys are written by tasks of `pool`, each into its own stretch of one array: the
        pairs of values seen once, slab by slab; the pairs of values with copies that are not
        heavy; the runs of the heavy ones, last. All but the runs is sorted in `workers`
        slices at once; then timsort merges the slices and the runs.
        """
        counts = self.counts
        slabs = found.take()
        # per slab: its pairs of values seen once, and apart the pairs that touch copies
        surveys = list(pool.map(self._survey, slabs))
        plain = [size for size, _ in surveys]
        a, b, d = (_cat([part[k] for _, parts in surveys for part in parts]) for k in range(3))
        del surveys
        # heavy: a value with copies in RUN pairs or more
        near = np.bincount(a, counts[b], counts.size) + np.bincount(b, counts[a], counts.size)
        heavy = (counts > 1) & (counts * ((counts - 1) / 2 + near) >= RUN)
        del near
        light = np.flatnonzero(~heavy[a] & ~heavy[b])
        copied = np.flatnonzero((counts > 1) & ~heavy)
        runs = self._runs(np.flatnonzero(heavy), a, b, d, heavy)
        # the tasks, each with the number of keys it writes
        tasks = [(partial(self._plain, slabs, k), size) for k, size in enumerate(plain)]
        for lo in range(0, light.size, BLOCK):
            pick = light[lo : lo + BLOCK]
            size = int((counts[a[pick]] * counts[b[pick]]).sum())
            tasks.append((partial(self._light, a[pick], b[pick], d[pick]), size))
        size = int((counts[copied] * (counts[copied] - 1) // 2).sum())
        tasks.append((partial(self._copies, copied), size))
        sorted_part = sum(size for _, size in tasks)
        tasks += [(partial(_emit, *run), int(run[2].sum())) for run in runs]
        keys = np.empty(sum(size for _, size in tasks), np.int64)
        ends = np.cumsum([size for _, size in tasks]).tolist()

        def write(k: int) -> None:
            task, size = tasks[k]
            fill = task(keys, ends[k] - size)
            assert fill == ends[k]

        list(pool.map(write, range(len(tasks))))
        cuts = np.linspace(0, sorted_part, workers + 1).astype(np.int64).tolist()
        list(pool.map(lambda lo_hi: keys[lo_hi[0] : lo_hi[1]].sort(), pairwise(cuts)))
        if runs or workers > 1:
            keys.sort(kind="stable")
        return keys

    def _survey(self, words: np.ndarray) -> tuple[int, list]:
        """How many of the pairs join two values seen once; the others, (a, b, distance)."""
        solo, plain, rest = self.solo, 0, []
        for a, b, d in _unpack(words):
            both = (solo[a] >= 0) & (solo[b] >= 0)
            plain += int(np.count_nonzero(both))
            other = np.flatnonzero(~both)
            rest.append((a[other].astype(np.int32), b[other].astype(np.int32), d[other]))
        return plain, rest

    def _plain(self, slabs: list, k: int, keys: np.ndarray, fill: int) -> int:
        """The pairs of slab k that join two values seen once; the slab is freed after."""
        solo = self.solo
        for a, b, d in _unpack(slabs[k]):
            both = np.flatnonzero((solo[a] >= 0) & (solo[b] >= 0))
            fill = self._write(keys, fill, solo[a[both]], solo[b[both]], d[both])
        slabs[k] = None
        return fill

    def _light(self, a, b, d, keys: np.ndarray, fill: int) -> int:
        """Every position of a value with every position of its near value."""
        first, counts, members = self.first, self.counts, self.members
        for r, x, y in _expand(first[a], counts[a], first[b], counts[b]):
            fill = self._write(keys, fill, members[x], members[y], d[r])
        return fill

    def _copies(self, copied, keys: np.ndarray, fill: int) -> int:
        """The copies of each value among themselves, at distance 0."""
        x0, ends = _members(self.first[copied], self.counts[copied])
        for _, x, y in _expand(x0, np.ones_like(x0), x0 + 1, ends - x0 - 1):
            fill = self._write(keys, fill, self.members[x], self.members[y], 0)
        return fill

    def _write(self, keys, fill, i, j, distance) -> int:
        key = np.minimum(i, j)
        key <<= self.bits
        key |= np.maximum(i, j)
        key <<= DIST_BITS
        key |= distance
        keys[fill : fill + key.size] = key
        return fill + key.size

    def _runs(self, heavy, a, b, d, is_heavy) -> list[tuple]:
        """The rows of each heavy value, as runs (base, begin, length, source).

        Row r is the keys base[r] | source[begin[r] : begin[r] + length[r]]; a run's rows are
        in key order.
        """
        if not heavy.size:
            return []
        counts, members, first, bits, shift = (
            self.counts,
            self.members,
            self.first,
            self.bits,
            self.shift,
        )
        # the pairs from a heavy value c to a value o (any), both ways
        c = np.concatenate((a[is_heavy[a]], b[is_heavy[b]])).astype(np.int64)
        o = np.concatenate((b[is_heavy[a]], a[is_heavy[b]])).astype(np.int64)
        d = np.concatenate((d[is_heavy[a]], d[is_heavy[b]])).astype(np.int64)
        # U(c): the positions of c (distance 0) and of its near values, sorted
        mine = members[_members(first[heavy], counts[heavy])[0]]
        u = np.concatenate((np.repeat(heavy, counts[heavy]), np.repeat(c, counts[o]))) << shift
        u |= np.concatenate((mine, members[_members(first[o], counts[o])[0]])) << DIST_BITS
        u[mine.size :] |= np.repeat(d, counts[o])
        u.sort()
        # copy p of c against U(c) after p
        owner = np.repeat(heavy, counts[heavy])
        after = (owner << shift) | (mine << DIST_BITS) | ((1 << DIST_BITS) - 1)
        begin = np.searchsorted(u, after, "right")
        length = np.searchsorted(u, (owner + 1) << shift) - begin
        u &= (1 << shift) - 1
        copy_rows = (owner, mine << shift, begin, length)
        # each position p of a near value that is not heavy against the copies of c after p
        light = np.flatnonzero(~is_heavy[o])
        c, o, d = c[light], o[light], d[light]
        p = members[_members(first[o], counts[o])[0]]
        c, d = np.repeat(c, counts[o]), np.repeat(d, counts[o])
        order = np.lexsort((p, c))
        c, p, d = c[order], p[order], d[order]
        member_keys = (np.repeat(np.arange(counts.size), counts) << bits) | members
        begin = np.searchsorted(member_keys, (c << bits) | p, "right")
        del member_keys
        near_rows = (c, (p << shift) | d, begin + u.size, first[c] + counts[c] - begin)
        source = np.concatenate((u, members << DIST_BITS))
        runs = []
        for value, base, begin, length in (copy_rows, near_rows):
            cuts = np.flatnonzero(np.diff(value)) + 1
            for lo, hi in pairwise([0, *cuts.tolist(), value.size]):
                if lo < hi:
                    runs.append((base[lo:hi], begin[lo:hi], length[lo:hi], source))
        return runs


def _emit(base, begin, length, source, keys, fill) -> int:
    """Writes the keys base[r] | source[begin[r] : begin[r] + length[r]], row after row."""
    if not length.size:
        return fill
    for lo, hi in _cuts(length):
        n = length[lo:hi]
        row = np.repeat(np.arange(lo, hi), n)
        at = np.arange(int(n.sum()), dtype=np.int64)
        at += np.repeat(begin[lo:hi] - (np.cumsum(n) - n), n)
        part = source[at]
        part |= base[row]
        keys[fill : fill + part.size] = part
        fill += part.size
    return fill


def _cat(parts: list[np.ndarray], dtype=np.int64) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _split(keys: np.ndarray, n: int, pool: Executor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """i, j and the distance of sorted keys; the keys become j in place, block by block."""
    bits = max(1, (n - 1).bit_length())
    i = np.empty(keys.size, np.int64)
    distance = np.empty(keys.size, np.uint8)

    def split(lo: int) -> None:
        part = keys[lo : lo + BLOCK]
        np.right_shift(part, bits + DIST_BITS, out=i[lo : lo + BLOCK])
        distance[lo : lo + BLOCK] = part & ((1 << DIST_BITS) - 1)
        part >>= DIST_BITS
        part &= (1 << bits) - 1

    list(pool.map(split, range(0, keys.size, BLOCK)))
    return i, keys, distance
