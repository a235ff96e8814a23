"""Fetch one source: read its registry entry, obtain the file, verify size and checksum.

Reads `sources.<name>` of the registry (params file) for the active profile and
writes `<out>/<file>`. Partial downloads live under `--partial` (not a DVC
output, so `dvc repro` never deletes them) and are resumed by the next run; a
file is renamed into `<out>` only once its size and checksum are verified.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from stages import transports
from stages.common import StageError, file_digest, load_params, run_main
from stages.registry import record

KINDS = ("local", "url", "hf", "gdrive", "manual")
HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}


@dataclass(frozen=True)
class Origin:
    """Where one source comes from in one profile, validated before any I/O."""

    name: str
    file: str
    kind: str
    spec: object
    size: int | None
    checksums: tuple[tuple[str, str], ...]
    profile: str = "<profile>"

    @classmethod
    def parse(cls, name: str, entry: dict, profile: str) -> Origin:
        where = f"source {name!r} (sources.{name}.{profile})"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise StageError(f"{where}: the entry needs a `file` name")
        file = entry["file"]
        if "/" in file or file in ("", ".", ".."):
            raise StageError(f"{where}: `file` must be a plain file name, got {file!r}")
        origin = entry.get(profile)
        if not isinstance(origin, dict):
            raise StageError(f"{where}: no origin for profile {profile!r}")
        kinds = [k for k in KINDS if k in origin]
        if len(kinds) != 1:
            raise StageError(f"{where}: give exactly one of {', '.join(KINDS)}; got {kinds}")
        unknown = set(origin) - set(KINDS) - {"size", "sha256", "md5"}
        if unknown:
            raise StageError(f"{where}: unknown keys {sorted(unknown)}")
        size = origin.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise StageError(f"{where}: size must be a whole number of bytes or null, got {size!r}")
        checksums = []
        for algo, pattern in HEX.items():
            value = origin.get(algo)
            if value is None:
                continue
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise StageError(f"{where}: {algo} must be lowercase hex, got {value!r}")
            checksums.append((algo, value))
        kind = kinds[0]
        return cls(
            name,
            file,
            kind,
            transports.parse_spec(where, kind, origin[kind]),
            size,
            tuple(checksums),
            profile,
        )


def verify(path: Path, origin: Origin, announced: dict[str, str] | None = None) -> dict[str, str]:
    """Check size and checksums of a fetched file; return the digests seen.

    `announced` holds checksums the upstream published for this very file (e.g. a
    Hugging Face LFS sha256); they are checked too, so a corrupt transfer is caught
    even while the registry has no checksum yet.
    """
    actual = path.stat().st_size
    if origin.size is not None and actual != origin.size:
        raise StageError(
            f"source {origin.name!r}: {path} has {actual:,} bytes, the registry says "
            f"{origin.size:,}"
        )
    seen = {}
    for algo, expected in origin.checksums or (("sha256", None),):
        seen[algo] = file_digest(path, algo)
        if expected is not None and seen[algo] != expected:
            raise StageError(
                f"source {origin.name!r}: {path} has {algo} {seen[algo]}, the registry says "
                f"{expected}"
            )
    for algo, expected in (announced or {}).items():
        if algo not in HEX:
            continue
        seen.setdefault(algo, file_digest(path, algo))
        if seen[algo] != expected:
            raise StageError(
                f"source {origin.name!r}: {path} has {algo} {seen[algo]}, the upstream announced "
                f"{expected} for it (the transfer is corrupt or the file changed meanwhile)"
            )
    return seen


def fetch(
    origin: Origin,
    out_dir: Path,
    partial_dir: Path,
    local_copy: Path | None,
    registry: Path | None = None,
) -> Path:
    """Obtain, verify and place one source file; return its final path.

    A file already in `out_dir` (kept there by `persist`) that still verifies is
    not downloaded again. A verified file is renamed into `out_dir`; a file that
    fails verification is moved to `<partial_dir>/rejected/<source>/` (never
    deleted) and the stage stops. A transport that fails leaves its partial file
    in `<partial_dir>/<source>/`, where the next run resumes it. What a first
    download learns (size, sha256, Hugging Face commit) is written into `registry`.
    """
    final = out_dir / origin.file
    if final.is_file():
        try:
            verify(final, origin)
            return final
        except StageError as err:
            kept = transports.set_aside(final)
            print(f"{err}; moved it to {kept} and fetching again", file=sys.stderr)
    for stray in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        transports.set_aside(stray)
    staging = partial_dir / origin.name
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / (origin.file + ".part")
    announced: dict[str, str] = {}
    if local_copy is not None:
        transports.link_or_copy(local_copy, part)
    else:
        announced = transports.obtain(origin.kind, origin.spec, origin, part)
    try:
        seen = verify(part, origin, announced)
    except StageError as err:
        kept = transports.set_aside(part)
        raise StageError(
            f"{err}. The file was moved to {kept} (not deleted); if the registry is right, "
            f"delete it and run `dvc repro fetch@{origin.name}` to download again"
        ) from None
    learned = learned_facts(origin, part.stat().st_size, seen, announced)
    if learned:
        announce_learned(origin, learned, registry)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def announce_learned(origin: Origin, learned: dict, registry: Path | None) -> None:
    """Record what a first download established in the registry, and say so loudly."""
    where = f"sources.{origin.name}.{origin.profile}"
    facts = ", ".join(f"{'hf.' if k == 'revision' else ''}{k}: {v}" for k, v in learned.items())
    try:
        if registry is None:
            raise StageError("no registry given")
        record(registry, origin.name, origin.profile, learned)
        done = (
            f"Recorded in {registry} ({where}): commit that change so every later run and "
            f"every teammate is held to it."
        )
    except StageError:
        done = f"Record it by hand as {where} so every later run is held to it."
    print(
        f"WARNING: source {origin.name!r} was not pinned in the registry; this download has "
        f"{facts}. {done}",
        file=sys.stderr,
    )


def learned_facts(origin: Origin, size: int, seen: dict, announced: dict) -> dict:
    """What the registry did not pin and this download established."""
    learned: dict[str, str | int] = {}
    if origin.size is None:
        learned["size"] = size
    if not origin.checksums:
        learned["sha256"] = seen["sha256"]
    if origin.kind == "hf" and origin.spec[2] != announced.get("revision", origin.spec[2]):
        learned["revision"] = announced["revision"]
    return learned


def local_copy_for(name: str, overrides: Path | None) -> Path | None:
    """The path of an existing copy of `name` listed in the (uncommitted) overrides file."""
    if overrides is None or not overrides.exists():
        return None
    with open(overrides, encoding="utf-8") as fh:
        table = yaml.safe_load(fh) or {}
    if name not in table:
        return None
    path = Path(os.path.expanduser(str(table[name])))
    if not path.is_file():
        raise StageError(f"source {name!r}: {overrides} points at {path}, which is not a file")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, help="params file holding `sources`")
    ap.add_argument("--source", required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--out", required=True, type=Path, help="folder that receives the file")
    ap.add_argument("--partial", required=True, type=Path, help="where partial downloads live")
    ap.add_argument("--local-copies", type=Path, help="YAML: source name -> existing file")
    args = ap.parse_args(argv)

    entry = load_params(args.registry, f"sources.{args.source}")
    origin = Origin.parse(args.source, entry, args.profile)
    local = local_copy_for(args.source, args.local_copies)
    fetch(origin, args.out, args.partial, local, Path(args.registry))


if __name__ == "__main__":
    sys.exit(run_main(main))
