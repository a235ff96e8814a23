"""What every source needs before a build: size, licence, present or not, manual steps, disk.

Reads the registry (`sources`, `layout.trees`), `profile` from params.yaml, the
fetch outputs under `--downloads` and the stamps under `--data-root`. Prints one
line per source and the totals (a source of parts: its count, as far as this machine
knows a glob's, and its planned size). With `--check-space`, exits 1 when the free disk
cannot hold what is about to be downloaded plus what extraction will write.
Writes nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from llava_data.common import StageError, load_params, run_main
from llava_data.layout import STAMP_NAME, tree_specs
from llava_data.origins import Origin, local_copy_for
from llava_data.parts import SUMS, folder_names, read_listing

GB = 1e9


@dataclass(frozen=True)
class SourceState:
    name: str
    file: str
    size: int | None  # exact, or the page's shown size when `approx` (for planning only)
    licence: str
    kind: str
    status: str  # present | partial | local copy | missing
    missing_bytes: int | None  # still to arrive (None: unknown)
    extract_bytes: int | None  # still to be written by extraction (None: unknown)
    manual: str  # "" | "manual" | "maybe manual"
    approx: bool = False
    facts: str = ""  # how surely each pinned fact is known, e.g. "size M, sha256 M, rev P"
    shown: str = ""  # the page's shown size as it shows it (unit included), when `approx`


# One letter per confidence, for the table: published (P), from a mirror (M), assumed (A).
LETTER = {"published": "P", "mirror": "M", "assumed": "A"}


def human(n: int | None, approx: bool = False) -> str:
    """Bytes for a person: GB are SI (10^9 bytes), as the Hugging Face Hub shows them."""
    if n is None:
        return "unknown"
    if n >= 1e8:
        text = f"{n / GB:.2f} GB"
    elif n >= 1e6:
        text = f"{n / 1e6:.1f} MB"
    else:
        text = f"{n:,} B"
    return f"~{text}" if approx else text


def size_cell(state: SourceState) -> str:
    """An exact size, or a page's shown size as it shows it (unit included) marked ~."""
    return f"~{state.shown}" if state.approx and state.shown else human(state.size, state.approx)


def facts_of(origin: Origin) -> str:
    """What the registry holds this origin to, with a letter for how surely each is known."""
    held = []
    if origin.size is not None:
        held.append(("size", "size"))
    elif origin.approx_size is not None:
        held.append(("~size", "shown_size"))
    held += [(algo, algo) for algo, _ in origin.checksums]
    if origin.sha256_prefix is not None:
        held.append(("sha256 prefix", "sha256_prefix"))
    if origin.kind == "hf" and origin.spec[2]:
        held.append(("rev", "revision"))
    if origin.records is not None:
        held.append(("records", "records"))
    if origin.files:
        held.append(("files", "files"))
    return ", ".join(f"{label} {LETTER[origin.confidence(fact)]}" for label, fact in held) or "-"


def state_of(
    name: str,
    entry: dict,
    profile: str,
    downloads: Path,
    data_root: Path,
    trees: dict,
    local: Path | None,
) -> SourceState:
    origin = listed_parts(Origin.parse(name, entry, profile), downloads / name, local)
    size = origin.size if origin.size is not None else origin.approx_size
    final = downloads / name / (SUMS if origin.has_parts else origin.file)
    part = downloads / ".partial" / name / (origin.file + ".part")
    have = parts_here(origin, downloads / name, downloads / ".partial" / name)
    if not origin.use:
        status, missing = "left out (use: false)", 0
    elif final.is_file() and (
        origin.has_parts or origin.size is None or final.stat().st_size == origin.size
    ):
        status, missing = "present", 0
    elif local is not None:
        status, missing = "local copy", 0
    elif part.is_file() or have:
        held = have[1] if have else part.stat().st_size
        count = f"{have[0]} of {len(origin.parts) or '?'} files, " if have else ""
        status = f"partial ({count}{human(held)}, resumes)"
        missing = None if size is None else max(size - held, 0)
    else:
        status, missing = "missing", size
    dests = [t.dest for t in trees.values() if name in t.archives]
    pending = [d for d in dests if not (data_root / d / STAMP_NAME).is_file()]
    # images barely compress: an archive expands to about its own size
    extract = 0 if not pending or not origin.use else size
    manual = {"manual": "manual", "gdrive": "maybe manual"}.get(origin.kind, "")
    if status in ("present", "local copy") or not origin.use:
        manual = ""
    return SourceState(
        name,
        file_cell(origin),
        size,
        str(entry.get("licence", "")),
        origin.kind,
        status,
        missing,
        extract,
        manual,
        approx=origin.size is None and size is not None,
        facts=facts_of(origin),
        shown=origin.shown_size or "",
    )


def listed_parts(origin: Origin, out_dir: Path, local: Path | None) -> Origin:
    """A glob's parts as far as this machine knows them, asking no upstream: the files of
    its local folder, else those of the listing its last fetch kept."""
    if not origin.by_glob:
        return origin
    folder = local if local is not None else Path(origin.spec) if origin.kind == "local" else None
    if folder is not None and folder.is_dir():
        return origin.listed(folder_names(folder))
    return origin.listed(read_listing(out_dir / SUMS))


def parts_here(origin: Origin, out_dir: Path, staging: Path) -> tuple[int, int] | None:
    """How many of a source's parts its fetch has placed (a glob's: those there that match
    it), and their bytes with those of the partial downloads; None when there are none."""
    if not origin.has_parts or not out_dir.is_dir():
        return None
    names = origin.parts or origin.listed(folder_names(out_dir)).parts
    placed = [out_dir / n for n in names if (out_dir / n).is_file()]
    partial = list(staging.glob("*.part")) if staging.is_dir() else []
    if not placed and not partial:
        return None
    return len(placed), sum(p.stat().st_size for p in placed + partial)


FILE_WIDTH = 40  # the table's file column


def file_cell(origin: Origin) -> str:
    """The file column: the file, or a source's first and last part and their count; when
    that is too wide, its pattern or glob and the count."""
    shown = origin.shown_file
    if len(shown) > FILE_WIDTH and origin.parts:
        shown = f"{origin.file} ({len(origin.parts)} files)"
    return shown


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def report(states: list[SourceState]) -> str:
    lines = [
        f"{'source':28} {'file':40} {'size':>11}  {'held to':40} {'status':24} {'step':13} licence"
    ]
    for s in states:
        done = s.status in ("present", "local copy") or s.status.startswith("left out")
        step = s.manual or ("" if done else f"fetch ({s.kind})")
        lines.append(
            f"{s.name:28} {s.file[:FILE_WIDTH]:{FILE_WIDTH}} {size_cell(s):>11}  {s.facts:40} "
            f"{s.status:24} {step:13} {s.licence}"
        )
    lines.append(
        "size: exact, or ~ as its page shows it (for planning only; GB = 10^9 bytes, GiB = "
        "2^30). held to: what a download is checked against (~size: the shown size; sha256 "
        "prefix: a truncated listing's first digits), and how surely each is known: P "
        "published (the primary page), M from a mirror or a user's listing (checked against "
        "the real file), A assumed"
    )
    return "\n".join(lines)


def needed(states: list[SourceState]) -> tuple[int, int, int]:
    """Bytes to download, bytes to extract, and how many of either are of unknown size."""
    download = sum(s.missing_bytes or 0 for s in states)
    extract = sum(s.extract_bytes or 0 for s in states)
    unknown = sum(1 for s in states if s.missing_bytes is None or s.extract_bytes is None)
    return download, extract, unknown


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--downloads", required=True, type=Path)
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--local-copies", type=Path)
    ap.add_argument("--check-space", action="store_true")
    ap.add_argument("--profile", help="this profile instead of params.yaml's (e.g. full)")
    args = ap.parse_args(argv)

    profile = args.profile or load_params(args.params, "profile")
    with open(args.registry, encoding="utf-8") as fh:
        registry = yaml.safe_load(fh)
    trees = tree_specs(registry["layout"])
    states = [
        state_of(
            name,
            entry,
            profile,
            args.downloads,
            args.data_root,
            trees,
            local_copy_for(name, args.local_copies, folder="parts" in entry.get(profile, {})),
        )
        for name, entry in registry["sources"].items()
    ]
    print(f"profile: {profile}")
    print(report(states))
    download, extract, unknown = needed(states)
    free = free_bytes(args.downloads)
    manual = [s.name for s in states if s.manual == "manual"]
    approx = sum(1 for s in states if s.approx and not s.status.startswith("left out"))
    print(
        f"\nto download: {human(download)}; to extract: {human(extract)}; "
        f"free: {human(free)}"
        + (f" ({approx} sizes as their pages show them)" if approx else "")
        + (f"; {unknown} sources of unknown size, not counted" if unknown else "")
    )
    if manual:
        print(
            f"manual steps needed before the build: {', '.join(manual)} "
            f"(see `sources.<name>.{profile}.manual` in {args.registry}, README 'Manual sources')"
        )
    if args.check_space and download + extract > free:
        raise StageError(
            f"not enough disk: {human(download)} to download plus {human(extract)} to extract "
            f"need more than the {human(free)} free under {args.downloads}; free space, or move "
            f"the repository (or .dvc/cache) to a larger disk, then run again"
        )


if __name__ == "__main__":
    sys.exit(run_main(main))
