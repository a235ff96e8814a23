"""Which records two versions of a training file add, remove or reorder, streaming.

A record is known by the XXH3-128 digest of its canonical form (`jsonscan.canonical`), so
two files that hold the same records, however written, compare equal. The files the
pipeline writes (`jsonscan.write_array`: `[`, one canonical record per line, `]`) are read
by a line scanner: the newlines of each chunk found with numpy, each line hashed as it is,
about 1 GB/s. Any other file is read by `jsonscan.scan` with digests (the same digests,
a few microseconds per record). Memory: the chunk buffer and, per record, its digest,
offset and length (32 bytes), whatever the file's size.

`compare` matches the records of the two files as multisets (a record held twice in one
and once in the other is one addition); of the records both hold, `reordered` are the
fewest that, moved, restore the old order (those off a longest increasing run).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from llava_data import jsonscan

CHUNK = 32 << 20
_NEWLINE = 0x0A
_DIGEST = np.dtype((np.void, jsonscan.DIGEST_SIZE))


@dataclass
class Records:
    """The records of one file in file order: digest (void16), byte offset and length."""

    path: Path
    digests: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.digests.size)

    def read(self, rows) -> list[dict]:
        """The records `rows`, parsed (a few, for examples)."""
        out = []
        with open(self.path, "rb") as fh:
            for row in rows:
                fh.seek(int(self.offsets[row]))
                out.append(orjson.loads(fh.read(int(self.lengths[row]))))
        return out


def _lines(path: Path) -> Records | None:
    """The records of a file written one canonical record per line, or None if it is not.

    Per chunk, numpy finds the lines and checks their shape (`{`...`}` and a comma, but
    the last record; `[` first, `]` last); only the hashing of each line is a Python loop.
    """
    digest = jsonscan.record_digest
    digests: list[bytes] = []
    offsets: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    carry = 0  # bytes of an unfinished line at the start of the buffer
    base = 0  # file offset of buf[0]
    first, closed = True, False
    open_end = False  # the last record read had no comma after it: it must be the last
    with open(path, "rb", buffering=0) as fh:
        while True:
            got = fh.readinto(view[carry:])
            if not got:
                break
            end = carry + got
            arr = np.frombuffer(buf, dtype=np.uint8, count=end)
            breaks = np.flatnonzero(arr == _NEWLINE)
            if breaks.size == 0:
                if end == len(buf):  # one line longer than the buffer: grow it
                    del arr
                    view.release()
                    buf.extend(bytes(len(buf)))
                    view = memoryview(buf)
                carry = end
                continue
            starts = np.concatenate(([0], breaks[:-1] + 1))
            last = int(breaks[-1]) + 1
            if first:  # the opening line
                if breaks[0] != 1 or buf[0] != 0x5B:
                    return None
                starts, breaks, first = starts[1:], breaks[1:], False
            if closed and starts.size:  # a line after the closing "]"
                return None
            close = np.flatnonzero((breaks - starts == 1) & (arr[starts] == 0x5D))
            if close.size:  # "]": the last line, after a record without comma or none
                if close[0] != starts.size - 1:
                    return None
                starts, breaks, closed = starts[:-1], breaks[:-1], True
            if starts.size:
                if open_end or not bool(np.all(breaks > starts)):
                    return None
                comma = arr[breaks - 1] == 0x2C
                stops = breaks - comma
                shaped = (arr[starts] == 0x7B) & (arr[np.maximum(stops - 1, 0)] == 0x7D)
                if not bool(shaped.all()) or not bool(comma[:-1].all()):
                    return None
                open_end = not bool(comma[-1])
                digests += [
                    digest(view[a:b]) for a, b in zip(starts.tolist(), stops.tolist(), strict=True)
                ]
                offsets.append(starts + base)
                lengths.append(stops - starts)
            if closed and not (open_end or not digests):
                return None  # a comma after the last record
            carry = end - last
            view[:carry] = view[last:end]
            base += last
            del arr
    if first or not closed or bytes(view[:carry]).strip():
        return None
    return Records(
        path,
        np.frombuffer(b"".join(digests), dtype=_DIGEST),
        np.concatenate(offsets).astype(np.int64) if offsets else np.zeros(0, np.int64),
        np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, np.int64),
    )


def records(path: str | Path) -> Records:
    """The records of a JSON array file, by canonical digest (fast for the pipeline's own)."""
    path = Path(path)
    found = _lines(path)
    # a line-per-record file whose sampled records are not canonical (hand-edited) is read
    # the slow way; one whose first, last and spread records are is taken as canonical
    if found is not None and _canonical_sample(found):
        return found
    index = jsonscan.scan(path, digests=True)
    return Records(
        path,
        np.ascontiguousarray(index.digests).view(_DIGEST).reshape(-1),
        index.offsets.astype(np.int64),
        index.lengths.astype(np.int64),
    )


def _canonical_sample(found: Records, sample: int = 64) -> bool:
    """Whether the first, last and some spread records are already canonical."""
    n = len(found)
    if n == 0:
        return True
    rows = sorted(set(np.linspace(0, n - 1, min(n, sample)).astype(int).tolist()))
    with open(found.path, "rb") as fh:
        for row in rows:
            fh.seek(int(found.offsets[row]))
            raw = fh.read(int(found.lengths[row]))
            if jsonscan.canonical(raw) != raw:
                return False
    return True


@dataclass
class Diff:
    """Rows of the old file removed, rows of the new one added, rows of the new one moved."""

    removed: np.ndarray
    added: np.ndarray
    reordered: np.ndarray
    common: int

    @property
    def same(self) -> bool:
        return not (self.removed.size or self.added.size or self.reordered.size)


def _occurrence(codes: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same code."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_codes[1:] != sorted_codes[:-1])))
    group_start = np.repeat(starts, np.diff(np.concatenate((starts, [codes.size]))))
    rank = np.empty_like(codes)
    rank[order] = np.arange(codes.size) - group_start
    return rank


def _off_longest_run(seq: np.ndarray) -> np.ndarray:
    """Positions of `seq` (distinct ints) outside one longest increasing subsequence."""
    if seq.size < 2 or bool(np.all(seq[1:] > seq[:-1])):
        return np.zeros(0, dtype=np.int64)
    tails: list[int] = []  # value ending the best run of each length
    tail_at: list[int] = []  # its position
    before = np.full(seq.size, -1, dtype=np.int64)
    for i, v in enumerate(seq.tolist()):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_at.append(i)
        else:
            tails[k], tail_at[k] = v, i
        before[i] = tail_at[k - 1] if k else -1
    keep = np.zeros(seq.size, dtype=bool)
    i = tail_at[-1]
    while i >= 0:
        keep[i] = True
        i = int(before[i])
    return np.flatnonzero(~keep)


def compare(old: Records, new: Records) -> Diff:
    """The records `new` adds to, removes from and moves within `old`."""
    both = np.concatenate((old.digests, new.digests))
    _, codes = np.unique(both, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    old_codes, new_codes = codes[: len(old)], codes[len(old) :]
    size = int(codes.max()) + 1 if codes.size else 0
    in_old = np.bincount(old_codes, minlength=size)
    in_new = np.bincount(new_codes, minlength=size)
    old_rank, new_rank = _occurrence(old_codes), _occurrence(new_codes)
    removed = np.flatnonzero(old_rank >= in_new[old_codes])
    added = np.flatnonzero(new_rank >= in_old[new_codes])
    # the records both hold, matched occurrence by occurrence: (code, rank) -> new position
    kept_old = np.flatnonzero(old_rank < in_new[old_codes])
    kept_new = np.flatnonzero(new_rank < in_old[new_codes])
    key_old = old_codes[kept_old] * (len(new) + 1) + old_rank[kept_old]
    key_new = new_codes[kept_new] * (len(new) + 1) + new_rank[kept_new]
    order = np.argsort(key_new)
    where = kept_new[order][np.searchsorted(key_new[order], key_old)]
    moved = where[_off_longest_run(where)]
    return Diff(removed, added, np.sort(moved), int(kept_old.size))
