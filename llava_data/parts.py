"""A source of many files (`parts`), such as SA-1B's tars or a dataset's Parquet shards:
their names, their listing, and whether each is whole.

A source of parts is pinned by the total of its sizes and by one sha256: that of its
listing, the text `sha256sum` prints for its parts in order (`<sha256>  <name>` per line).
`sha256sum sa_0000*.tar | sha256sum` on any copy so gives the digest the registry holds,
and the listing itself (`SHA256SUMS`, kept beside the parts) names the part that differs.
Its parts are named by a pattern (`sa_{:06d}.tar`, `parts: [0, 50]`) or are the files
matching a glob (`test-*.parquet`, `parts: glob`), sorted by name (`matching`).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from llava_data.common import file_digest

SUMS = "SHA256SUMS"  # the listing, written beside the parts
LEFT_OUT = "LEFT-OUT.txt"  # the one file of an optional source this profile leaves out


def listing_text(rows: Iterable[tuple[str, str]]) -> str:
    """`sha256sum`'s text for (sha256, name) rows, in the order given."""
    return "".join(f"{sha}  {name}\n" for sha, name in rows)


def listing(folder: Path, names: tuple[str, ...], hashed: dict[str, str] | None = None) -> str:
    """`sha256sum`'s text for the parts in `folder`, in the order given. Every part is
    hashed (a previous listing proves nothing about today's bytes), except those whose
    sha256 this run already computed (`hashed`: name -> sha256)."""
    hashed = hashed or {}
    return listing_text((hashed.get(n) or file_digest(folder / n), n) for n in names)


def upstream_facts(rows: Iterable[tuple[str, int | None, str | None]]) -> dict:
    """What an upstream's description of the parts, (name, size, sha256) each in the
    parts' order, says of the source as a whole: the total size and the sha256 of the
    listing, each None unless every part gives its own."""
    rows = list(rows)
    sizes, shas = [r[1] for r in rows], [r[2] for r in rows]
    whole = all(s is not None for s in shas)
    return {
        "size": sum(sizes) if all(s is not None for s in sizes) else None,
        "sha256": listing_digest(listing_text((r[2], r[0]) for r in rows)) if whole else None,
    }


# ---- the names of a glob's parts -------------------------------------------------------


def matching(glob: str, names: Iterable[str]) -> tuple[str, ...]:
    """The `names` that `glob` matches (`*` stands for any characters, nothing else is
    special), sorted, without the files this module writes beside the parts."""
    pattern = re.compile(".*".join(re.escape(piece) for piece in glob.split("*")), re.DOTALL)
    found = {n for n in names if pattern.fullmatch(n) and n not in (SUMS, LEFT_OUT)}
    return tuple(sorted(found))


def folder_names(folder: Path) -> list[str]:
    """The names of the files in `folder` (none if it is not a folder), sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def verified_names(folder: Path, digest: str | None) -> tuple[str, ...]:
    """The parts named by the listing kept in `folder` when its sha256 is `digest` (the
    registry's pin: the names are then the pinned ones), else none."""
    path = folder / SUMS
    if digest is None or not path.is_file():
        return ()
    text = path.read_text(encoding="utf-8")
    return tuple(parse_listing(text)) if listing_digest(text) == digest else ()


def like(file: str, names: Iterable[str]) -> list[str]:
    """Of a folder's `names`, those that look like the parts `file` names: those with its
    extension (all of them if none has it), sorted."""
    names = sorted(names)
    suffix = PurePosixPath(file).suffix
    alike = [n for n in names if suffix and n.endswith(suffix)]
    return alike or names


def shown_names(names: list[str], most: int = 20) -> str:
    """Names for a message, the first `most` of them and how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more if names else "nothing"


def parse_listing(text: str) -> dict[str, str]:
    """Name -> sha256 of a `sha256sum` listing."""
    rows = {}
    for line in text.splitlines():
        sha, sep, name = line.partition("  ")
        if sep:
            rows[name] = sha
    return rows


def read_listing(path: Path) -> dict[str, str]:
    """Name -> sha256 of the `sha256sum` listing in `path` ({} when there is none)."""
    return parse_listing(path.read_text(encoding="utf-8")) if path.is_file() else {}


def listing_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def differing(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The parts whose sha256 differs between two listings, in name order."""
    return sorted(n for n in now if n in before and before[n] != now[n])


def tar_problem(path: Path) -> str | None:
    """What makes the plain (uncompressed) tar at `path` not whole, or None: every header
    must read, and every member's data must lie inside the file (a truncated download
    reads its headers but ends inside the last member)."""
    size = path.stat().st_size
    try:
        with tarfile.open(path, mode="r:") as tf:
            count = 0
            for member in tf:
                count += 1
                if member.isfile() and member.offset_data + member.size > size:
                    return (
                        f"tar member {member.name!r} ends at byte "
                        f"{member.offset_data + member.size:,}, past the file's end ({size:,}): "
                        f"the file is truncated"
                    )
    except (tarfile.TarError, OSError, EOFError) as err:
        return f"it does not read as a plain tar archive ({type(err).__name__}: {err})"
    if count == 0:
        return "it is a tar archive with no member"
    return None


PARQUET_MAGIC = b"PAR1"


def parquet_problem(path: Path) -> str | None:
    """What makes the Parquet file at `path` not whole, or None. It must begin and end with
    PAR1, the footer length before its last PAR1 must fit in the file, pyarrow must read the
    footer's metadata, and every column chunk must end before the footer (a truncated
    download loses its footer; a spliced one holds chunks the footer points past)."""
    size = path.stat().st_size
    if size < 12:
        return f"it has {size:,} bytes, too few for a Parquet file (12 at least)"
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(size - 8)
        tail = fh.read(8)
    if head != PARQUET_MAGIC:
        return "it does not begin with PAR1, so it is not a Parquet file"
    if tail[4:] != PARQUET_MAGIC:
        return "it does not end with PAR1: the file is truncated (its footer is missing)"
    footer = int.from_bytes(tail[:4], "little")
    data_end = size - footer - 8
    if data_end < 4:
        return f"its footer length says {footer:,} bytes, more than the file's {size:,} hold"
    import pyarrow
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        return f"its footer cannot be read ({type(err).__name__}: {err})"
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset:
                start = min(start, col.dictionary_page_offset)
            if start + col.total_compressed_size > data_end:
                return (
                    f"row group {g}, column {col.path_in_schema!r} ends at byte "
                    f"{start + col.total_compressed_size:,}, past the data's end ({data_end:,})"
                )
    return None


# What checks that a part is whole, by its name's extension (other parts get no check).
PART_CHECKS = {".tar": tar_problem, ".parquet": parquet_problem}


def part_problem(path: Path) -> str | None:
    """What makes the part at `path` not whole, or None (also when no check applies)."""
    check = PART_CHECKS.get(path.suffix.lower())
    return check(path) if check is not None else None
