"""Extract one tree of the layout from its archive, and prove it with a manifest.

Reads the archive in `--archive` (a fetch output folder holding one file) and
`layout.trees.<tree>` of the registry; writes the members under the tree's
`from` prefix to `<data-root>/<dest>`, a manifest (`path size crc32` per file,
paths relative to the data root, sorted) and a stamp inside the tree. DVC
hashes the manifest and the stamp, never the images: a deleted tree deletes its
stamp, which `dvc status` reports and `dvc repro` rebuilds.

The archive is treated as hostile: every member is checked before anything is
written (no absolute path, no `..`, no link, no encryption, declared sizes
bounded), the tree is written to a temporary folder and swapped in only when
every CRC has been checked.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import stat
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stages.common import (
    CHUNK,
    NO_SPACE,
    StageError,
    atomic_path,
    dumps_json,
    load_params,
    no_space_message,
    only_file,
    progress,
    remove_path,
    remove_stale,
    run_main,
    temporary,
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
SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"))
FORMAT_OF_EXT = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF"}


def damage_of(name: str, head: bytes) -> str:
    """Known damage of an image file from its name and first bytes ("" when none seen).

    `empty`; `unrecognised` (an image name, but no image signature: zeros, HTML, ...);
    `<format> named .<ext>` (e.g. a GIF saved as .jpg: Pillow opens it by content, other
    readers may not).
    """
    named = FORMAT_OF_EXT.get(name.rpartition(".")[2].lower()) if "." in name else None
    if named is None:
        return ""
    if not head:
        return "empty"
    actual = next((fmt for magic, fmt in SIGNATURES if head.startswith(magic)), None)
    if actual is None:
        return "unrecognised"
    return "" if actual == named else f"{actual} named .{name.rpartition('.')[2]}"


def extract_members(label: str, zf: zipfile.ZipFile, members: list[Member], root: Path) -> list:
    """Write the members under `root`, checking every CRC; return manifest rows.

    A row is (path in the tree, size, crc32, known damage or "").
    """
    rows = []
    with progress(sum(m.info.file_size for m in members), label) as bar:
        for m in members:
            target = root / m.target
            target.parent.mkdir(parents=True, exist_ok=True)
            crc, head = 0, b""
            try:
                with zf.open(m.info) as src, open(target, "wb") as dst:
                    for block in iter(lambda: src.read(CHUNK), b""):
                        head = head or block[:16]
                        crc = zlib.crc32(block, crc)
                        dst.write(block)
                        bar.update(len(block))
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:
                raise StageError(
                    f"{label}: member {m.info.filename!r} is damaged ({err})"
                ) from None
            rows.append((m.target, m.info.file_size, crc, damage_of(m.target, head)))
    return sorted(rows, key=lambda row: row[0].encode("utf-8"))


def manifest_text(dest: str, rows: list, header: str = "") -> str:
    """The manifest: a `# ` header line, then one `path<TAB>size<TAB>crc32[<TAB>damage]` line
    per file, path relative to data/ (damage: see `damage_of`)."""
    lines = [f"# {header}\n"] if header else []
    for path, size, crc, *damage in rows:
        extra = f"\t{damage[0]}" if damage and damage[0] else ""
        lines.append(f"{dest}/{path}\t{size}\t{crc:08x}{extra}\n")
    return "".join(lines)


def swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` by the finished `tmp` tree."""
    old = temporary(final, "old")
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(tmp, final)
    remove_path(old)


def make_aliases(data_root: Path, dest: str, aliases: tuple[str, ...]) -> None:
    """Symlink each alias (a folder name beside the tree's top folder) to that folder."""
    top = PurePosixPath(dest).parts[0]
    for alias in aliases:
        link = data_root / alias
        remove_path(link)
        link.symlink_to(top, target_is_directory=True)


def extract_tree(
    spec: TreeSpec, archive: Path, data_root: Path, manifest: Path, stamp: Path, max_ratio: float
) -> dict:
    """Extract, verify and swap in one tree; write its manifest and stamp. Return the stamp."""
    label = f"tree {spec.name!r} (archive {spec.archive!r}, {archive})"
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise StageError(
            f"{label}: not a readable zip archive ({err}); it is probably truncated or "
            f"corrupt. Delete {archive} and run `dvc repro fetch@{spec.archive}` to fetch it "
            f"again"
        ) from None
    with zf:
        infos = zf.infolist()
        check_archive(label, infos, archive.stat().st_size, max_ratio)
        prefix = choose_prefix(label, spec, infos)
        members = select_members(label, spec, infos, prefix)
        final = data_root / spec.dest
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final)  # what a killed run left: a half-written or a swapped-out tree
        tmp = temporary(final)
        remove_path(tmp)
        try:
            rows = extract_members(label, zf, members, tmp)
        except OSError as err:
            remove_path(tmp)
            if err.errno not in NO_SPACE:
                raise
            raise StageError(
                no_space_message(err, f"{label}: writing {err.filename or tmp}")
            ) from None
        except BaseException:
            remove_path(tmp)
            raise
    text = manifest_text(
        spec.dest, rows, f"{spec.name}: members of {archive.name} under {prefix!r}"
    )
    with atomic_path(manifest) as out:
        out.write_text(text, encoding="utf-8")
    swap_in(tmp, final)
    make_aliases(data_root, spec.dest, spec.aliases)
    damaged = [(path, damage) for path, _, _, damage in rows if damage]
    record = {
        "tree": spec.name,
        "archive": archive.name,
        "from": prefix,
        "files": len(rows),
        "bytes": sum(row[1] for row in rows),
        "damaged_files": len(damaged),
        "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    with atomic_path(stamp) as out:
        out.write_text(dumps_json(record, indent=2), encoding="utf-8")
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, help="params file holding layout.trees")
    ap.add_argument("--params", required=True, help="params file holding extract.*")
    ap.add_argument("--tree", required=True)
    ap.add_argument("--archive", required=True, type=Path, help="fetch output folder")
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--stamp", required=True, type=Path)
    args = ap.parse_args(argv)

    spec = TreeSpec.parse(args.tree, load_params(args.registry, f"layout.trees.{args.tree}"))
    max_ratio = parse_max_ratio(load_params(args.params, "extract"))
    expected = args.data_root / spec.dest / STAMP_NAME
    if args.stamp != expected:
        raise StageError(f"--stamp must be {expected} (inside the tree), got {args.stamp}")
    extract_tree(
        spec, only_file(args.archive), args.data_root, args.manifest, args.stamp, max_ratio
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
