"""What one tree of the layout is: its registry entry, and the archive members it takes.

Shared by the extract stage (which writes the tree), the parameter check (which refuses a
bad entry before any stage runs), the verifier, the preflight and the miniature's
generator. Archives are hostile: `check_archive` refuses absolute paths, `..`, links,
encryption and unbounded expansion before anything is written.
"""

from __future__ import annotations

import contextlib
import re
import stat
import zipfile
from dataclasses import dataclass, field

from llava_data.common import (
    StageError,
)

STAMP_NAME = ".extracted.json"
ESCAPE = re.compile(r"#U([0-9a-fA-F]{4})|#L([0-9a-fA-F]{6})")


@dataclass(frozen=True)
class TreeSpec:
    """`layout.trees.<name>`: which members of which archive go where, and the fixes."""

    name: str
    archive: str
    candidates: tuple[str, ...]  # member prefixes to try, in order ("*/": the one top folder)
    dest: str
    rename_ext: dict[str, str] = field(default_factory=dict)
    decode_names: str | None = None
    aliases: tuple[str, ...] = ()

    @classmethod
    def parse(cls, name: str, raw: dict) -> TreeSpec:
        where = f"layout.trees.{name}"
        if not isinstance(raw, dict):
            raise StageError(f"{where}: expected a mapping")
        unknown = set(raw) - {"archive", "from", "dest", "rename_ext", "decode_names", "aliases"}
        if unknown:
            raise StageError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("archive", "dest"):
            if not isinstance(raw.get(key), str):
                raise StageError(f"{where}: `{key}` must be a string")
        candidates, dest = raw.get("from"), raw["dest"]
        if isinstance(candidates, str):
            candidates = [candidates]
        if not isinstance(candidates, list) or not candidates:
            raise StageError(f"{where}: `from` must be a member prefix or a list of candidates")
        for prefix in candidates:
            if not isinstance(prefix, str) or (prefix and not prefix.endswith("/")):
                raise StageError(f"{where}: `from` must be empty or end with '/', got {prefix!r}")
            if unsafe_parts(prefix):
                raise StageError(f"{where}: `from` {prefix!r} climbs out of the archive")
        if not dest or unsafe_parts(dest):
            raise StageError(f"{where}: `dest` must be a relative path inside data/, got {dest!r}")
        rename = raw.get("rename_ext") or {}
        if not all(
            isinstance(k, str) and k.startswith(".") and isinstance(v, str) and v.startswith(".")
            for k, v in rename.items()
        ):
            raise StageError(f"{where}: rename_ext maps extensions like .gif: .jpg")
        decode = raw.get("decode_names")
        if decode not in (None, "zip_unicode_escapes"):
            raise StageError(f"{where}: decode_names can only be zip_unicode_escapes")
        aliases = tuple(raw.get("aliases") or ())
        if any(not isinstance(a, str) or "/" in a or unsafe_parts(a) for a in aliases):
            raise StageError(f"{where}: aliases are plain folder names")
        lowered = {k.lower(): v for k, v in rename.items()}
        return cls(name, raw["archive"], tuple(candidates), dest, lowered, decode, aliases)


def parse_max_ratio(raw: object) -> float:
    """`extract.max_expand_ratio` of params.yaml, checked before any I/O."""
    ratio = raw.get("max_expand_ratio") if isinstance(raw, dict) else None
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not ratio > 0:
        raise StageError(
            f"params.yaml: extract.max_expand_ratio must be a positive number, got {ratio!r}"
        )
    return float(ratio)


@dataclass(frozen=True)
class Member:
    """One file of the archive that belongs to this tree."""

    info: zipfile.ZipInfo
    target: str  # relative to the tree


def unsafe_parts(path: str) -> bool:
    """True if a path is absolute or climbs out with '..' (either separator)."""
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return True
    return any(part == ".." for part in re.split(r"[/\\]", path))


def bad_relative(rel: str) -> bool:
    """True if a member's path inside its tree is unsafe or malformed once decoded."""
    parts = rel.split("/")
    return unsafe_parts(rel) or "\0" in rel or any(p in ("", ".") for p in parts)


def decode_escapes(name: str) -> str:
    """Decode Info-ZIP's #Uxxxx / #Lxxxxxx escapes of non-ASCII characters."""
    return ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), name)


def member_name(info: zipfile.ZipInfo) -> str:
    """The member's name, repairing UTF-8 names stored without the UTF-8 flag."""
    name = info.filename
    if not info.flag_bits & 0x800:
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            name = name.encode("cp437").decode("utf-8")
    return name


def check_archive(
    label: str, infos: list[zipfile.ZipInfo], archive_size: int, max_ratio: float
) -> None:
    """Refuse the whole archive if any member is hostile, before anything is written."""
    declared = 0
    for info in infos:
        name = member_name(info)
        # only Unix-made archives carry a file type in the high bits of the attributes
        kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
        if unsafe_parts(name):
            raise StageError(
                f"{label}: member {name!r} would land outside its folder; the archive is refused"
            )
        if kind == stat.S_IFLNK:
            raise StageError(f"{label}: member {name!r} is a symbolic link; links are refused")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise StageError(f"{label}: member {name!r} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise StageError(f"{label}: member {name!r} is encrypted")
        declared += info.file_size
    if declared > max_ratio * max(archive_size, 1):
        raise StageError(
            f"{label}: members declare {declared:,} bytes, more than {max_ratio:g}x the "
            f"archive's {archive_size:,}; refusing a possible decompression bomb (raise "
            f"extract.max_expand_ratio in params.yaml only if you trust this archive)"
        )


def top_folders(infos: list[zipfile.ZipInfo]) -> list[str]:
    """The archive's top-level entries (folders with a trailing '/'), sorted."""
    return sorted(
        {(n := member_name(i)).split("/", 1)[0] + ("/" if "/" in n else "") for i in infos}
    )


def choose_prefix(label: str, spec: TreeSpec, infos: list[zipfile.ZipInfo]) -> str:
    """The first of the tree's candidate prefixes that the central directory has files under.

    A leading `*/` stands for the archive's single top-level folder, whatever its name
    (`*/` alone: that folder; `*/ai2d/images/`: that path under it); `""` for the root.
    When none matches, the archive's top folders are listed.
    """
    files = [member_name(i) for i in infos if not i.is_dir()]
    tops = {name.split("/", 1)[0] for name in files if "/" in name}
    wrapper = tops.pop() + "/" if len(tops) == 1 and all("/" in n for n in files) else None
    for candidate in spec.candidates:
        if candidate.startswith("*/"):  # under the one top folder, whatever its name
            if wrapper is None:
                continue
            candidate = wrapper + candidate[2:]
        if any(name.startswith(candidate) for name in files):
            return candidate
    tried = ", ".join(repr(c) for c in spec.candidates)
    raise StageError(
        f"{label}: no file under {tried}; the archive's top level holds "
        f"{top_folders(infos)[:10]}. Fix layout.trees.{spec.name}.from in sources.yaml"
    )


def select_members(
    label: str, spec: TreeSpec, infos: list[zipfile.ZipInfo], prefix: str
) -> list[Member]:
    """The files under `prefix`, with their names fixed; duplicates refused."""
    members, seen = [], {}
    for info in infos:
        name = member_name(info)
        if info.is_dir() or not name.startswith(prefix):
            continue
        rel = name[len(prefix) :]
        if spec.decode_names:
            rel = decode_escapes(rel)
        if bad_relative(rel):
            raise StageError(
                f"{label}: member {name!r} becomes {rel!r} once its name is decoded, which "
                f"would land outside its folder; the archive is refused"
            )
        stem, dot, ext = rel.rpartition(".")
        if dot and spec.rename_ext.get("." + ext.lower()):
            rel = stem + spec.rename_ext["." + ext.lower()]
        if rel in seen:
            raise StageError(f"{label}: members {seen[rel]!r} and {name!r} both become {rel!r}")
        seen[rel] = name
        members.append(Member(info, rel))
    return members


# What an image file's first bytes say it is, and what its name says.
