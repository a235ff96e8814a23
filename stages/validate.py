"""Checks a training record must pass: its image exists and opens, its turns are well formed.

Pure checks over records and image paths, shared by the stages that write
training files (`prepare`, `mix`). Image checks read each file's header (and a
little of its tail, to catch truncated JPEG/PNG/GIF files) rather than decoding
every pixel, unless asked to decode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stages.common import StageError

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


def structural_problem(record: dict) -> str | None:
    """The first structural reason a record cannot train, or None."""
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
    if "image" in record:
        return None if tokens == 1 else "image_token_count"
    return "image_token_in_text_only" if tokens else None


def outside_layout(image: str) -> bool:
    """True if a record's image path is absolute or climbs out of the data root."""
    return image.startswith("/") or ".." in image.split("/")


def missing_images(data_root: Path, images: Iterable[str]) -> set[str]:
    """The paths (relative to `data_root`) that do not exist, listing each folder only once."""
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
        missing.update(f"{folder}/{n}" if folder else n for n in names if n not in present)
    return missing


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
    """Reason per image path that will not load (missing, unreadable, truncated, ...)."""
    unique = sorted(set(images))
    problems = {img: "image_path_outside_layout" for img in unique if outside_layout(img)}
    inside = [img for img in unique if img not in problems]
    problems.update((img, "image_missing") for img in missing_images(data_root, inside))
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
    """(reason, image path) per record number that will not train; image paths get `image_root`."""
    problems: dict[int, tuple[str, str]] = {}
    wanted: dict[int, str] = {}
    for n, record in records:
        image = record.get("image")
        path = image_root + image if isinstance(image, str) else ""
        reason = structural_problem(record)
        if "image" in record and not isinstance(image, str):
            reason = reason or "image_path_outside_layout"
        if reason:
            problems[n] = (reason, path)
        elif path:
            wanted[n] = path
    bad_images = image_problems(data_root, wanted.values(), params.decode, params.jobs)
    for n, path in wanted.items():
        if path in bad_images:
            problems[n] = (bad_images[path], path)
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
