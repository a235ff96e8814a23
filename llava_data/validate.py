"""Checks a training record must pass: its image exists and opens, its turns are well formed.

Pure checks over records and image paths, shared by the stages that write
training files (`prepare`, `mix`). Image checks read each file's header (and a
little of its tail, to catch truncated JPEG/PNG/GIF files) rather than decoding
every pixel, unless asked to decode.

A record's `image` is one path (a string) or, in a multi-image record (as in
LLaVA-NeXT-Interleave and LLaVA-OneVision data), a non-empty list of paths; every
listed image is checked, and the record's `<image>` tokens must number as many.
"""

from __future__ import annotations

import itertools
import os
import unicodedata
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from llava_data.common import StageError

IMAGE_TOKEN = "<image>"
POLICIES = ("drop", "keep", "fail")
# Every reason a record can be reported for, in report order.
REASONS = (
    "image_missing",
    "image_unreadable",
    "image_truncated",
    "image_undecodable",
    "image_path_outside_layout",
    "no_conversations",
    "turns_not_alternating",
    "image_token_count",
    "image_token_in_text_only",
    "image_field_invalid",
    "id_invalid",
    "image_name_unicode_form",
)
TAIL = 1024
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND", "GIF": b";"}


@dataclass(frozen=True)
class ValidationParams:
    """`validate.*` of params.yaml, checked before any I/O."""

    policy: str
    decode: bool
    jobs: int

    @classmethod
    def parse(cls, raw: dict) -> ValidationParams:
        if not isinstance(raw, dict):
            raise StageError("params.yaml: `validate` must be a mapping")
        policy = raw.get("policy")
        if policy not in POLICIES:
            raise StageError(
                f"params.yaml: validate.policy must be one of {POLICIES}, got {policy!r}"
            )
        decode = raw.get("decode", False)
        if not isinstance(decode, bool):
            raise StageError(f"params.yaml: validate.decode must be true or false, got {decode!r}")
        jobs = raw.get("jobs", 2)
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise StageError(
                f"params.yaml: validate.jobs must be a whole number >= 1, got {jobs!r}"
            )
        return cls(policy, decode, jobs)


def record_images(record: dict) -> list[str] | None:
    """The image paths a record names ([] for a text-only record), None if its `image` is
    neither a string nor a non-empty list of strings."""
    if "image" not in record:
        return []
    image = record["image"]
    if type(image) is str:
        return [image]
    if type(image) is list and image and all(type(item) is str for item in image):
        return image
    return None


def id_is_valid(rid: object) -> bool:
    """True if a record's `id` can become a string id: a string or an integer.

    orjson reads integers beyond 64 bits as floats (which the scan turns back into their
    digits): an integral float of that size counts as an integer."""
    if type(rid) in (str, int):
        return True
    return type(rid) is float and rid.is_integer() and abs(rid) >= 2.0**63


def structural_problem(record: dict) -> str | None:
    """The first structural reason a record cannot train, or None."""
    images = record_images(record)
    return _structural(record, None if images is None else len(images))


def _structural(record: dict, n_images: int | None) -> str | None:
    """structural_problem, given the number of images (None: the field is invalid)."""
    if n_images is None:
        return "image_field_invalid"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "no_conversations"
    for n, turn in enumerate(turns):
        expected = "human" if n % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected:
            return "turns_not_alternating"
        if not isinstance(turn.get("value"), str):
            return "turns_not_alternating"
    tokens = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
    if n_images:
        return None if tokens == n_images else "image_token_count"
    return "image_token_in_text_only" if tokens else None


def outside_layout(image: str) -> bool:
    """True if a record's image path is absolute or climbs out of the data root."""
    return image.startswith("/") or ".." in image.split("/")


def missing_images(
    data_root: Path, images: Iterable[str], other_form: dict[str, str] | None = None
) -> set[str]:
    """The paths (relative to `data_root`) that do not exist, listing each folder only once.

    With `other_form` given, each missing path whose folder holds the same name in another
    Unicode normalization (NFC vs NFD: "café" composed or decomposed) is also put there,
    mapped to the name on disk. Only the missing names are compared that way."""
    by_folder: dict[str, list[str]] = {}
    for image in images:
        folder, _, name = image.rpartition("/")
        by_folder.setdefault(folder, []).append(name)
    missing = set()
    for folder, names in by_folder.items():
        try:
            present = set(os.listdir(data_root / folder))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        absent = [n for n in names if n not in present]
        if not absent:
            continue
        missing.update(f"{folder}/{n}" if folder else n for n in absent)
        if other_form is not None and present:
            for name, on_disk in _other_forms(absent, present).items():
                other_form[f"{folder}/{name}" if folder else name] = on_disk
    return missing


def _other_forms(absent: list[str], present: set[str]) -> dict[str, str]:
    """Name in `absent` -> the name in `present` that differs from it only in its Unicode
    normalization. The present names are normalized (the non-ASCII ones, once) only when
    the two normal forms of a missing name are not there as they are."""
    found: dict[str, str] = {}
    by_nfc: dict[str, str] | None = None
    for name in absent:
        nfc, nfd = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
        if nfc != name and nfc in present:
            found[name] = nfc
        elif nfd != name and nfd in present:
            found[name] = nfd
        else:
            if by_nfc is None:  # names mixing composed and decomposed characters
                by_nfc = {}
                for other in present:
                    if not other.isascii():
                        by_nfc.setdefault(unicodedata.normalize("NFC", other), other)
            if nfc in by_nfc:
                found[name] = by_nfc[nfc]
    return found


def image_problem(path: str, decode: bool = False) -> str | None:
    """Why the image file at `path` would not load, or None. Reads the header and the tail."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            fmt = img.format
            if decode:
                try:
                    img.load()
                except Exception:  # noqa: BLE001 - any decoder failure means it will not train
                    return "image_undecodable"
    except Exception:  # noqa: BLE001 - Pillow raises many types for a file it cannot identify
        return "image_unreadable"
    marker = END_MARKERS.get(fmt)
    if marker:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - TAIL))
            if marker not in fh.read():
                return "image_truncated"
    return None


def _problems_of(batch: list[str], data_root: str, decode: bool) -> list[tuple[str, str]]:
    out = []
    for rel in batch:
        reason = image_problem(os.path.join(data_root, rel), decode)
        if reason:
            out.append((rel, reason))
    return out


def image_problems(
    data_root: Path, images: Iterable[str], decode: bool, jobs: int
) -> dict[str, str]:
    """Reason per image path that will not load (missing, unreadable, truncated, ...).

    A missing path whose folder holds its name in another Unicode normalization is
    `image_name_unicode_form` (names are kept as the archives have them, so the record
    and the file disagree), not `image_missing`."""
    unique = sorted(set(images))
    problems = {img: "image_path_outside_layout" for img in unique if outside_layout(img)}
    inside = [img for img in unique if img not in problems]
    other_form: dict[str, str] = {}
    problems.update((img, "image_missing") for img in missing_images(data_root, inside, other_form))
    problems.update((img, "image_name_unicode_form") for img in other_form)
    present = [img for img in inside if img not in problems]
    batches = [present[i : i + 2000] for i in range(0, len(present), 2000)]
    if jobs > 1 and len(batches) > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = pool.map(
                _problems_of, batches, [str(data_root)] * len(batches), [decode] * len(batches)
            )
            for found in results:
                problems.update(found)
    else:
        for batch in batches:
            problems.update(_problems_of(batch, str(data_root), decode))
    return problems


def record_problems(
    records: Iterable[tuple[int, dict]],
    image_root: str,
    data_root: Path,
    params: ValidationParams,
) -> dict[int, tuple[str, str]]:
    """(reason, image path) per record number that will not train; image paths get `image_root`.

    One reason per record, the first found of: its `image` field, its structure, its `id`,
    then its images in the order listed. The path reported is the first failing image, or
    the first image for a reason of the record itself ("" for a text-only record or an
    `image` that is no path)."""
    problems: dict[int, tuple[str, str]] = {}
    single: dict[int, str] = {}  # the common case, kept apart: this loop runs per record
    multi: dict[int, list[str]] = {}
    for n, record in records:
        image = record.get("image")
        if type(image) is str:
            images, reason = None, _structural(record, 1)
        else:
            images = record_images(record)
            reason = _structural(record, None if images is None else len(images))
        if reason is None:
            rid = record.get("id")
            if type(rid) is not str and type(rid) is not int and not id_is_valid(rid):
                reason = "id_invalid"
        if reason:
            first = image[0] if type(image) is list and image else image
            problems[n] = (reason, image_root + first if type(first) is str else "")
        elif type(image) is str:
            single[n] = image_root + image
        elif images:
            multi[n] = [image_root + item for item in images]
    every = itertools.chain(single.values(), itertools.chain.from_iterable(multi.values()))
    bad_images = image_problems(data_root, every, params.decode, params.jobs)
    for n, path in single.items():
        if path in bad_images:
            problems[n] = (bad_images[path], path)
    for n, paths in multi.items():
        for path in paths:
            if path in bad_images:
                problems[n] = (bad_images[path], path)
                break
    return problems


def enforce(label: str, problems: dict[int, tuple[str, str]], ids: list[str], policy: str) -> set:
    """The record numbers to drop under `policy`; `fail` stops with examples instead."""
    if not problems or policy == "keep":
        return set()
    if policy == "fail":
        examples = "; ".join(
            f"id {ids[n]!r}: {reason} ({path or 'no image'})"
            for n, (reason, path) in sorted(problems.items())[:5]
        )
        raise StageError(
            f"{label}: {len(problems):,} records will not train (validate.policy=fail), e.g. "
            f"{examples}. Fix the layout, or set validate.policy to drop or keep"
        )
    return set(problems)


def count_reasons(problems: dict[int, tuple[str, str]]) -> dict[str, int]:
    """Records per reason, every reason listed (zeros included) so metrics diffs line up."""
    counts = dict.fromkeys(REASONS, 0)
    for reason, _ in problems.values():
        counts[reason] += 1
    return counts
