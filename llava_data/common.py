"""Helpers every stage shares: errors, params, atomic writes, digests, JSON, progress."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHUNK = 1 << 20


class StageError(Exception):
    """A failure the user can act on; its message names the source, the file and the fix."""


# Errors that mean the disk (or a quota or file-size limit) cannot take what is written.
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def run_main(main_fn, argv=None) -> int:
    """Run a stage's main, turning a StageError (or a full disk) into one clear line, exit 1."""
    try:
        main_fn(argv)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise
        print(f"error: {no_space_message(err)}", file=sys.stderr)
        return 1
    return 0


def no_space_message(err: OSError, what: str | None = None) -> str:
    """What a write that ran out of space means, and what to do."""
    where = what or (f"writing {err.filename}" if err.filename else "writing an output")
    return (
        f"{where} failed: {err.strerror or err} (the disk is full, or a quota or file-size "
        f"limit applies). Nothing already built was replaced: the outputs of the last "
        f"successful run are still in place. Free some space, then run `dvc repro` again"
    )


def load_params(path: str | Path, key: str) -> Any:
    """The value at dotted `key` of a YAML params file; a missing key is a StageError."""
    with open(path, encoding="utf-8") as fh:
        node = yaml.safe_load(fh)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"{path}: no key {key!r} (missing {part!r})")
        node = node[part]
    return node


# `.<name>.tmp-<pid>` (being written) and `.<name>.old-<pid>` (being swapped out): the
# temporaries a stage makes beside an output. A killed stage leaves them behind.
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old|new)-(?P<pid>[0-9]+)$")


def temporary(final: Path, kind: str = "tmp") -> Path:
    """The temporary sibling of `final` this process uses (`kind` is tmp, old or new)."""
    return final.with_name(f".{final.name}.{kind}-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs (this process's own pid counts as not: it is new)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temporaries(folder: Path, names: set[str] | None = None) -> list[Path]:
    """Temporaries in `folder` (of the outputs `names`, or of any) whose process is gone."""
    try:
        entries = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for entry in entries:
        m = TEMPORARY.match(entry)
        if m and (names is None or m["name"] in names) and not pid_alive(int(m["pid"])):
            out.append(folder / entry)
    return out


def remove_stale(final: Path) -> None:
    """Remove what interrupted runs left beside `final`, saying so on stderr."""
    for stale in stale_temporaries(final.parent, {final.name}):
        print(f"removing {stale}, left by an interrupted run", file=sys.stderr)
        remove_path(stale)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; rename it into place only if the block succeeds.

    Temporaries that killed runs left beside `final` are removed first. A write that runs
    out of space becomes a StageError saying that `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp = temporary(final)
    remove_path(tmp)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise
        raise StageError(no_space_message(err, f"writing {final}")) from None
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


def write_report(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    """A TSV report with a header line; rows as given (callers sort them)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\t".join(header) + "\n")
        for row in rows:
            fh.write("\t".join(row) + "\n")


def swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` by the finished `tmp` tree."""
    old = temporary(final, "old")
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(tmp, final)
    remove_path(old)


def named_folders(pairs: list[str], flag: str) -> dict[str, Path]:
    """`<name>=<path>` command-line arguments of `flag`, by name."""
    out = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise StageError(f"{flag} {pair!r}: expected <name>=<path>")
        out[name] = Path(folder)
    return out
