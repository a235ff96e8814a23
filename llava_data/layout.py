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
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from llava_data.common import (
    StageError,
)

STAMP_NAME = ".extracted.json"
ESCAPE = re.compile(r"#U([0-9a-fA-F]{4})|#L([0-9a-fA-F]{6})")


@dataclass(frozen=True)
class Input:
    """One archive a tree takes members from: which prefix, and which extensions."""

    archive: str
    candidates: tuple[str, ...]  # member prefixes to try, in order ("*/": the one top folder)
    only_ext: tuple[str, ...] = ()  # lowercase extensions kept (e.g. .jpg); () keeps all


@dataclass(frozen=True)
class TreeSpec:
    """`layout.trees.<name>` (one archive) or `layout.pools.<name>` (several archives into
    one folder): which members of which archives go where, and the fixes."""

    name: str
    archive: str
    candidates: tuple[str, ...]
    dest: str
    rename_ext: dict[str, str] = field(default_factory=dict)
    decode_names: str | None = None
    aliases: tuple[str, ...] = ()
    inputs: tuple[Input, ...] = ()

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", (Input(self.archive, self.candidates),))

    @property
    def archives(self) -> tuple[str, ...]:
        return tuple(i.archive for i in self.inputs)

    @classmethod
    def parse(cls, name: str, raw: dict) -> TreeSpec:
        where = f"layout.trees.{name}"
        if not isinstance(raw, dict):
            raise StageError(f"{where}: expected a mapping")
        unknown = set(raw) - {"archive", "from", "dest", "rename_ext", "decode_names", "aliases"}
        if unknown:
            raise StageError(f"{where}: unknown keys {sorted(unknown)}")
        if not isinstance(raw.get("archive"), str):
            raise StageError(f"{where}: `archive` must be a string")
        candidates = _candidates(where, raw.get("from"))
        dest = _dest(where, raw.get("dest"))
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
        return cls(name, raw["archive"], candidates, dest, lowered, decode, aliases)

    @classmethod
    def parse_pool(cls, name: str, raw: dict) -> TreeSpec:
        """`layout.pools.<name>`: `dest` and `inputs`, a list of {archive, from, only_ext}.
        A file two archives both hold is taken once when the bytes agree; when they differ,
        the later archive's is taken (and counted in the stamp)."""
        where = f"layout.pools.{name}"
        if not isinstance(raw, dict) or set(raw) - {"dest", "inputs"}:
            raise StageError(f"{where}: expected a mapping of `dest` and `inputs`")
        dest = _dest(where, raw.get("dest"))
        items = raw.get("inputs")
        if not isinstance(items, list) or not items:
            raise StageError(f"{where}: `inputs` must be a list of {{archive, from}}")
        inputs = []
        for n, item in enumerate(items):
            at = f"{where}.inputs[{n}]"
            if not isinstance(item, dict) or set(item) - {"archive", "from", "only_ext"}:
                raise StageError(f"{at}: expected {{archive, from, only_ext}}")
            if not isinstance(item.get("archive"), str):
                raise StageError(f"{at}: `archive` must be a string")
            only = item.get("only_ext") or []
            if not isinstance(only, list) or not all(
                isinstance(e, str) and e.startswith(".") for e in only
            ):
                raise StageError(f"{at}: only_ext lists extensions like .jpg")
            candidates = _candidates(at, item.get("from"))
            inputs.append(Input(item["archive"], candidates, tuple(e.lower() for e in only)))
        if len(inputs) != 2 or inputs[0].archive == inputs[1].archive:
            raise StageError(
                f"{where}: a pool has two inputs of two archives (dvc.yaml's extract_pool "
                f"stage passes two), got {[i.archive for i in inputs]}"
            )
        first = inputs[0]
        return cls(name, first.archive, first.candidates, dest, inputs=tuple(inputs))


def _candidates(where: str, candidates: object) -> tuple[str, ...]:
    if isinstance(candidates, str):
        candidates = [candidates]
    if not isinstance(candidates, list) or not candidates:
        raise StageError(f"{where}: `from` must be a member prefix or a list of candidates")
    for prefix in candidates:
        if not isinstance(prefix, str) or (prefix and not prefix.endswith("/")):
            raise StageError(f"{where}: `from` must be empty or end with '/', got {prefix!r}")
        if unsafe_parts(prefix):
            raise StageError(f"{where}: `from` {prefix!r} climbs out of the archive")
    return tuple(candidates)


def _dest(where: str, dest: object) -> str:
    if not isinstance(dest, str) or not dest or unsafe_parts(dest):
        raise StageError(f"{where}: `dest` must be a relative path inside data/, got {dest!r}")
    return dest


def extract_stage(spec: TreeSpec) -> str:
    """The dvc.yaml stage that extracts the tree."""
    return f"extract{'_pool' if len(spec.inputs) > 1 else ''}@{spec.name}"


def tree_specs(layout: dict) -> dict[str, TreeSpec]:
    """Every tree of the layout by name: `layout.trees` and `layout.pools` (checked)."""
    specs = {n: TreeSpec.parse(n, r) for n, r in sorted((layout.get("trees") or {}).items())}
    for name, raw in sorted((layout.get("pools") or {}).items()):
        if name in specs:
            raise StageError(f"layout.pools.{name}: a tree of that name is in layout.trees")
        specs[name] = TreeSpec.parse_pool(name, raw)
    return dict(sorted(specs.items()))


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

    info: zipfile.ZipInfo | TarEntry
    target: str  # relative to the tree


@dataclass(frozen=True)
class TarEntry:
    """A plain tar's member as the checks here read a zip's entries (names are UTF-8)."""

    filename: str
    file_size: int
    offset: int  # where its data begins in the tar
    flag_bits: int = 0x800
    create_system: int = 0
    external_attr: int = 0

    def is_dir(self) -> bool:
        return self.filename.endswith("/")


def tar_entries(label: str, path: Path, again: str) -> list[TarEntry]:
    """The members of the plain tar at `path`, refused whole before anything is written if
    any is hostile: absolute or climbing paths, symbolic or hard links, devices, FIFOs,
    sparse files, or data past the file's end (a truncated tar). A leading `./` (what
    `tar -cf x.tar .` writes) is dropped. `again`: how to fetch the file again."""
    size = path.stat().st_size
    try:
        with tarfile.open(path, mode="r:") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise StageError(
            f"{label}: {path.name} is not a readable plain tar archive ({err}); it is probably "
            f"truncated or corrupt. {again}"
        ) from None
    entries = []
    for m in members:
        name = m.name
        while name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            continue
        if unsafe_parts(m.name) or "\0" in m.name:
            raise StageError(
                f"{label}: member {m.name!r} of {path.name} would land outside its folder; "
                f"the archive is refused"
            )
        if m.issym() or m.islnk():
            how = "a symbolic" if m.issym() else "a hard"
            raise StageError(
                f"{label}: member {m.name!r} of {path.name} is {how} link to {m.linkname!r}; "
                f"links are refused"
            )
        if m.issparse() or not (m.isfile() or m.isdir()):
            raise StageError(
                f"{label}: member {m.name!r} of {path.name} is not a regular file or folder; "
                f"the archive is refused"
            )
        if m.isfile() and m.offset_data + m.size > size:
            raise StageError(
                f"{label}: member {m.name!r} of {path.name} ends past the file's end: the tar "
                f"is truncated. {again}"
            )
        kind = stat.S_IFDIR if m.isdir() else stat.S_IFREG
        entries.append(
            TarEntry(
                name.rstrip("/") + "/" * m.isdir(),
                m.size * m.isfile(),
                m.offset_data,
                0x800,
                3,
                kind << 16,
            )
        )
    return entries


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
    label: str, spec: TreeSpec, infos: list, prefix: str, only_ext: tuple[str, ...] = ()
) -> list[Member]:
    """The files under `prefix` (with `only_ext`, those of these extensions), with their
    names fixed; duplicates refused."""
    members, seen = [], {}
    for info in infos:
        name = member_name(info)
        if info.is_dir() or not name.startswith(prefix):
            continue
        if only_ext and not name.lower().endswith(only_ext):
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
