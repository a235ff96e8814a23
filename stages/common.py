"""Helpers every stage shares: errors, params, atomic writes, digests, JSON, progress."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHUNK = 1 << 20


class StageError(Exception):
    """A failure the user can act on; its message names the source, the file and the fix."""


def run_main(main_fn, argv=None) -> int:
    """Run a stage's main, turning a StageError into one clear line on stderr and exit 1."""
    try:
        main_fn(argv)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def load_params(path: str | Path, key: str) -> Any:
    """The value at dotted `key` of a YAML params file; a missing key is a StageError."""
    with open(path, encoding="utf-8") as fh:
        node = yaml.safe_load(fh)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"{path}: no key {key!r} (missing {part!r})")
        node = node[part]
    return node


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    remove_path(tmp)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        remove_path(tmp)


def only_file(folder: str | Path) -> Path:
    """The one file a fetch output folder holds."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if len(files) != 1:
        raise StageError(
            f"{folder}: expected exactly one fetched file, found {len(files)}; "
            f"run `dvc repro` to fetch it"
        )
    return files[0]


def remove_path(path: str | Path) -> None:
    """Remove a file, symlink or folder tree if it exists."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """JSON text with fixed formatting, so equal data always gives equal bytes."""
    if indent is None:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    return json.dumps(obj, ensure_ascii=False, indent=indent, sort_keys=False) + "\n"


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically with fixed formatting."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj, indent), encoding="utf-8")


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file's bytes."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def progress(total: int | None, desc: str, unit: str = "B"):
    """A progress bar on stderr; off when NO_PROGRESS is set or stderr is not a terminal."""
    from tqdm import tqdm

    disable = bool(os.environ.get("NO_PROGRESS")) or not sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=disable,
        file=sys.stderr,
        leave=False,
    )
