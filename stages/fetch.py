"""Fetch one source: read its registry entry, obtain the file, verify size and checksum.

Reads `sources.<name>` of the registry (params file) for the active profile and
writes `<out>/<file>`, or for a source of parts (`fetch_parts`) every part and their
`SHA256SUMS` listing. Partial downloads live under `--partial` (not a DVC
output, so `dvc repro` never deletes them) and are resumed by the next run; a
file is renamed into `<out>` only once its size and checksum are verified.

A file that no checksum holds (neither the registry's nor one the upstream announced)
is also checked whole by its kind before what it taught is pinned in the registry: a
JSON annotation file must parse to its end as one array of records, a zip archive's
central directory must read and every member must pass its CRC, a Parquet file's footer
must read and hold its column chunks (as every tar and Parquet part of a source of parts).
A damaged first download is thus refused instead of being pinned.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
import zlib
from pathlib import Path

from llava_data import jsonscan, parts, transports
from llava_data.common import StageError, atomic_path, file_digest, load_params, run_main
from llava_data.origins import (
    HEX,
    RECORDABLE,
    ZIP_CHUNK,
    ZIP_MAGIC,
    Origin,
    local_copy_for,
)
from llava_data.registry import entry_lines, record


class Mismatch(StageError):
    """A fetched file whose size or checksum is not what the registry or the upstream says.

    `key` is what differs (size, sha256, md5); `against` is "registry" or "upstream".
    """

    def __init__(self, message: str, key: str, against: str) -> None:
        super().__init__(message)
        self.key, self.against = key, against


def verify(path: Path, origin: Origin, announced: dict[str, str] | None = None) -> dict[str, str]:
    """Check size and checksums of a fetched file; return the digests seen.

    `announced` holds checksums the upstream published for this very file (e.g. a
    Hugging Face LFS sha256); they are checked too, so a corrupt transfer is caught
    even while the registry has no checksum yet. A difference raises `Mismatch`.
    """
    actual = path.stat().st_size
    if origin.size is not None and actual != origin.size:
        raise Mismatch(
            f"source {origin.name!r}: {path} has {actual:,} bytes, the registry says "
            f"{origin.size:,}",
            "size",
            "registry",
        )
    seen = {}
    for algo, expected in origin.checksums or (("sha256", None),):
        seen[algo] = file_digest(path, algo)
        if expected is not None and seen[algo] != expected:
            raise Mismatch(
                f"source {origin.name!r}: {path} has {algo} {seen[algo]}, the registry says "
                f"{expected}",
                algo,
                "registry",
            )
    if origin.sha256_prefix is not None:
        seen.setdefault("sha256", file_digest(path, "sha256"))
        if not seen["sha256"].startswith(origin.sha256_prefix):
            print(prefix_warning(origin, path, seen["sha256"]), file=sys.stderr)
    for algo, expected in (announced or {}).items():
        if algo not in HEX:
            continue
        seen.setdefault(algo, file_digest(path, algo))
        if seen[algo] != expected:
            raise Mismatch(
                f"source {origin.name!r}: {path} has {algo} {seen[algo]}, the upstream announced "
                f"{expected} for it (the transfer is corrupt or the file changed meanwhile)",
                algo,
                "upstream",
            )
    return seen


def prefix_warning(origin: Origin, path: Path, sha: str) -> str:
    """What a sha256 that does not begin as a truncated listing says means (the file is
    kept: a prefix is never published whole, and the other pins still hold the file)."""
    how = origin.confidence("sha256_prefix")
    said = {
        "mirror": "from a mirror's truncated listing",
        "assumed": "from a third-party note (inferred)",
    }.get(how, "from a truncated listing")
    return (
        f"WARNING: source {origin.name!r}: {path} has sha256 {sha}, which does not begin with "
        f"{origin.sha256_prefix}, the first digits the registry expects "
        f"({origin.where}.sha256_prefix, {said}, known: {how}). The file is used: its other "
        f"pins hold. Either that listing is of another file, or this is not the file the "
        f"listing's users have; if you trust this file, set {origin.where}.sha256_prefix to "
        f"null (the full sha256 above is what a pin holds it to)"
    )


# ---- is a file whole? -----------------------------------------------------------------


def content_kind(file: str, head: bytes) -> str | None:
    """Which wholeness check a file gets: "json", "zip", "parquet", or None (no check
    applies).

    Decided by the registry's `file` name (`.json`, `.zip`, `.parquet`) and, for a zip
    under another name, by its first bytes.
    """
    name = file.lower()
    if name.endswith(".json"):
        return "json"
    if name.endswith(".zip") or head.startswith(ZIP_MAGIC):
        return "zip"
    if name.endswith(".parquet"):
        return "parquet"
    return None


def needs_wholeness_check(origin: Origin, learned: dict, announced: dict) -> bool:
    """Whether a file must be proved whole before what it taught is pinned: it taught a
    size or a sha256, and no checksum (the registry's or an announced one) held its bytes."""
    held = bool(origin.checksums) or any(algo in HEX for algo in announced)
    return not held and any(key in learned for key in RECORDABLE)


def wholeness_problem(path: Path, file: str) -> str | None:
    """What makes the file at `path` (registered as `file`) not whole, or None."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    kind = content_kind(file, head)
    if kind == "json":
        try:
            jsonscan.scan(path)
        except StageError as err:
            return f"the JSON scanner found {_scanner_reason(err, path)}"
    elif kind == "zip":
        return zip_problem(path)
    elif kind == "parquet":
        return parts.parquet_problem(path)
    return None


def _scanner_reason(err: StageError, path: Path) -> str:
    """The scanner's message without the file name and its own advice (ours follows)."""
    reason = str(err).removeprefix(f"{path}: ")
    head, sep, tail = reason.rpartition("; ")
    return head if sep and "dvc repro" in tail else reason


def zip_problem(path: Path) -> str | None:
    """What is wrong with the zip archive at `path`, or None: its central directory must
    read and every member must read back to its end with the right CRC (streaming; this
    is `ZipFile.testzip`, naming the member whatever the error)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        return f"its zip central directory cannot be read ({err})"
    with zf:
        for info in zf.infolist():
            try:
                with zf.open(info) as member:
                    while member.read(ZIP_CHUNK):
                        pass
            except zipfile.BadZipFile as err:
                return f"zip member {info.filename!r} fails its check ({err})"
            except (
                OSError,
                EOFError,
                zlib.error,
                RuntimeError,
                NotImplementedError,
                ValueError,
            ) as err:
                return f"zip member {info.filename!r} cannot be read ({type(err).__name__}: {err})"
    return None


# ---- where the bytes came from, and what to advise ---------------------------------------


def local_source(origin: Origin, local_copy: Path | None) -> Path | None:
    """The local file the bytes are taken from: the sources.local.yaml copy, or a `local:`."""
    if local_copy is not None:
        return local_copy
    return Path(origin.spec) if origin.kind == "local" else None


def _registry_name(registry: Path | None) -> str:
    return str(registry) if registry is not None else "sources.yaml"


def _null_keys(origin: Origin, keys) -> str:
    return " and ".join(f"`{origin.where}.{key}`" for key in keys)


def mismatch_message(
    err: Mismatch, origin: Origin, kept: Path, local_copy: Path | None, registry: Path | None
) -> str:
    """The message for a fetched file that failed verification (moved to `kept`)."""
    again = f"`dvc repro fetch@{origin.name}`"
    text = f"{err}. The file was moved to {kept} (not deleted). "
    if err.against != "registry":
        return text + f"Run {again} to download it again."
    how = origin.confidence(err.key)
    if how != "published":
        text += (
            f"Note: the registry's {err.key} for this file is "
            f"{'known only from a mirror or a user listing' if how == 'mirror' else 'assumed'} "
            f"({origin.where}.known.{err.key}: {how}), not read on the upstream's own page: "
            f"the real file may well differ from it, and then the value above is the real "
            f"one. "
        )
    src = local_source(origin, local_copy)
    if local_copy is not None:
        text += (
            f"If the registry is right, the copy {local_copy} listed in sources.local.yaml is "
            f"not the file it describes: replace it with a good copy, or remove its line from "
            f"sources.local.yaml to download from the origin, and run {again}."
        )
    elif src is not None:
        text += (
            f"If the registry is right, {src} is not the file it describes: put the right file "
            f"there (or list a good copy in sources.local.yaml as "
            f"`{origin.name}: /path/to/{origin.file}`) and run {again}."
        )
    else:
        text += f"If the registry is right, the download was bad: run {again} to download again."
    pinned = ["size"] * (origin.size is not None) + [
        algo for algo, _ in origin.checksums if algo in RECORDABLE
    ]
    if err.key in RECORDABLE and pinned:
        name = _registry_name(registry)
        text += (
            f" If the registry is wrong or out of date (a first download records the size and "
            f"sha256 it saw, so a damaged first download pins wrong values, and a file changed "
            f"upstream since no longer matches them; `git log -p {name}` shows when they were "
            f"recorded), set {_null_keys(origin, pinned)} back to null in {name} and run "
            f"{again} again: it pins the file it fetches then."
        )
    return text


def not_whole_message(
    origin: Origin,
    problem: str,
    kept: Path,
    out_dir: Path,
    local_copy: Path | None,
    registry: Path | None,
) -> str:
    """The message for a first download that is not whole (moved to `kept`)."""
    again = f"`dvc repro fetch@{origin.name}`"
    listed = f"`{origin.name}: /path/to/{origin.file}`"
    pinned = f"{registry} is unchanged" if registry is not None else "the registry is unchanged"
    text = (
        f"source {origin.name!r}: {origin.file} as fetched is not whole: {problem}. Nothing was "
        f"pinned ({pinned}) and nothing was placed in {out_dir}; the bytes were moved to "
        f"{kept} (not deleted). "
    )
    src = local_source(origin, local_copy)
    if local_copy is not None:
        return text + (
            f"The copy {local_copy} listed in sources.local.yaml is incomplete or damaged: "
            f"replace it with a good copy, or remove its line from sources.local.yaml to "
            f"download from the origin, then run {again}."
        )
    if src is not None:
        return text + (
            f"The local file {src} is incomplete or damaged: if it was still being written, "
            f"run {again} once it is complete; otherwise put a good copy there (or list one in "
            f"sources.local.yaml as {listed}) and run {again}."
        )
    return text + (
        f"Run {again} to download it again; if it fails the same way, the upstream file "
        f"itself is damaged: report it upstream, or list a good copy in sources.local.yaml as "
        f"{listed} and run {again}."
    )


# ---- the stage ---------------------------------------------------------------------------


def set_aside_to_fetch_again(path: Path, partial_dir: Path, origin: Origin, what: str) -> None:
    """Move a file already in place aside (`reject`) to fetch it again, saying `what` is
    wrong with it and where it went."""
    kept = reject(path, partial_dir, origin.name)
    print(f"source {origin.name!r}: {what}; moved it to {kept} and fetching again", file=sys.stderr)


def reject(path: Path, partial_dir: Path, name: str) -> Path:
    """Move `path` into `<partial_dir>/rejected/<name>/`, over nothing; return where."""
    folder = partial_dir / "rejected" / name
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / path.name, 1
    while target.exists() or target.is_symlink():
        target, n = folder / f"{path.name}.{n}", n + 1
    os.replace(path, target)
    return target


def fetch(
    origin: Origin,
    out_dir: Path,
    partial_dir: Path,
    local_copy: Path | None,
    registry: Path | None = None,
) -> Path:
    """Obtain, verify and place one source file; return its final path.

    A file already in `out_dir` (kept there by `persist`) that still verifies is
    not downloaded again (see `keep_existing`). A verified file is renamed into
    `out_dir`; a file that fails verification, or a first download that is not
    whole, is moved to `<partial_dir>/rejected/<source>/` (never deleted) and the
    stage stops. A transport that fails leaves its partial file in
    `<partial_dir>/<source>/`, where the next run resumes it. What a first
    download learns (size, sha256, Hugging Face commit) is written into `registry`.
    """
    final = out_dir / origin.file
    adopt_old_name(origin, out_dir)
    if final.is_file() and keep_existing(origin, final, partial_dir, local_copy, registry):
        return final
    for stray in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        reject(stray, partial_dir, origin.name)
    staging = partial_dir / origin.name
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / (origin.file + ".part")
    seen, announced = obtain_verified(origin, part, local_copy, registry)
    learned = learned_facts(origin, part.stat().st_size, seen, announced)
    if needs_wholeness_check(origin, learned, announced):
        problem = wholeness_problem(part, origin.file)
        if problem is not None:
            kept = transports.set_aside(part)
            raise StageError(
                not_whole_message(origin, problem, kept, out_dir, local_copy, registry)
            )
    if learned:
        announce_learned(origin, learned, registry)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def obtain_verified(
    origin: Origin, part: Path, local_copy: Path | None, registry: Path | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Write (or resume) `part` from the local copy or the origin's transport and verify
    it; return the digests seen and what the upstream announced. Bytes that fail are set
    aside (never deleted) and the stage stops saying what to do."""
    announced: dict[str, str] = {}
    if local_copy is not None:
        transports.link_or_copy(local_copy, part)
    else:
        announced = transports.obtain(origin.kind, origin.spec, origin, part)
    try:
        seen = verify(part, origin, announced)
    except Mismatch as err:
        kept = transports.set_aside(part)
        raise StageError(mismatch_message(err, origin, kept, local_copy, registry)) from None
    return seen, announced


def fetch_parts(
    origin: Origin,
    out_dir: Path,
    partial_dir: Path,
    local_copy: Path | None,
    registry: Path | None = None,
) -> Path:
    """Obtain, verify and place a source of parts (see `llava_data.parts`); return the
    listing written beside them.

    A glob's parts are named first (`Origin.listed`): by the local folder, the Hub's
    folder, or the last verified listing when it is the pinned one. Parts already in
    `out_dir` are kept; the missing ones are taken (linked, else copied) from the local
    folder (`local:` or the sources.local.yaml line), downloaded from a Hugging Face
    folder, all at one commit (`transports.hf_parts`), or the stage stops with the manual
    step. The parts' total size and listing sha256 are then checked against the registry;
    unpinned, every tar and Parquet part must be whole before both are pinned (with the
    Hub's commit). An optional source this profile leaves out (`use: false`) gets one
    note file instead.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if not origin.use:
        return leave_out(origin, out_dir, partial_dir)
    src = local_source(origin, local_copy)
    origin, hub = name_parts(origin, out_dir, src, local_copy, registry)
    keep = {*origin.parts, parts.SUMS}
    for stray in sorted(out_dir.iterdir()):
        if stray.name not in keep:
            reject(stray, partial_dir, origin.name)
    hashed = keep_hub_parts(origin, hub, out_dir, partial_dir) if hub is not None else {}
    todo = [n for n in origin.parts if not (out_dir / n).is_file()]
    if hub is not None:
        for name in todo:
            hashed[name] = fetch_hub_part(origin, hub, name, out_dir, partial_dir, registry)
    elif todo:
        link_parts(origin, todo, src, out_dir, partial_dir)
    shutil.rmtree(partial_dir / origin.name, ignore_errors=True)
    text = parts.listing(out_dir, origin.parts, hashed)
    size = sum((out_dir / n).stat().st_size for n in origin.parts)
    digest = parts.listing_digest(text)
    from_hub = origin.kind == "hf" and local_copy is None
    check_parts(origin, out_dir, partial_dir, text, size, digest, registry, from_hub)
    announced = {}
    if hub is not None and hub.commit != origin.spec[2]:
        announced["revision"] = hub.commit
    learned = learned_facts(origin, size, {"sha256": digest}, announced)
    if needs_wholeness_check(origin, learned, {}):
        for name in origin.parts:
            problem = parts.part_problem(out_dir / name)
            if problem is not None:
                kept = reject(out_dir / name, partial_dir, origin.name)
                raise StageError(part_not_whole_message(origin, name, problem, kept, src, hub))
    sums = out_dir / parts.SUMS
    with atomic_path(sums) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if learned:
        announce_learned(origin, learned, registry)
    return sums


def name_parts(
    origin: Origin, out_dir: Path, src: Path | None, local_copy: Path | None, registry
) -> tuple[Origin, transports.HubParts | None]:
    """The origin with its parts named, and where they stand on the Hub (None: the Hub is
    not asked). A glob's parts are the local folder's matching files, or the last verified
    listing's when it is the pinned one; an `hf` source asks the Hub (`hub_needed`), which
    names a glob's parts at the one commit every part is taken at, and refuses parts whose
    total or listing the Hub shows is not the pinned one before a byte is downloaded."""
    if origin.by_glob:
        pin = dict(origin.checksums).get("sha256")
        found = parts.folder_names(src) if src is not None else parts.verified_names(out_dir, pin)
        origin = origin.listed(found)
    hub = None
    if origin.kind == "hf" and local_copy is None and hub_needed(origin, out_dir):
        hub = transports.hf_parts(origin, line=entry_lines(registry, origin.name, origin.profile))
        origin = origin.listed(hub.names)
        differs = transports.pin_differences(origin, hub.facts)
        if differs:
            repo, path, _ = origin.spec
            what = (
                f"Hugging Face dataset {repo}, the {len(origin.parts)} files of "
                f"{transports.hf_folder(path) or 'its root'}/ that are its parts, at commit "
                f"{hub.commit},"
            )
            raise transports.not_pinned(origin, what, hub.facts, differs, "as the Hub lists them")
    if not origin.parts:  # a glob that matched nothing on disk
        if src is None:
            raise StageError(transports.manual_instruction(origin, origin.kind, origin.spec))
        raise StageError(
            f"source {origin.name!r}: no file in {src} matches {origin.file!r} "
            f"({origin.where}); put the parts there, or fix `file`, and run "
            f"`dvc repro fetch@{origin.name}`"
        )
    return origin, hub


def hub_needed(origin: Origin, out_dir: Path) -> bool:
    """Whether the Hub must be asked: a glob's parts are not known yet, a part is missing,
    or the registry does not pin the parts yet (so they are compared with the Hub's
    before their size, sha256 and commit are pinned)."""
    missing = any(not (out_dir / n).is_file() for n in origin.parts)
    return not origin.parts or missing or origin.size is None or not origin.checksums


def keep_hub_parts(origin: Origin, hub, out_dir: Path, partial_dir: Path) -> dict[str, str]:
    """Hash the parts already in `out_dir`; move aside (to be downloaded again) those that
    are not the file the Hub lists at the parts' commit (another revision's, or damaged).
    Returns name -> sha256 of the parts kept."""
    hashed = {}
    for name in origin.parts:
        path = out_dir / name
        if not path.is_file():
            continue
        listed, why = hub.file(name), ""
        if listed.size is not None and path.stat().st_size != listed.size:
            why = f"{path.stat().st_size:,} bytes, the Hub lists {listed.size:,}"
        else:
            hashed[name] = file_digest(path)
            if listed.sha256 not in (None, hashed[name]):
                why = f"sha256 {hashed.pop(name)}, the Hub lists {listed.sha256}"
        if why:
            what = f"{path} is not that part at commit {hub.commit} ({why})"
            set_aside_to_fetch_again(path, partial_dir, origin, what)
    return hashed


def fetch_hub_part(
    origin: Origin, hub, name: str, out_dir: Path, partial_dir: Path, registry: Path | None
) -> str:
    """Download (or resume) one part at the parts' commit and place it; return its sha256.

    A transfer that fails leaves its partial file for the next run to resume; bytes that
    are not what the Hub announced (its LFS sha256) are set aside."""
    part = partial_dir / origin.name / (name + ".part")
    seen, _ = obtain_verified(origin.part_origin(name, hub.commit), part, None, registry)
    os.replace(part, out_dir / name)
    return seen["sha256"]


def link_parts(
    origin: Origin, todo: list[str], src: Path | None, out_dir: Path, partial_dir: Path
) -> None:
    """Take the missing parts `todo` from the local folder `src` (linked, else copied), or
    stop with the manual step, or name the parts the folder lacks."""
    if src is None:
        held = len(origin.parts) - len(todo)
        have = f" ({held} of {len(origin.parts)} parts are already in {out_dir})" if held else ""
        raise StageError(transports.manual_instruction(origin, origin.kind, origin.spec) + have)
    missing = [n for n in todo if not (src / n).is_file()]
    if missing:
        raise StageError(
            f"source {origin.name!r}: {len(missing)} of its {len(origin.parts)} parts are "
            f"neither in {out_dir} nor in {src}: {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}. Put them in {src} and run "
            f"`dvc repro fetch@{origin.name}`"
        )
    for name in todo:
        part = partial_dir / origin.name / (name + ".part")
        transports.link_or_copy(src / name, part)
        os.replace(part, out_dir / name)


def part_not_whole_message(
    origin: Origin, name: str, problem: str, kept: Path, src: Path | None, hub
) -> str:
    """The message for a part that is not whole (moved to `kept`); nothing was pinned."""
    again = f"`dvc repro fetch@{origin.name}`"
    text = (
        f"source {origin.name!r}: part {name} is not whole: {problem}. Nothing was pinned; "
        f"the part was moved to {kept} (not deleted). "
    )
    if hub is None:
        return text + f"Put a good copy of {name} in {src} and run {again}"
    return text + (
        f"Run {again} to download it again (at commit {hub.commit}); if it fails the same "
        f"way, the file on the Hub is itself damaged: report it upstream, or list a folder "
        f"of good copies in sources.local.yaml as `{origin.name}: /path/to/{origin.name}/` "
        f"and run {again}"
    )


def check_parts(
    origin: Origin,
    out_dir: Path,
    partial_dir: Path,
    text: str,
    size: int,
    digest: str,
    registry: Path | None,
    from_hub: bool = False,
) -> None:
    """Refuse parts whose total size or listing sha256 is not the registry's, naming the
    parts that changed since the last verified listing. Nothing is moved: the parts stay
    in `out_dir`, and the new listing is kept for comparison."""
    pinned = dict(origin.checksums).get("sha256")
    if origin.size in (None, size) and pinned in (None, digest):
        return
    new = partial_dir / origin.name / (parts.SUMS + ".new")
    new.parent.mkdir(parents=True, exist_ok=True)
    new.write_text(text, encoding="utf-8")
    if origin.size not in (None, size):
        what = f"{size:,} bytes in all, the registry says {origin.size:,}"
    else:
        what = f"a listing with sha256 {digest}, the registry says {pinned}"
    changed = parts.differing(parts.read_listing(out_dir / parts.SUMS), parts.parse_listing(text))
    named = (
        f"Parts that differ from the last verified listing ({out_dir / parts.SUMS}): "
        f"{', '.join(changed)}. "
        if changed
        else f"Compare {new} with `sha256sum` of a good copy to find the part that differs. "
    )
    name, pins = _registry_name(registry), _null_keys(origin, ["size", "sha256"])
    retake = (
        "(the next run downloads it again from the Hub)"
        if from_hub
        else "(the next run takes it again from the local folder), put a good copy there,"
    )
    raise StageError(
        f"source {origin.name!r}: its {len(origin.parts)} parts in {out_dir} have {what} "
        f"({origin.where}). {named}The listing of what is there now is {new}. If the "
        f"registry is right, delete the bad part from {out_dir} {retake} and run `dvc repro "
        f"fetch@{origin.name}`. If the registry is wrong, set {pins} "
        f"back to null in {name} and run it again: it pins what it finds"
    )


def leave_out(origin: Origin, out_dir: Path, partial_dir: Path) -> Path:
    """An optional source left out of this profile: one note file, nothing else (parts
    fetched before are moved aside, never deleted)."""
    note = out_dir / parts.LEFT_OUT
    for stray in sorted(out_dir.iterdir()):
        if stray.name != parts.LEFT_OUT:
            kept = reject(stray, partial_dir, origin.name)
            print(f"source {origin.name!r} is left out: moved {stray} to {kept}", file=sys.stderr)
    with atomic_path(note) as tmp:
        tmp.write_text(
            f"{origin.name}: left out of this profile ({origin.where}.use: false).\n"
            f"Set it to true to use {origin.their_files}.\n",
            encoding="utf-8",
        )
    return note


def adopt_old_name(origin: Origin, out_dir: Path) -> None:
    """A file fetched under one of the entry's `old_names` (e.g. web-landmakr.zip, as one
    download script spelled it) takes the current name, to be verified and kept as usual."""
    final = out_dir / origin.file
    for old in origin.old_names:
        kept = out_dir / old
        if kept.is_file() and not final.exists():
            os.replace(kept, final)
            print(
                f"source {origin.name!r}: {kept} is the file under its old name; renamed it "
                f"to {final.name}",
                file=sys.stderr,
            )


def keep_existing(
    origin: Origin, final: Path, partial_dir: Path, local_copy: Path | None, registry: Path | None
) -> bool:
    """Whether the file already in place is kept; one that is not is moved aside first.

    A file that fails the registry's pins is moved aside. One the registry holds to no
    checksum verifies trivially: it is kept only if it is whole, loudly (which bytes are
    used, whether the local file it came from changed, how to take new bytes), and what
    it shows is pinned as a first download would. No network request is made.
    """
    try:
        seen = verify(final, origin)
    except Mismatch as err:
        kept = reject(final, partial_dir, origin.name)
        print(f"{err}; moved it to {kept} and fetching again", file=sys.stderr)
        return False
    size = final.stat().st_size
    learned = learned_facts(origin, size, seen, {})
    if not learned:
        return True
    problem = wholeness_problem(final, origin.file)
    if problem is not None:
        what = f"the file already fetched, {final}, is not whole: {problem}"
        set_aside_to_fetch_again(final, partial_dir, origin, what)
        return False
    sha = seen["sha256"]
    src = local_source(origin, local_copy)
    changed = local_change(src, final, size, sha) if src is not None else None
    recorded, note = pin(origin, learned, registry)
    text = kept_message(origin, final, size, sha, src, changed, recorded, note, registry)
    print(text, file=sys.stderr)
    return True


def local_change(src: Path, final: Path, size: int, sha: str) -> tuple[int, str] | None:
    """(size, sha256) of the local file `src` if its bytes differ from the kept file's
    (`size`, `sha`), else None. Sizes are compared first; `src` is hashed only when they
    match, or to report how it differs."""
    try:
        st = src.stat()
        if os.path.samestat(st, final.stat()):
            return None
    except OSError:
        return None  # gone or unreadable: nothing to compare with
    if st.st_size == size:
        theirs = file_digest(src)
        return None if theirs == sha else (st.st_size, theirs)
    return st.st_size, file_digest(src)


def kept_message(
    origin: Origin,
    final: Path,
    size: int,
    sha: str,
    src: Path | None,
    changed: tuple[int, str] | None,
    recorded: dict,
    note: str,
    registry: Path | None = None,
) -> str:
    """What a kept file that the registry held to no checksum tells the user."""
    text = (
        f"WARNING: source {origin.name!r}: {origin.where} pins no checksum, so the file already "
        f"fetched is used as it is, without comparing it with its origin: {final} "
        f"({size:,} bytes, sha256 {sha})."
    )
    if changed is not None:
        text += (
            f" The local file {src} changed since it was fetched: it now has {changed[0]:,} "
            f"bytes, sha256 {changed[1]}, the kept file {size:,} bytes, sha256 {sha}. The kept "
            f"bytes are used until you delete {final}."
        )
    text += f" {note}"
    undo = ""
    if recorded:
        undo = f", set {_null_keys(origin, recorded)} back to null in {registry}"
    return text + (
        f" To take the origin's current bytes instead, delete {final}{undo} and run "
        f"`dvc repro fetch@{origin.name}`."
    )


def pin(
    origin: Origin, learned: dict, registry: Path | None, listed: bool = False
) -> tuple[dict, str]:
    """Write what was learned into the registry; return what was recorded and a sentence
    saying where it went (or what to record by hand; `listed`: the message already says
    what was learned, in the registry's terms)."""
    recorded: dict = {}
    why = ""
    if registry is not None:
        try:
            recorded = record(registry, origin.name, origin.profile, learned)
        except StageError as err:
            why = f" ({err})"
    rest = {k: v for k, v in learned.items() if k not in recorded}
    done = ""
    if recorded:
        what = "" if not rest else f" {_facts(recorded)}"
        done = (
            f"Recorded{what} in {registry} ({origin.where}): commit that change so every "
            f"later run and every teammate is held to it."
        )
    if rest:
        what = "it" if listed and not recorded else _facts(rest)
        done += (
            f"{' ' if done else ''}Record {what} by hand as {origin.where}{why} so every later "
            f"run is held to it."
        )
    return recorded, done


def _facts(learned: dict) -> str:
    return ", ".join(f"{'hf.' if k == 'revision' else ''}{k}: {v}" for k, v in learned.items())


def announce_learned(origin: Origin, learned: dict, registry: Path | None) -> None:
    """Record what a first download established in the registry, and say so loudly."""
    _, done = pin(origin, learned, registry, listed=True)
    print(
        f"WARNING: source {origin.name!r} was not pinned in the registry; this download has "
        f"{_facts(learned)}. {done}",
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, help="params file holding `sources`")
    ap.add_argument("--source", required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--out", required=True, type=Path, help="folder that receives the file")
    ap.add_argument("--partial", required=True, type=Path, help="where partial downloads live")
    ap.add_argument("--local-copies", type=Path, help="YAML: source name -> existing file")
    ap.add_argument(
        "--mirrors", type=Path, help="YAML (per machine): URL prefix -> the base to use instead"
    )
    args = ap.parse_args(argv)

    entry = load_params(args.registry, f"sources.{args.source}")
    origin = Origin.parse(args.source, entry, args.profile)
    local = local_copy_for(args.source, args.local_copies, folder=origin.has_parts)
    transports.use_mirrors(args.mirrors)
    run = fetch_parts if origin.has_parts else fetch
    run(origin, args.out, args.partial, local, Path(args.registry))


if __name__ == "__main__":
    sys.exit(run_main(main))
