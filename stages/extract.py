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
import hashlib
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from llava_data.common import (
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
    swap_in,
    temporary,
)
from llava_data.layout import (
    STAMP_NAME,
    Member,
    TreeSpec,
    check_archive,
    choose_prefix,
    parse_max_ratio,
    select_members,
)

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
