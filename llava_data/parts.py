"""A source of many files (`parts`), such as SA-1B's tars: their listing, and whole tars.

A source of parts is pinned by the total of its sizes and by one sha256: that of its
listing, the text `sha256sum` prints for its parts in order (`<sha256>  <name>` per line).
`sha256sum sa_0000*.tar | sha256sum` on any copy so gives the digest the registry holds,
and the listing itself (`SHA256SUMS`, kept beside the parts) names the part that differs.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable
from pathlib import Path

from llava_data.common import file_digest

SUMS = "SHA256SUMS"  # the listing, written beside the parts
LEFT_OUT = "LEFT-OUT.txt"  # the one file of an optional source this profile leaves out


def listing_text(rows: Iterable[tuple[str, str]]) -> str:
    """`sha256sum`'s text for (sha256, name) rows, in the order given."""
    return "".join(f"{sha}  {name}\n" for sha, name in rows)


def listing(folder: Path, names: tuple[str, ...]) -> str:
    """`sha256sum`'s text for the parts in `folder`, in the order given (every part is
    hashed: a previous listing proves nothing about today's bytes)."""
    return listing_text((file_digest(folder / name), name) for name in names)


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
