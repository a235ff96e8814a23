"""Read and write big JSON arrays of records (LLaVA annotation files) fast and lean.

`scan` reads a file holding one JSON array of objects and returns a `RecordIndex`: the byte
span of every element, its `id` (as a string) and its `image` (None, a path, a tuple of paths
or INVALID_IMAGE), and on request the digest of its canonical form. It never holds Python
objects for more than one record: it reads the file in chunks into one reusable buffer and
finds the element boundaries with numpy (quotes not escaped by an odd run of backslashes
delimit strings; brackets outside strings give the depth), so its memory is a few chunks
plus the index, whatever the file's size. `write_array` writes any selection of the indexed
records, in any order and with repeats, in their canonical form, streaming and atomically.

The canonical form of a record (`canonical`) is its compact JSON as `orjson.dumps` writes
it (same key order, UTF-8, no whitespace) with an integer `id` turned into a string.
Upstream files mix string and integer ids and differ in indentation and escaping; equal
canonical forms mean equal records. Any other `id` (missing, null, a float, a bool, ...)
is kept as it is; the index then holds "" for it.

Checked while scanning: the file is one array (`[` first, only whitespace after its `]`),
brackets balance and match, every element is an object, elements are separated by exactly
one comma, the file is not truncated. A record's own syntax is checked when it is parsed:
always with `digests=True`; otherwise only for the records whose `id`/`image` the quick
reader cannot take from their first bytes, and later in `write_array`. Every failure is a
`StageError` naming the file and the byte offset, and saying how to download it again.
What a record holds is not checked here: a record with an odd `id` or `image` is indexed
like any other (`llava_data.validate` reports it).

Speed notes (2-core VM, 1.64 GB file of 1M records): the numpy structure scan runs at about
1 GB/s; with digests, parsing, re-serialising and hashing each record costs ~4.5 us, which
dominates. `scan_many` scans files in parallel processes; `write_array` re-serialises the
records it writes, optionally in several processes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import mmap
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import orjson
import xxhash

from llava_data.common import StageError, atomic_path

CHUNK_SIZE = 2 << 20  # fits in cache: the numpy passes over a chunk then cost little
WRITE_BATCH_BYTES = 16 << 20
WRITE_BUFFER = 1 << 20
READ_GAP = 16 << 10  # read two records with one call when at most this far apart
DIGEST_SIZE = 16  # bytes of a record's digest: XXH3-128 of its canonical form, big-endian
record_digest = xxhash.xxh3_128_digest  # ~0.2 us for a 2 KB record (blake2b: ~3 us)
SEPARATOR = b",\n"
_WHITESPACE = b" \t\n\r"
_BOM = b"\xef\xbb\xbf"
_QUOTE, _BACKSLASH, _COMMA = 0x22, 0x5C, 0x2C
_OPEN_OBJ, _CLOSE_ARR = 0x7B, 0x5D
# A record that starts with its id and image (possessive quantifiers: no backtracking)
_STR = rb'"([^"\\]*+(?:\\.[^"\\]*+)*+)"'
_INT = rb"(-?(?:0|[1-9][0-9]{0,17}))(?=\s*+[,}])"
_HEAD = re.compile(
    rb'\{\s*+"id"\s*+:\s*+(?:' + _STR + rb"|" + _INT + rb')\s*+,\s*+"image"\s*+:\s*+' + _STR,
    re.DOTALL,
)


class _InvalidImage:
    """The type of INVALID_IMAGE; pickles by name, so it stays one object across processes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID_IMAGE"

    def __reduce__(self) -> str:
        return "INVALID_IMAGE"


# `RecordIndex.images[i]` of a record whose `image` is neither null, a string nor a non-empty
# list of strings (a number, an object, [], a list holding a non-string, ...).
INVALID_IMAGE = _InvalidImage()


@dataclass
class RecordIndex:
    """Where each record of a JSON array file lies, and the fields splitting needs.

    `offsets[i]`, `lengths[i]`: byte span of element i (from its `{` to its `}`).
    `ids[i]`: its `id` as a string, "" when the record has no string or integer `id`
    (missing, null, a float, a bool, ...); `id_was_int[i]`: whether the file had an integer.
    `images[i]`: its `image`: None for a text-only record (no `image`, or null), the str of
    a one-image record, a tuple of str for a JSON list of strings (a multi-image record), or
    INVALID_IMAGE for any other value.
    With digests (else None): `digests` (n, 16) uint8 digests (`record_digest`) of the canonical
    forms; `canonical_lengths[i]` their lengths; `is_canonical[i]` whether the raw bytes
    already are the canonical form.
    `file_size`: the size scanned, so that a file changed since is noticed.
    """

    path: Path
    offsets: np.ndarray
    lengths: np.ndarray
    ids: list[str]
    id_was_int: np.ndarray
    images: list[str | tuple[str, ...] | _InvalidImage | None]
    digests: np.ndarray | None = None
    canonical_lengths: np.ndarray | None = None
    is_canonical: np.ndarray | None = None
    file_size: int = -1

    def __len__(self) -> int:
        return len(self.ids)


def download_advice(path: str | Path) -> str:
    """How to get a good copy of the file `path`, a fetch output `downloads/<source>/<file>`.

    Deleting the file is needed: fetch outputs are `persist`, and a file that still matches
    its recorded size/sha256 is kept, so `dvc repro -f` alone would change nothing.
    """
    path = Path(path)
    pin = (
        "(a first download pins what it saw; `git log -p sources.yaml` shows it), set them "
        "back to null first, or the new download will be refused by the wrong pin"
    )
    if path.parent.parent.name == "downloads" and path.parent.name:
        source = path.parent.name
        return (
            f"to download source `{source}` again, delete downloads/{source}/{path.name} and "
            f"run `dvc repro fetch@{source}`; if sources.yaml's size/sha256 for `{source}` "
            f"were recorded from this very download {pin}"
        )
    return (
        f"to get a good copy, delete {path} and run again the stage that writes it (for a "
        f"download, `dvc repro fetch@<source>`); if sources.yaml's size/sha256 for that source "
        f"were recorded from this very download {pin}"
    )


def malformed(path: str | Path, offset: int, what: str) -> StageError:
    """The error for a file that is not well-formed JSON (truncated, unbalanced, ...)."""
    return StageError(
        f"{path}: {what} at byte {offset}; the file is truncated or corrupt: "
        f"{download_advice(path)}"
    )


def not_records(path: str | Path, offset: int, what: str) -> StageError:
    """The error for a well-formed file whose array holds something other than objects."""
    return StageError(
        f"{path}: not an array of records at byte {offset}: {what}; an annotation file is a "
        f"JSON array of objects, so check that sources.yaml names the right file; then "
        f"{download_advice(path)}"
    )


def canonical(raw: bytes) -> bytes:
    """The record `raw` as compact JSON (orjson), same key order, integer `id` as a string.

    Any other `id` (a float, null, ...) is written as it is."""
    obj = orjson.loads(raw)
    if type(obj) is not dict:
        raise ValueError("not a JSON object")
    if type(obj.get("id")) in (int, float):
        obj["id"] = _id_value(obj["id"], raw)
    return orjson.dumps(obj)


def _id_value(value: int | float, raw: bytes | memoryview) -> str | float:
    """An integer id as a string, a float id unchanged; orjson reads integers beyond 64 bits
    as floats, so the record is read again with `json` to tell them apart."""
    if type(value) is float:
        exact = json.loads(bytes(raw)).get("id")
        if type(exact) is not int:
            return value
        value = exact
    return str(value)


def _image_value(image: object) -> tuple[str, ...] | _InvalidImage:
    """The index entry of an `image` that is neither null nor a string."""
    if type(image) is list and image and all(type(item) is str for item in image):
        return tuple(image)
    return INVALID_IMAGE


def _element_kind(first: int) -> str:
    """What a JSON value starting with the byte `first` is, as a phrase."""
    char = chr(first)
    if char == '"':
        return "a string"
    if char in "-0123456789":
        return "a number"
    if char in "tf":
        return "a boolean"
    if char == "n":
        return "null"
    return "an array" if char == "[" else f"a value starting with {char!r}"


def _fields(obj: object, raw, path: Path, offset: int) -> tuple[str, bool, object]:
    """(id as string, id was an integer, image index entry) of a parsed record.

    The slow path of both readers: any record is accepted (an `id` that is not a string or
    an integer gives "", an unusual `image` a tuple or INVALID_IMAGE); only an element that
    is not an object is an error."""
    if type(obj) is not dict:
        kind = {str: "a string", list: "an array", bool: "a boolean", type(None): "null"}
        raise not_records(
            path, offset, f"an element that is {kind.get(type(obj), 'a number')}, not an object"
        )
    rid = obj.get("id")
    was_int = False
    if type(rid) is str:
        pass
    elif type(rid) in (int, float) and type(text := _id_value(rid, raw)) is str:
        obj["id"] = rid = text
        was_int = True
    else:
        rid = ""
    image = obj.get("image")
    if image is not None and type(image) is not str:
        image = _image_value(image)
    return rid, was_int, image


def _parse(raw, path: Path, offset: int) -> dict:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise malformed(path, offset, f"a record that is not valid JSON ({exc})") from None


class _Builder:
    """Accumulates the per-record results of the chunks of one file."""

    def __init__(self, path: Path, digests: bool):
        self.path = path
        self.want_digests = digests
        self.offsets: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.ids: list[str] = []
        self.images: list[object] = []
        self.int_rows: list[int] = []
        self.digests = bytearray()
        self.canonical_lengths: list[int] = []
        self.canonical_rows: list[int] = []

    def add(self, data: memoryview, base: int, starts: np.ndarray, ends: np.ndarray) -> None:
        """Record the elements data[starts[i]:ends[i]] (ends exclusive) found at `base`."""
        self.offsets.append(starts.astype(np.int64) + base)
        self.lengths.append((ends - starts).astype(np.int64))
        if self.want_digests:
            self._add_digested(data, base, starts.tolist(), ends.tolist())
        else:
            self._add_quick(data, base, starts.tolist(), ends.tolist())

    def _add_digested(self, mv: memoryview, base: int, starts: list[int], ends: list[int]):
        # The hot loop of a scan with digests: keep it lean.
        path, loads, dumps, hashed = self.path, orjson.loads, orjson.dumps, record_digest
        ids, images, digests = self.ids, self.images, self.digests
        canon_len = self.canonical_lengths.append
        row = len(ids)
        for s, e in zip(starts, ends, strict=True):
            raw = mv[s:e]
            try:
                obj = loads(raw)
                rid = obj["id"]
                image = obj.get("image")
            except (orjson.JSONDecodeError, KeyError):
                obj = _parse(raw, path, base + s)
                rid = image = None
            if type(rid) is not str or (image is not None and type(image) is not str):
                rid, was_int, image = _fields(obj, raw, path, base + s)
                if was_int:
                    self.int_rows.append(row)
            ids.append(rid)
            images.append(image)
            out = dumps(obj)
            digests += hashed(out)
            size = len(out)
            canon_len(size)
            if size == e - s and out == raw:
                self.canonical_rows.append(row)
            row += 1

    def _add_quick(self, data: memoryview, base: int, starts: list[int], ends: list[int]):
        # The hot loop of a scan without digests: id and image from the record's first bytes.
        match, loads, path = _HEAD.match, orjson.loads, self.path
        ids, images = self.ids, self.images
        row = len(ids)
        for s, e in zip(starts, ends, strict=True):
            m = match(data, s, e)
            if m is not None:
                sid, iid, img = m.groups()
                try:
                    if sid is None:
                        rid = str(int(iid))
                        self.int_rows.append(row)
                    else:
                        rid = loads(b'"' + sid + b'"') if b"\\" in sid else sid.decode()
                    image = loads(b'"' + img + b'"') if b"\\" in img else img.decode()
                except (UnicodeDecodeError, orjson.JSONDecodeError):
                    m = None
            if m is None:
                raw = data[s:e]
                rid, was_int, image = _fields(_parse(raw, path, base + s), raw, path, base + s)
                if was_int:
                    self.int_rows.append(row)
            ids.append(rid)
            images.append(image)
            row += 1

    def build(self, file_size: int) -> RecordIndex:
        n = len(self.ids)
        cat = np.concatenate if self.offsets else (lambda _: np.zeros(0, np.int64))
        was_int = np.zeros(n, np.bool_)
        was_int[np.array(sorted(set(self.int_rows)), dtype=np.int64)] = True
        index = RecordIndex(
            path=self.path,
            offsets=cat(self.offsets),
            lengths=cat(self.lengths),
            ids=self.ids,
            id_was_int=was_int,
            images=self.images,
            file_size=file_size,
        )
        if self.want_digests:
            index.digests = np.frombuffer(bytes(self.digests), np.uint8).reshape(n, DIGEST_SIZE)
            index.canonical_lengths = np.array(self.canonical_lengths, dtype=np.int64)
            index.is_canonical = np.zeros(n, np.bool_)
            index.is_canonical[np.array(self.canonical_rows, dtype=np.int64)] = True
        return index


class _Reader:
    """Reads a file into one reusable buffer; the unconsumed tail moves to the buffer's front.

    Reusing the buffer and the numpy work arrays avoids fresh allocations per chunk, whose
    page faults cost more than the scan itself.
    """

    def __init__(self, fh, capacity: int):
        self.fh = fh
        self.filled = 0  # valid bytes in buf
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self._alloc(max(capacity, 16))

    def _alloc(self, capacity: int) -> None:
        old = self.arr[: self.filled].copy() if self.filled else None
        self.buf = bytearray(capacity)
        self.arr = np.frombuffer(self.buf, np.uint8)
        self.mask = np.empty(capacity, np.bool_)
        self.work = np.empty(capacity, np.uint8)
        if old is not None:
            self.arr[: old.size] = old

    def fill(self) -> None:
        """Read until the buffer is full or the file ends."""
        with memoryview(self.buf) as view:
            while self.filled < len(self.buf) and not self.eof:
                got = self.fh.readinto(view[self.filled :])
                self.eof = not got
                self.filled += got or 0

    def consume(self, count: int) -> None:
        """Drop the first `count` bytes of the buffer."""
        rest = self.filled - count
        if rest:
            self.arr[:rest] = self.arr[count : self.filled]
        self.filled, self.base = rest, self.base + count

    def grow(self) -> None:
        self._alloc(2 * len(self.buf))


def _real_quotes(arr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Positions of the quotes in `arr` that are not escaped by an odd run of backslashes.

    `arr` must start outside any string, so that no backslash run crosses its start.
    `mask` is a work array of arr's size.
    """
    slashes = np.flatnonzero(np.equal(arr, _BACKSLASH, out=mask))
    np.equal(arr, _QUOTE, out=mask)
    if slashes.size:
        # the last backslash of each run; the run escapes the next byte if its length is odd
        last = np.flatnonzero(np.diff(slashes, append=arr.size + 1) != 1)
        first = np.concatenate(([0], last[:-1] + 1))
        odd = ((last - first) & 1) == 0
        escaped = slashes[last[odd]] + 1
        mask[escaped[escaped < arr.size]] = False
    return np.flatnonzero(mask)


def _brackets(arr: np.ndarray, quotes: np.ndarray, mask: np.ndarray, work: np.ndarray):
    """Positions of the `{}[]` in `arr` outside strings (an even number of quotes before)."""
    np.bitwise_or(arr, 0x20, out=work)  # [ -> {, ] -> }
    np.subtract(work, _OPEN_OBJ, out=work)  # { -> 0, } -> 2
    np.bitwise_and(work, 0xFD, out=work)  # 0 and 2 -> 0
    pos = np.flatnonzero(np.equal(work, 0, out=mask))
    return pos[(np.searchsorted(quotes, pos) & 1) == 0]


class _Chunk:
    """The brackets outside strings of a buffer that starts in the array, between elements."""

    def __init__(self, reader: _Reader):
        n = reader.filled
        arr = reader.arr[:n]
        quotes = _real_quotes(arr, reader.mask[:n])
        self.pos = _brackets(arr, quotes, reader.mask[:n], reader.work[:n])
        self.kind = arr[self.pos]
        self.opener = (self.kind & 0x02) != 0
        step = np.where(self.opener, np.int32(1), np.int32(-1))
        self.depth = np.cumsum(step, dtype=np.int32) + 1  # depth after each bracket


def _check_pairs(path: Path, base: int, kind, opener, depth, pos) -> None:
    """Every closing bracket matches its opening one (brackets of complete elements only)."""
    if kind.size == 0:
        return
    level = np.where(opener, depth, depth + 1)
    if int(level.max()) > 30000:
        raise malformed(path, base + int(pos[int(np.argmax(level))]), "nesting deeper than 30000")
    order = np.argsort(level.astype(np.int16), kind="stable")  # radix sort; keeps file order
    ordered = kind[order]
    bad = np.flatnonzero(ordered[1::2].astype(np.int16) - ordered[0::2] != 2)
    if bad.size:
        closers = order[1::2][bad]
        j = int(closers[np.argmin(pos[closers])])
        raise malformed(path, base + int(pos[j]), f"a `{chr(kind[j])}` that does not match")


def _check_gaps(
    path: Path, base: int, arr: np.ndarray, starts, ends, has_prev: bool, close: int | None
) -> None:
    """Between elements only whitespace and exactly one comma; none before `]` or the first."""
    gap_hi = np.concatenate((starts, [close])) if close is not None else starts
    gap_lo = np.concatenate(([0], ends))[: gap_hi.size]
    sizes = gap_hi - gap_lo
    want = np.ones(sizes.size, np.int64)
    want[0] = int(has_prev)
    if close is not None:
        want[-1] = 0
    total = int(sizes.sum())
    idx = np.repeat(gap_lo - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes)
    idx += np.arange(total)
    gap = arr[idx]
    comma = gap == _COMMA
    blank = comma | (gap == 0x20) | (gap == 0x0A) | (gap == 0x0D) | (gap == 0x09)
    if not blank.all():
        where = int(idx[np.argmin(blank)])
        char = chr(arr[where])
        if char in '"-0123456789tfn':
            kind = _element_kind(arr[where])
            raise not_records(path, base + where, f"an element that is {kind}, not an object")
        shown = repr(char) if 0x20 < arr[where] < 0x7F else f"byte 0x{arr[where]:02x}"
        raise malformed(path, base + where, f"an unexpected {shown} between records")
    gap_of = np.repeat(np.arange(sizes.size), sizes)
    commas = np.bincount(gap_of[comma], minlength=sizes.size)
    bad = np.flatnonzero(commas != want)
    if bad.size:
        i = int(bad[0])
        if commas[i] < want[i]:
            raise malformed(path, base + int(gap_hi[i]), "a missing `,` between records")
        extra = idx[comma & (gap_of == i)][want[i]]
        raise malformed(path, base + int(extra), "an extra `,`")


def _process(path: Path, builder: _Builder, reader: _Reader, has_prev: bool):
    """Index the complete elements in the reader's buffer, which starts between elements.

    Returns the buffer position of the closing `]` (None if not in the buffer) and the number
    of bytes consumed (up to the end of the last complete element).
    """
    ch, base = _Chunk(reader), reader.base
    kind, opener, depth, pos = ch.kind, ch.opener, ch.depth, ch.pos
    top = np.flatnonzero(depth == 0)
    close = None
    if top.size:
        cut = int(top[0])
        close = int(pos[cut])
        if kind[cut] != _CLOSE_ARR:
            raise malformed(path, base + close, "a `}` that closes the top-level array")
        kind, opener, depth, pos = kind[:cut], opener[:cut], depth[:cut], pos[:cut]
    first = np.flatnonzero(opener & (depth == 2))
    last = np.flatnonzero(~opener & (depth == 1))
    if first.size and kind[first].min() != _OPEN_OBJ:
        where = int(pos[first[np.argmin(kind[first] == _OPEN_OBJ)]])
        raise not_records(path, base + where, "an element that is an array, not an object")
    complete = int(last[-1]) + 1 if last.size else 0
    _check_pairs(path, base, kind[:complete], opener[:complete], depth[:complete], pos[:complete])
    if close is None and not last.size:
        return None, 0
    starts = pos[first[: last.size]]
    ends = pos[last] + 1
    _check_gaps(path, base, reader.arr[: reader.filled], starts, ends, has_prev, close)
    if not last.size:
        return close, 0
    with memoryview(reader.buf) as view:
        builder.add(view, base, starts, ends)
    return close, int(ends[-1])


def _skip_to_array(path: Path, reader: _Reader, size: int) -> None:
    """Consume an optional BOM, whitespace and the opening `[`."""
    reader.fill()
    if bytes(reader.buf[: len(_BOM)]) == _BOM and reader.filled >= len(_BOM):
        reader.consume(len(_BOM))
    while True:
        head = bytes(reader.buf[: reader.filled])
        body = head.lstrip(_WHITESPACE)
        reader.consume(len(head) - len(body))
        if body:
            break
        reader.fill()
        if reader.eof and not reader.filled:
            raise malformed(path, size, "an empty file instead of a JSON array")
    if body[:1] != b"[":
        raise malformed(path, reader.base, f"{body[:1].decode('latin-1')!r} instead of `[`")
    reader.consume(1)


def _check_trailing(path: Path, reader: _Reader, close: int) -> None:
    """Only whitespace may follow the closing `]` (at buffer position `close`)."""
    reader.consume(close + 1)
    while reader.filled:
        rest = bytes(reader.buf[: reader.filled])
        extra = rest.lstrip(_WHITESPACE)
        if extra:
            where = reader.base + len(rest) - len(extra)
            raise malformed(path, where, "data after the end of the array")
        reader.consume(reader.filled)
        reader.fill()


def scan(path: str | Path, *, digests: bool = False, chunk_size: int = CHUNK_SIZE) -> RecordIndex:
    """Index the records of the JSON array file `path` (see the module docstring).

    `chunk_size` bytes are read at a time; a record longer than that is read whole.
    """
    path = Path(path)
    builder = _Builder(path, digests)
    with _gc_paused(), open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        reader = _Reader(fh, chunk_size)
        _skip_to_array(path, reader, size)
        has_prev, last_end = False, reader.base
        while True:
            reader.fill()
            close, consumed = _process(path, builder, reader, has_prev)
            if close is not None:
                _check_trailing(path, reader, close)
                break
            if consumed:
                has_prev, last_end = True, reader.base + consumed
                reader.consume(consumed)
            elif reader.eof:
                raise malformed(
                    path,
                    size,
                    f"a truncated file: it ends inside the array (the last complete record ends at "
                    f"byte {last_end})",
                )
            else:
                reader.grow()
    return builder.build(size)


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection: the loops free every container they make at once, and
    the collector's passes over the growing id lists would cost about 15 % of a scan."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _scan_job(path: Path, kwargs: dict) -> RecordIndex:
    return scan(path, **kwargs)


def scan_many(
    paths: Sequence[str | Path],
    *,
    digests: bool = False,
    workers: int = 2,
    chunk_size: int = CHUNK_SIZE,
) -> list[RecordIndex]:
    """`scan` several files, results in input order, using up to `workers` processes.

    This process scans the largest file; the others go to `workers - 1` fresh (spawned)
    processes, so a script calling this needs the `if __name__ == "__main__":` guard.
    """
    paths = [Path(p) for p in paths]
    kwargs = [{"digests": digests, "chunk_size": chunk_size}] * len(paths)
    if workers <= 1 or len(paths) <= 1:
        return [scan(p, **kw) for p, kw in zip(paths, kwargs, strict=True)]
    biggest = max(range(len(paths)), key=lambda i: (paths[i].stat().st_size, -i))
    others = [i for i in range(len(paths)) if i != biggest]
    out: list[RecordIndex | None] = [None] * len(paths)
    with ProcessPoolExecutor(min(workers - 1, len(others)), mp_context=get_context("spawn")) as ex:
        futures = {i: ex.submit(_scan_job, paths[i], kwargs[i]) for i in others}
        out[biggest] = scan(paths[biggest], **kwargs[biggest])
        for i, fut in futures.items():
            out[i] = fut.result()
    return out  # type: ignore[return-value]


class _SpanReader:
    """Reads the raw bytes of records into one reusable buffer, nearby ones with one call."""

    def __init__(self, path: Path, offsets: np.ndarray, lengths: np.ndarray):
        self.path = path
        self.offsets, self.lengths = offsets, lengths
        self.fd = os.open(path, os.O_RDONLY)
        self.buf = bytearray(0)

    def close(self) -> None:
        os.close(self.fd)

    def read(self, rows: np.ndarray) -> list[memoryview]:
        """Views of the records `rows` (any order, repeats allowed), valid until the next
        call."""
        starts, lengths = self.offsets[rows], self.lengths[rows]
        by_start = np.argsort(starts, kind="stable")
        lo = starts[by_start]
        reach = np.maximum.accumulate(lo + lengths[by_start])  # ranges may overlap
        split = np.flatnonzero(lo[1:] - reach[:-1] > READ_GAP) + 1
        first = np.concatenate(([0], split))
        last = np.concatenate((split, [lo.size])) - 1
        block_start, block_size = lo[first], reach[last] - lo[first]
        at = np.concatenate(([0], np.cumsum(block_size)[:-1]))
        total = int(block_size.sum())
        if len(self.buf) < total:
            self.buf = bytearray(max(total, 2 * len(self.buf)))
        view = memoryview(self.buf)
        for start, size, pos in zip(
            block_start.tolist(), block_size.tolist(), at.tolist(), strict=True
        ):
            got = os.preadv(self.fd, [view[pos : pos + size]], start)
            if got != size:
                raise malformed(self.path, start + got, "a file shorter than when it was scanned")
        where = np.empty_like(lo)
        where[by_start] = lo - np.repeat(block_start - at, last - first + 1)
        return [view[p : p + n] for p, n in zip(where.tolist(), lengths.tolist(), strict=True)]


def _record(raw: memoryview, reader: _SpanReader, row: int) -> dict:
    """The parsed record `row`, integer id as a string; a StageError naming it if it is not
    a JSON object."""
    try:
        obj = orjson.loads(raw)
        if type(obj) is not dict:
            raise ValueError("not a JSON object")
        if type(obj.get("id")) in (int, float):
            obj["id"] = _id_value(obj["id"], raw)
        return obj
    except (orjson.JSONDecodeError, ValueError) as exc:
        where = int(reader.offsets[row])
        raise malformed(reader.path, where, f"a record that is not valid JSON ({exc})") from None


def _write_part(job: dict) -> int:
    """Write the records `job["order"]` at offset `job["at"]` of the output; return the end.

    Records are read and written a batch of about WRITE_BATCH_BYTES at a time, the batch's
    canonical forms joined with one call: one write call per record cost as much as
    re-serialising it.
    """
    order, first, transform = job["order"], job["first"], job["transform"]
    is_canon, expected = job["is_canonical"], job["canonical_lengths"]
    if transform is not None:
        is_canon = expected = None
    reader = _SpanReader(job["src"], job["offsets"], job["lengths"])
    part_fds = [os.open(p, os.O_WRONLY) for p in job.get("part_files", ())]
    loads, dumps = orjson.loads, orjson.dumps
    try:
        with open(job["out"], "r+b", buffering=WRITE_BUFFER) as out:
            out.seek(job["at"])
            batch_of = np.cumsum(job["lengths"][order]) // WRITE_BATCH_BYTES
            bounds = np.concatenate(([0], np.flatnonzero(np.diff(batch_of)) + 1, [order.size]))
            for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                batch = order[lo:hi]
                if batch.size == 0:
                    continue
                raws = reader.read(batch)
                rows = batch.tolist()
                canon = [False] * len(rows) if is_canon is None else is_canon[batch].tolist()
                lengths = None if expected is None else expected[batch].tolist()
                pieces = []
                add = pieces.append
                for k, (row, raw) in enumerate(zip(rows, raws, strict=True)):
                    if canon[k]:
                        add(raw)
                        continue
                    try:  # the canonical form inline: this loop runs once per output record
                        obj = loads(raw)
                        rid = obj.get("id")
                        if type(rid) is int:
                            obj["id"] = str(rid)
                        elif type(rid) is float:
                            raise ValueError
                    except (orjson.JSONDecodeError, AttributeError, ValueError):
                        obj = _record(raw, reader, row)
                    text = dumps(obj if transform is None else transform(obj))
                    if lengths is not None and len(text) != lengths[k]:
                        where = int(job["offsets"][row])
                        raise StageError(
                            f"{job['src']}: the record at byte {where} changed since the file "
                            f"was scanned; run the stage again"
                        )
                    add(text)
                if not first:
                    out.write(SEPARATOR)
                first = False
                out.write(SEPARATOR.join(pieces))
                if part_fds:
                    _write_to_parts(job, lo, hi, pieces, part_fds)
                del raws, pieces
            return out.tell()
    finally:
        reader.close()
        for fd in part_fds:
            os.close(fd)


def _write_to_parts(job: dict, lo: int, hi: int, pieces: list, fds: list[int]) -> None:
    """The batch `lo:hi` of this job's records, each to its part file. Within a batch the
    records of one part are consecutive in its file: one write per part and batch."""
    labels = job["part_labels"][lo:hi]
    for label in np.unique(labels).tolist():
        ks = np.flatnonzero(labels == label)
        first = int(ks[0]) + lo
        data = SEPARATOR.join([pieces[k] for k in ks.tolist()])
        at = int(job["part_starts"][first])
        if not job["part_first"][first]:
            data, at = SEPARATOR + data, at - len(SEPARATOR)
        os.pwrite(fds[label], data, at)


def _write_parsed(
    index: RecordIndex,
    order: np.ndarray,
    tmp: Path,
    fd: int,
    workers: int,
    transform,
    at: int = 2,
    leading: bool = True,
    parts: dict | None = None,
) -> int:
    """Write the records `order` from byte `at` on by re-serialising them from the source;
    return the end. `leading`: the first of them opens the array (no separator before it).
    `parts` (see `write_segments`): also write each record to its part file, the arrays
    given aligned with `order`.

    With the canonical lengths known (and no transform), the output is split by size into
    `workers` stretches written by that many processes at their own offsets."""
    job = {
        "src": Path(index.path),
        "offsets": index.offsets,
        "lengths": index.lengths,
        "is_canonical": index.is_canonical,
        "canonical_lengths": index.canonical_lengths,
        "out": tmp,
        "transform": transform,
    }
    stretches = [(0, order.size, at)]
    total = None
    lead = len(SEPARATOR) if leading else 0  # the separator the first record goes without
    if index.canonical_lengths is not None and transform is None:
        sizes = np.cumsum(index.canonical_lengths[order] + len(SEPARATOR))
        total = at + int(sizes[-1]) - lead  # the end of the last record
        if workers > 1 and order.size >= 2 * workers:
            cuts = np.searchsorted(sizes, sizes[-1] * np.arange(1, workers) / workers) + 1
            edges = [0, *sorted(set(np.clip(cuts, 1, order.size - 1).tolist())), order.size]
            stretches = [
                (a, b, at + (int(sizes[a - 1]) - lead if a else 0))
                for a, b in zip(edges[:-1], edges[1:], strict=True)
            ]
        os.ftruncate(fd, total)
    jobs = [
        {**job, "order": order[a:b], "at": start, "first": leading and a == 0}
        for a, b, start in stretches
    ]
    if parts is not None:
        for j, (a, b, _) in zip(jobs, stretches, strict=True):
            j["part_files"] = parts["files"]
            j.update({k: parts[k][a:b] for k in ("part_labels", "part_starts", "part_first")})
    if len(jobs) == 1:
        end = _write_part(jobs[0])
    else:
        with ProcessPoolExecutor(len(jobs) - 1, mp_context=get_context("spawn")) as ex:
            futures = [ex.submit(_write_part, j) for j in jobs[1:]]
            _write_part(jobs[0])
            end = [f.result() for f in futures][-1]
    if total is not None and end != total:
        raise StageError(f"{index.path}: wrote {end} bytes, expected {total}; run again")
    return end


def write_array(
    index: RecordIndex,
    order: Sequence[int] | np.ndarray,
    out_path: str | Path,
    *,
    workers: int = 1,
    transform: Callable[[dict], dict] | None = None,
) -> int:
    """Write the records `index[order[i]]` in canonical form as a JSON array; return the count.

    The output is `[` newline, the records joined by `,` newline, then newline `]` newline
    (`[` newline `]` newline when empty); it appears atomically. `order` may repeat indices,
    in any order. Records are read from the source in batches of about WRITE_BATCH_BYTES
    (nearby ones with one read) and re-serialised, except those the scan found already
    canonical, which are copied. With `workers` > 1 and an index scanned with digests (so
    that every record's output position is known), that many processes each write one
    stretch of the output (a script calling this then needs the `__main__` guard).
    `transform`, if given, maps each parsed record (its id already a string) to the record
    to write; it disables those shortcuts and runs in this process.
    """
    return write_segments([(index, order)], out_path, workers=workers, transform=transform)


def write_segments(
    segments: Sequence[tuple[RecordIndex, Sequence[int] | np.ndarray]],
    out_path: str | Path,
    *,
    workers: int = 1,
    transform: Callable[[dict], dict] | None = None,
    parts: tuple[Sequence[int] | np.ndarray, Sequence[str | Path]] | None = None,
) -> int:
    """`write_array` of several indexed files into one array: the records of each
    (index, order) segment in turn; return the count.

    `parts` = (labels, dests): also write each record into one more array, `dests[label]`,
    `labels` giving the label of every written record in output order. Each dest then
    holds its records in output order, in the same format; the records are serialised once
    and the part files written by the same processes, at offsets known from the canonical
    lengths (so this needs indexes scanned with digests and no transform).
    """
    checked = []
    for index, order in segments:
        order = np.asarray(order, dtype=np.int64).reshape(-1)
        n = len(index)
        if order.size and (int(order.min()) < 0 or int(order.max()) >= n):
            raise ValueError(f"order holds indices outside 0..{n - 1}")
        src = Path(index.path)
        if index.file_size >= 0 and src.stat().st_size != index.file_size:
            raise StageError(f"{src}: changed since it was scanned; run the stage again")
        if order.size:
            checked.append((index, order))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out_path))
        layout = None
        if parts is not None:
            labels, dests = np.asarray(parts[0], dtype=np.int64), list(parts[1])
            if transform is not None or any(i.canonical_lengths is None for i, _ in checked):
                raise ValueError("part files need canonical lengths (digests) and no transform")
            lengths = np.concatenate([i.canonical_lengths[o] for i, o in checked] or [[]])
            if labels.shape != lengths.shape:
                raise ValueError(f"{labels.size} labels for {lengths.size} records")
            files = [stack.enter_context(atomic_path(d)) for d in dests]
            layout = _part_layout(labels, lengths.astype(np.int64), files)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.pwrite(fd, b"[\n", 0)
            end, done = 2, 0
            for k, (index, order) in enumerate(checked):
                span = None
                if layout is not None:
                    span = {**layout}
                    for key in ("part_labels", "part_starts", "part_first"):
                        span[key] = layout[key][done : done + order.size]
                end = _write_parsed(index, order, tmp, fd, workers, transform, end, k == 0, span)
                done += order.size
            os.pwrite(fd, b"\n]\n" if checked else b"]\n", end)
        finally:
            os.close(fd)
    return sum(int(order.size) for _, order in checked)


def _part_layout(labels: np.ndarray, lengths: np.ndarray, files: list[Path]) -> dict:
    """Where each record goes in its part file; the part files created at their final size,
    with their brackets."""
    if labels.size and (labels.min() < 0 or labels.max() >= len(files)):
        raise ValueError(f"labels must lie in 0..{len(files) - 1}")
    sep = len(SEPARATOR)
    starts = np.zeros(labels.size, dtype=np.int64)
    first = np.zeros(labels.size, dtype=bool)
    for label, path in enumerate(files):
        rows = np.flatnonzero(labels == label)
        sizes = lengths[rows] + sep
        starts[rows] = 2 + np.concatenate(([0], np.cumsum(sizes)[:-1])) if rows.size else 0
        if rows.size:
            first[rows[0]] = True
        end = 2 + int(sizes.sum()) - sep if rows.size else 2
        with open(path, "wb") as fh:
            fh.write(b"[\n")
            fh.truncate(end)
            fh.seek(end)
            fh.write(b"\n]\n" if rows.size else b"]\n")
    return {"files": files, "part_labels": labels, "part_starts": starts, "part_first": first}


def iter_records(index: RecordIndex, order):
    """(record number, parsed record) in `order`, read from the index's file."""
    with open(index.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for n in order:
            start = int(index.offsets[n])
            yield n, orjson.loads(mm[start : start + int(index.lengths[n])])
