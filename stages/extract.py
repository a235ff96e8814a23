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

A pooled tree (`layout.pools.<tree>`, stage extract_pool@<tree>) takes two `--archive`
folders in order, each a zip or a source of parts (plain tars such as SA-1B's, checked
the same way: no link, device, FIFO, sparse member, climbing path, or data past the
end); a file both hold is written once when the bytes agree, the second's when not.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from llava_data import parts
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
    tar_entries,
    tree_specs,
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


def zip_blocks(zf: zipfile.ZipFile, label: str):
    """Read a zip member's bytes block by block, its CRC checked by zipfile."""

    def blocks(info):
        try:
            with zf.open(info) as src:
                yield from iter(lambda: src.read(CHUNK), b"")
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise StageError(f"{label}: member {info.filename!r} is damaged ({err})") from None

    return blocks


def tar_blocks(fh, label: str):
    """Read a tar member's bytes block by block from its offset (a tar holds no checksum
    of the bytes: the fetch stage's sha256 of the whole file holds them)."""

    def blocks(info):
        fh.seek(info.offset)
        left = info.file_size
        while left:
            block = fh.read(min(CHUNK, left))
            if not block:
                raise StageError(f"{label}: member {info.filename!r} ends early (truncated)")
            left -= len(block)
            yield block

    return blocks


def write_member(blocks, m: Member, target: Path, bar) -> tuple[int, str]:
    """Write one member to `target`; return its (crc32, first bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    crc, head = 0, b""
    with open(target, "wb") as dst:
        for block in blocks(m.info):
            head = head or block[:16]
            crc = zlib.crc32(block, crc)
            dst.write(block)
            bar.update(len(block))
    return crc, head


def extract_members(label: str, blocks, members: list[Member], root: Path) -> list:
    """Write the members under `root` (read by `blocks`, which checks a zip's CRCs);
    return manifest rows.

    A row is (path in the tree, size, crc32, known damage or "").
    """
    rows = []
    with progress(sum(m.info.file_size for m in members), label) as bar:
        for m in members:
            crc, head = write_member(blocks, m, root / m.target, bar)
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


@contextlib.contextmanager
def building(tmp: Path, label: str):
    """Remove the half-built tree `tmp` on any failure; a full disk becomes a StageError
    that says where."""
    try:
        yield
    except OSError as err:
        remove_path(tmp)
        if err.errno not in NO_SPACE:
            raise
        raise StageError(no_space_message(err, f"{label}: writing {err.filename or tmp}")) from None
    except BaseException:
        remove_path(tmp)
        raise


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
    with contextlib.ExitStack() as stack:
        infos, blocks = open_members(stack, label, archive, spec.archive, max_ratio)
        prefix = choose_prefix(label, spec, infos)
        members = select_members(label, spec, infos, prefix)
        final = data_root / spec.dest
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final)  # what a killed run left: a half-written or a swapped-out tree
        tmp = temporary(final)
        remove_path(tmp)
        with building(tmp, label):
            rows = extract_members(label, blocks, members, tmp)
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


def archive_files(folder: Path, archive: str) -> list[Path]:
    """The archive files a fetch output folder holds: its one file, or a source's parts
    (not their listing); none for an optional source this profile leaves out."""
    if (folder / parts.LEFT_OUT).is_file():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    files = [p for p in files if p.name != parts.SUMS]
    if not files:
        raise StageError(f"{folder}: no fetched file; run `dvc repro fetch@{archive}`")
    return files


def open_members(stack, label: str, path: Path, archive: str, max_ratio: float):
    """The entries of one archive file (zip, or a plain tar by its name) and a reader of
    their bytes, checked as hostile before anything is written."""
    again = f"Delete {path} and run `dvc repro fetch@{archive}` to fetch it again"
    if path.name.lower().endswith(".tar"):
        infos = tar_entries(label, path, again)
        blocks = tar_blocks(stack.enter_context(path.open("rb")), label)
    else:
        try:
            zf = stack.enter_context(zipfile.ZipFile(path))
        except (zipfile.BadZipFile, OSError) as err:
            raise StageError(
                f"{label}: not a readable zip archive ({err}); it is probably truncated or "
                f"corrupt. {again}"
            ) from None
        infos, blocks = zf.infolist(), zip_blocks(zf, label)
    check_archive(label, infos, path.stat().st_size, max_ratio)
    return infos, blocks


def fill_pool(spec: TreeSpec, folders: list[Path], tmp: Path, scratch: Path, max_ratio: float):
    """Write every input's members under `tmp`; return (rows, per-input summary, same,
    replaced). A file an earlier input already wrote is kept when the bytes agree (`same`)
    and replaced by the later input's when they differ (`replaced`)."""
    rows: dict[str, tuple[int, int, str]] = {}
    summary, same, replaced = [], 0, 0
    with contextlib.ExitStack() as stack:
        for inp, folder in zip(spec.inputs, folders, strict=True):
            files, taken, prefixes = archive_files(folder, inp.archive), {}, set()
            for path in files:
                label = f"tree {spec.name!r} (archive {inp.archive!r}, {path})"
                infos, blocks = open_members(stack, label, path, inp.archive, max_ratio)
                one = TreeSpec(spec.name, inp.archive, inp.candidates, spec.dest)
                prefix = choose_prefix(label, one, infos)
                prefixes.add(prefix)
                members = select_members(label, one, infos, prefix, inp.only_ext)
                with progress(sum(m.info.file_size for m in members), label) as bar:
                    for m in members:
                        if m.target in taken:
                            raise StageError(
                                f"tree {spec.name!r}: {taken[m.target]} and {path.name} of "
                                f"archive {inp.archive!r} both hold {m.target!r}"
                            )
                        taken[m.target] = path.name
                        known = rows.get(m.target)
                        out = scratch if known else tmp / m.target
                        crc, head = write_member(blocks, m, out, bar)
                        if known and known[:2] == (m.info.file_size, crc):
                            same += 1
                            continue
                        if known:
                            os.replace(scratch, tmp / m.target)
                            replaced += 1
                        rows[m.target] = (m.info.file_size, crc, damage_of(m.target, head))
            summary.append(
                {
                    "archive": inp.archive,
                    "files": len(files),
                    "from": sorted(prefixes),
                    "members": len(taken),
                }
            )
    listed = [(t, *rows[t]) for t in sorted(rows, key=lambda t: t.encode("utf-8"))]
    return listed, summary, same, replaced


def extract_pool(
    spec: TreeSpec,
    folders: list[Path],
    data_root: Path,
    manifest: Path,
    stamp: Path,
    max_ratio: float,
) -> dict:
    """Extract a pooled tree (`layout.pools`) from its inputs' fetch output folders, in
    order; verify and swap it in; write its manifest and stamp. Return the stamp."""
    final = data_root / spec.dest
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp, scratch = temporary(final), temporary(final, "new")
    remove_path(tmp)
    try:
        with building(tmp, f"tree {spec.name!r}"):
            tmp.mkdir()
            rows, summary, same, replaced = fill_pool(spec, folders, tmp, scratch, max_ratio)
    finally:
        remove_path(scratch)
    used = " + ".join(f"{s['archive']} ({s['files']} files)" for s in summary)
    text = manifest_text(spec.dest, rows, f"{spec.name}: members of {used}")
    with atomic_path(manifest) as out:
        out.write_text(text, encoding="utf-8")
    swap_in(tmp, final)
    if replaced:
        print(
            f"tree {spec.name!r}: {replaced:,} files held by two inputs differ; the later "
            f"input's bytes were taken (see {stamp})",
            file=sys.stderr,
        )
    record = {
        "tree": spec.name,
        "inputs": summary,
        "files": len(rows),
        "bytes": sum(row[1] for row in rows),
        "damaged_files": sum(1 for row in rows if row[3]),
        "held_twice_same": same,
        "held_twice_replaced": replaced,
        "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    with atomic_path(stamp) as out:
        out.write_text(dumps_json(record, indent=2), encoding="utf-8")
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, help="params file holding layout.trees/pools")
    ap.add_argument("--params", required=True, help="params file holding extract.*")
    ap.add_argument("--tree", required=True)
    ap.add_argument(
        "--archive",
        required=True,
        type=Path,
        action="append",
        help="fetch output folder (a pooled tree: one per input, in order)",
    )
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--stamp", required=True, type=Path)
    args = ap.parse_args(argv)

    specs = tree_specs(load_params(args.registry, "layout"))
    if args.tree not in specs:
        raise StageError(f"{args.registry}: no tree {args.tree!r} in layout.trees or layout.pools")
    spec = specs[args.tree]
    max_ratio = parse_max_ratio(load_params(args.params, "extract"))
    expected = args.data_root / spec.dest / STAMP_NAME
    if args.stamp != expected:
        raise StageError(f"--stamp must be {expected} (inside the tree), got {args.stamp}")
    if len(args.archive) != len(spec.inputs):
        raise StageError(
            f"tree {spec.name!r} takes {len(spec.inputs)} archives ({', '.join(spec.archives)}), "
            f"got {len(args.archive)} --archive"
        )
    if len(spec.inputs) > 1:
        extract_pool(spec, args.archive, args.data_root, args.manifest, args.stamp, max_ratio)
        return
    extract_tree(
        spec, only_file(args.archive[0]), args.data_root, args.manifest, args.stamp, max_ratio
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
