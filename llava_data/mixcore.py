"""Pure functions that split, compare and re-mix an indexed annotation file (no I/O).

They work on what `llava_data.jsonscan.scan` returns: the `image` of every record (None, a path,
a tuple of paths or INVALID_IMAGE), and the (n, 16) uint8 digests of their canonical forms.

- `assign_components`: the component of each record, by the longest matching image prefix.
- `compare`: how many records two digest lists share, counting repeats (multisets).
- `validate_weights`: the mixture weights of the params, checked before any I/O.
- `multiplicity`: how many times each record is emitted for given weights and seed. A
  weight w = k + f emits every record of its component k times, plus once more when
  u < f, where u in [0, 1) is a hash of (seed, record digest): the draw belongs to the
  record, not to its position or to the other components, so a larger f keeps a superset.
- `emission_order`: the output order for those multiplicities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from numbers import Real

import numpy as np

from llava_data.common import StageError
from llava_data.jsonscan import INVALID_IMAGE

EXAMPLES_PER_FOLDER = 3
MAX_WEIGHT = 100  # a larger weight is surely a typo: 100 x 1M records is 160 GB of JSON


class UnknownPrefixError(StageError):
    """Some records' images lie under a folder that no configured prefix covers."""


def assign_components(
    images: Sequence[object],
    prefixes: Mapping[str, str],
    text_only: str,
    *,
    ids: Sequence[str] | None = None,
) -> np.ndarray:
    """The component name of each record (an object array of the names, one per record).

    `prefixes` maps an image-path prefix to a component; the longest matching prefix wins.
    A multi-image record (a tuple of paths, as `scan` gives it) is assigned by its FIRST
    image's prefix. Records without an image go to `text_only`, and so do records whose
    `image` is INVALID_IMAGE (validation then drops or reports them: image_field_invalid).
    Images no prefix matches raise
    UnknownPrefixError listing each unknown leading folder, its count and up to
    EXAMPLES_PER_FOLDER examples (record index, id when `ids` is given, image).
    """
    for prefix, name in prefixes.items():
        if not isinstance(prefix, str) or not prefix or not isinstance(name, str) or not name:
            raise StageError(f"image prefix {prefix!r} -> {name!r}: both must be non-empty text")
    by_length = sorted(prefixes, key=lambda p: (-len(p), p))
    # For each leading folder, the prefixes that can match an image under it, longest first;
    # when the longest is the folder itself (or shorter), every image under it matches.
    plans: dict[str, tuple[list[str], str | None]] = {}
    out: list[str | None] = [text_only] * len(images)
    unknown: dict[str, list[int]] = {}
    for i, image in enumerate(images):
        if image is None:
            continue
        try:
            head, slash, _ = image.partition("/")
        except AttributeError:  # off the common path: only unusual records get here
            if image is INVALID_IMAGE:
                continue
            if type(image) is not tuple or not image or type(image[0]) is not str:
                raise TypeError(f"record {i}: image {image!r} is not a path") from None
            image = image[0]
            head, slash, _ = image.partition("/")
        folder = head + slash
        plan = plans.get(folder)
        if plan is None:
            deeper = [p for p in by_length if len(p) > len(folder) and p.startswith(folder)]
            covering = next((p for p in by_length if folder.startswith(p)), None)
            plan = plans[folder] = (deeper, None if covering is None else prefixes[covering])
        deeper, fallback = plan
        name = fallback
        for p in deeper:
            if image.startswith(p):
                name = prefixes[p]
                break
        if name is None:
            unknown.setdefault(folder, []).append(i)
        out[i] = name
    if unknown:
        raise UnknownPrefixError(_unknown_message(unknown, images, ids, prefixes))
    names = np.empty(len(out), dtype=object)
    names[:] = out
    return names


def _unknown_message(
    unknown: dict[str, list[int]],
    images: Sequence[str | None],
    ids: Sequence[str] | None,
    prefixes: Mapping[str, str],
) -> str:
    total = sum(len(v) for v in unknown.values())
    lines = [
        f"{total} records have an image under a folder no prefix covers "
        f"(known prefixes: {', '.join(sorted(prefixes))}); add the prefix to the component "
        f"map or check the annotation file:"
    ]
    for folder in sorted(unknown):
        rows = unknown[folder]
        examples = "; ".join(
            f"record {i}" + ("" if ids is None else f" (id {ids[i]!r})") + f": {images[i]!r}"
            for i in rows[:EXAMPLES_PER_FOLDER]
        )
        lines.append(f"  {folder}: {len(rows)} records, e.g. {examples}")
    return "\n".join(lines)


def compare(mix_digests: np.ndarray, upstream_digests: np.ndarray) -> dict[str, int]:
    """Multiset comparison of two (n, k) uint8 digest arrays.

    A digest found a times in the mix and b times upstream counts min(a, b) identical,
    a - min(a, b) only in the mix and b - min(a, b) only upstream.
    """
    mix, up = _rows(mix_digests), _rows(upstream_digests)
    if len(mix) and len(up) and mix.shape[1] != up.shape[1]:
        raise ValueError(f"digest widths differ: {mix.shape} vs {up.shape}")
    if not len(mix) or not len(up):
        return {"identical": 0, "only_in_mix": len(mix), "only_in_upstream": len(up)}
    keys = _sort_keys(np.concatenate([mix, up]))
    # Sort by the first 8 bytes; equal digests are then adjacent unless two different
    # digests share those bytes and interleave, which is checked (then: a full sort).
    order = np.argsort(keys[0], kind="stable")
    ordered = [k[order] for k in keys]
    same_head = ordered[0][1:] == ordered[0][:-1]
    if len(ordered) > 1 and np.any(same_head & np.any([k[1:] < k[:-1] for k in ordered[1:]], 0)):
        order = np.lexsort(keys[::-1])
        ordered = [k[order] for k in keys]
    new = np.ones(order.size, np.bool_)
    new[1:] = np.any([k[1:] != k[:-1] for k in ordered], axis=0)
    group = np.cumsum(new) - 1
    from_mix = order < len(mix)
    n_groups = int(group[-1]) + 1
    in_mix = np.bincount(group[from_mix], minlength=n_groups)
    in_up = np.bincount(group[~from_mix], minlength=n_groups)
    identical = int(np.minimum(in_mix, in_up).sum())
    return {
        "identical": identical,
        "only_in_mix": len(mix) - identical,
        "only_in_upstream": len(up) - identical,
    }


def _rows(digests: np.ndarray) -> np.ndarray:
    arr = np.asarray(digests, dtype=np.uint8)
    if arr.ndim != 2:
        raise ValueError(f"digests must be a 2-D array of bytes, got shape {arr.shape}")
    return arr


def _sort_keys(digests: np.ndarray) -> list[np.ndarray]:
    """The digests as big-endian uint64 columns (most significant first), zero-padded."""
    width = digests.shape[1]
    padded = np.zeros((digests.shape[0], max(1, -(-width // 8)) * 8), np.uint8)
    padded[:, :width] = digests
    cols = padded.view(">u8")
    return [cols[:, j].astype(np.uint64) for j in range(cols.shape[1])]


def validate_weights(
    raw: object, components: Sequence[str], section: str = "mix"
) -> dict[str, float]:
    """The mixture weights `raw` (params `section`), checked; every problem is a StageError.

    Refused: a value that is not a plain number (bools and strings like "0.5" included),
    NaN or infinite, negative or above MAX_WEIGHT; a name that is not a component; a
    component left out.
    """
    known = sorted(set(components))
    if not isinstance(raw, Mapping):
        raise StageError(f"{section}: expected a mapping of component -> weight, got {raw!r}")
    problems = []
    for name in sorted(raw, key=str):
        value = raw[name]
        key = f"{section}.{name}"
        if name not in known:
            problems.append(f"{key}: unknown component (known: {', '.join(known)})")
        elif isinstance(value, bool) or not isinstance(value, Real):
            problems.append(f"{key}: weight {value!r} is not a number (write e.g. 0.5 or 2)")
        elif not math.isfinite(float(value)):
            problems.append(f"{key}: weight {value!r} is not finite")
        elif value < 0:
            problems.append(f"{key}: weight {value!r} is negative")
        elif value > MAX_WEIGHT:
            problems.append(f"{key}: weight {value!r} is above the maximum {MAX_WEIGHT}")
    for name in known:
        if name not in raw:
            problems.append(f"{section}.{name}: missing (give every part a weight; 0 drops it)")
    if problems:
        raise StageError("invalid mixture weights in params:\n  " + "\n  ".join(problems))
    return {name: float(raw[name]) for name in known}


def draws(digests: np.ndarray, seed: int) -> np.ndarray:
    """u in [0, 1) for each digest: blake2b(seed as 8 bytes LE + digest, 8 bytes) / 2**64.

    The 64-bit hash (little-endian) keeps its top 53 bits so that u is exact and below 1.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise StageError(f"mix seed {seed!r}: expected an integer in [0, 2**64)")
    rows = _rows(digests)
    width = rows.shape[1]
    flat = np.ascontiguousarray(rows).tobytes()
    base = blake2b(seed.to_bytes(8, "little"), digest_size=8)
    out = bytearray()
    for start in range(0, len(flat), width):  # ~0.6 us a record
        h = base.copy()
        h.update(flat[start : start + width])
        out += h.digest()
    hashed = np.frombuffer(bytes(out), dtype="<u8")
    return (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def multiplicity(
    components: Sequence[str] | np.ndarray,
    digests: np.ndarray,
    weights: Mapping[str, float],
    seed: int,
) -> np.ndarray:
    """How many times each record is emitted (int64), see the module docstring."""
    n = len(components)
    if np.asarray(digests).shape[0] != n:
        raise ValueError(f"{n} components but {np.asarray(digests).shape[0]} digests")
    missing = sorted(set(components) - set(weights))
    if missing:
        raise StageError(f"no mixture weight for component(s) {', '.join(missing)}")
    w = np.fromiter((weights[c] for c in components), dtype=np.float64, count=n)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w > MAX_WEIGHT):
        raise StageError(f"mixture weights must be numbers from 0 to {MAX_WEIGHT}")
    whole = np.floor(w)
    frac = w - whole
    mult = whole.astype(np.int64)
    partial = np.flatnonzero(frac > 0)
    if partial.size:
        u = draws(np.asarray(digests)[partial], seed)
        mult[partial] += u < frac[partial]
    return mult


def emission_order(mult: Sequence[int] | np.ndarray) -> np.ndarray:
    """Pass p = 0, 1, ... lists in file order the records whose multiplicity exceeds p."""
    mult = np.asarray(mult, dtype=np.int64).reshape(-1)
    if mult.size and int(mult.min()) < 0:
        raise ValueError("multiplicities must be non-negative")
    top = int(mult.max()) if mult.size else 0
    passes = [np.flatnonzero(mult > p) for p in range(top)]
    return np.concatenate(passes).astype(np.int64) if passes else np.zeros(0, np.int64)


# ---- LLaVA-NeXT sampling strategies ----------------------------------------------------

STRATEGIES = ("all", "first", "end", "random")


def parse_strategy(text: object, where: str = "sampling_strategy") -> tuple[str, int | None, bool]:
    """(kind, N, N is a percentage) of a LLaVA-NeXT `sampling_strategy`, checked.

    `all`, `first:N`, `end:N` or `random:N`, N a count or an integer percentage `P%`,
    as LLaVA-NeXT's train.py reads them. `end:0` is refused: there it takes every record
    (`records[-0:]`), surely not what was meant.
    """
    if not isinstance(text, str):
        raise StageError(f"{where}: {text!r} is not a strategy (all, first:N, end:N, random:N)")
    kind, colon, number = text.partition(":")
    if kind not in STRATEGIES or (kind == "all") == bool(colon):
        raise StageError(
            f"{where}: {text!r} is not one of all, first:N, end:N, random:N (N a count or P%)"
        )
    if kind == "all":
        return kind, None, False
    percent = number.endswith("%")
    digits = number[:-1] if percent else number
    if not digits.isdigit() or (percent and int(digits) > 100):
        raise StageError(f"{where}: {text!r}: N must be a whole count, or a percentage 0% to 100%")
    if kind == "end" and int(digits) == 0:
        raise StageError(f"{where}: {text!r} would take every record in LLaVA-NeXT; use 0 weight")
    return kind, int(digits), percent


def sample(strategy: str, digests: np.ndarray, seed: int, where: str = "sampling_strategy"):
    """The record numbers (in file order) a strategy keeps of records with these digests.

    Counts follow LLaVA-NeXT (`P%` keeps ceil(P * n / 100)); `first` and `end` take the
    leading or trailing records; `random` keeps those with the smallest draws of
    (seed, record digest) (see `draws`), where LLaVA-NeXT shuffles with no seed: the same
    records on every machine, and those of random:30% are among those of random:50%.
    """
    kind, number, percent = parse_strategy(strategy, where)
    n = len(digests)
    if kind == "all":
        return np.arange(n, dtype=np.int64)
    keep = min(n, math.ceil(number * n / 100) if percent else number)
    if kind == "first":
        return np.arange(keep, dtype=np.int64)
    if kind == "end":
        return np.arange(n - keep, n, dtype=np.int64)
    u = draws(digests, seed) if n else np.zeros(0)
    chosen = np.lexsort((np.arange(n), u))[:keep]  # by draw, ties by position
    return np.sort(chosen).astype(np.int64)
