"""Where each source comes from in a profile (`sources.<name>.<profile>` of the registry).

`Origin` is one source's entry, validated before any I/O: its kind (local, url, hf,
gdrive, manual), what verifies the file, what its content is expected to hold and how
surely each fact is known. A source of parts (a local or Hub folder, a manual step) names
its files by a pattern (`file: "sa_{:06d}.tar"`, `parts: [0, 50]`) or a glob (`file:
"test-*.parquet"`, `parts: glob`), whose parts are known once a folder is listed
(`Origin.listed`). `local_copies` reads the per-machine `sources.local.yaml`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from llava_data import parts as parts_of
from llava_data import transports
from llava_data.common import StageError

KINDS = ("local", "url", "hf", "gdrive", "manual")
PARTS_KINDS = ("local", "hf", "manual")  # the kinds that can hold a source of parts
GLOB = "glob"  # `parts: glob`: the parts are the files matching `file`, a glob with `*`
HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}
RECORDABLE = ("size", "sha256")  # what a first download pins (with the Hub revision)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
ZIP_CHUNK = 1 << 20


# How surely a pinned fact is known: read on the primary page, from a mirror (or a user's
# listing, third-party code), or inferred. A fact without a `known` entry is published.
CONFIDENCE = ("published", "mirror", "assumed")
FACTS = (
    "size",
    "sha256",
    "md5",
    "revision",
    "shown_size",
    "sha256_prefix",
    "records",
    "files",
)
# A size as a page shows it: a number and its unit, SI (kB, MB, GB, TB: powers of 1000, as
# the Hugging Face Hub shows sizes) or binary (KiB, MiB, GiB, TiB: powers of 1024).
UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
SHOWN = re.compile(r"(\d+(?:\.\d+)?) (" + "|".join(UNITS) + ")")
PREFIX = re.compile(r"[0-9a-f]{6,63}")


def shown_bytes(where: str, text: object) -> int | None:
    """The bytes a shown size such as "30.2 GB" or "7.3 GiB" stands for (None: none shown)."""
    if text is None:
        return None
    match = SHOWN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise StageError(
            f"{where}: shown_size must be a number and its unit as the page shows it, e.g. "
            f'"30.2 GB" (SI: kB, MB, GB, TB) or "7.3 GiB" (binary: KiB, MiB, GiB, TiB); got '
            f"{text!r}"
        )
    return round(float(match[1]) * UNITS[match[2]])


def _count(where: str, key: str, value: object) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise StageError(f"{where}: {key} must be a whole number >= 0 or null, got {value!r}")
    return value


@dataclass(frozen=True)
class Origin:
    """Where one source comes from in one profile, validated before any I/O.

    Besides what verifies the file (size, checksums), an origin may say what is expected of
    its content (`records` of an annotation file, `files` per layout tree of an archive), a
    page's shown size (`shown_size`, e.g. "30.2 GB", for planning disk space only; its bytes
    are `approx_size`), the first hex digits of a sha256 that only a truncated listing gives
    (`sha256_prefix`, checked once the file is downloaded) and how surely each of these
    facts is known (`known`: fact -> published | mirror | assumed).
    """

    name: str
    file: str
    kind: str
    spec: object
    size: int | None
    checksums: tuple[tuple[str, str], ...]
    profile: str = "<profile>"
    approx_size: int | None = None
    records: int | None = None
    files: tuple[tuple[str, int], ...] = ()
    known: tuple[tuple[str, str], ...] = ()
    shown_size: str | None = None
    sha256_prefix: str | None = None
    old_names: tuple[str, ...] = ()  # other names a copy of the file may carry
    parts: tuple[str, ...] = ()  # a source of many files (`file` a pattern): their names
    use: bool = True  # false: an optional source this profile leaves out
    by_glob: bool = False  # `file` a glob (`parts: glob`): `parts` are known once listed

    @property
    def has_parts(self) -> bool:
        """Whether this is a source of parts (named by a pattern, or by a glob)."""
        return bool(self.parts) or self.by_glob

    @property
    def shown_file(self) -> str:
        """The file name, or for a source of parts its first and last part (a glob's
        parts not listed yet: the glob)."""
        if len(self.parts) > 1:
            return f"{self.parts[0]} … {self.parts[-1]} ({len(self.parts)} files)"
        if self.parts:
            return self.parts[0]
        return f"{self.file} (the files matching it)" if self.by_glob else self.file

    @property
    def their_files(self) -> str:
        """How a message names the parts: "its 3 files (…)", or for a glob not listed yet
        "the files matching test-*.parquet"."""
        if self.parts:
            return f"its {len(self.parts)} files ({self.shown_file})"
        return f"the files matching {self.file}"

    def listed(self, names) -> Origin:
        """This origin with its parts named: for a glob, the `names` a listing found (a
        folder's, the Hub's, the last verified SHA256SUMS) that match it, sorted by name;
        a pattern's parts are its own, whatever was listed. The one place where a glob's
        parts become known."""
        if not self.by_glob:
            return self
        return dataclasses.replace(self, parts=parts_of.matching(self.file, names))

    def part_origin(self, name: str, revision: str | None) -> Origin:
        """One part of an `hf` source of parts as an origin of its own, at `revision`, for
        the transports: it pins nothing itself (the source's pins are its parts' total and
        their listing's sha256), so what the Hub announces of the part is what holds it."""
        repo, path, _ = self.spec
        spec = (repo, transports.hf_part_path(transports.hf_folder(path), name), revision)
        return dataclasses.replace(
            self,
            file=name,
            spec=spec,
            size=None,
            checksums=(),
            sha256_prefix=None,
            known=(),
            parts=(),
            by_glob=False,
        )

    def confidence(self, fact: str) -> str:
        """How surely `fact` is known (published when the registry does not say)."""
        return dict(self.known).get(fact, "published")

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
        unknown = set(origin) - set(KINDS) - (set(FACTS) - {"revision"}) - {"known"}
        unknown -= {"parts", "use"}
        if unknown:
            raise StageError(f"{where}: unknown keys {sorted(unknown)}")
        size = _count(where, "size (bytes)", origin.get("size"))
        shown = origin.get("shown_size")
        approx = shown_bytes(where, shown)
        prefix = origin.get("sha256_prefix")
        if prefix is not None and (not isinstance(prefix, str) or not PREFIX.fullmatch(prefix)):
            raise StageError(
                f"{where}: sha256_prefix must be 6 to 63 lowercase hex digits (a whole sha256 "
                f"goes in `sha256`), got {prefix!r}"
            )
        records = _count(where, "records", origin.get("records"))
        files = origin.get("files") or {}
        if not isinstance(files, dict):
            raise StageError(f"{where}: files must map layout trees to file counts")
        for tree, count in files.items():
            _count(where, f"files.{tree}", count)
        known = origin.get("known") or {}
        if not isinstance(known, dict):
            raise StageError(f"{where}: known must map facts to {', '.join(CONFIDENCE)}")
        for fact, how in known.items():
            if fact not in FACTS or how not in CONFIDENCE:
                raise StageError(
                    f"{where}: known.{fact}: {how!r}; facts are {', '.join(FACTS)}, each "
                    f"{', '.join(CONFIDENCE)}"
                )
        checksums = []
        for algo, pattern in HEX.items():
            value = origin.get(algo)
            if value is None:
                continue
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise StageError(f"{where}: {algo} must be lowercase hex, got {value!r}")
            checksums.append((algo, value))
        old_names = entry.get("old_names") or []
        if not isinstance(old_names, list) or not all(
            isinstance(n, str) and n and "/" not in n for n in old_names
        ):
            raise StageError(f"{where}: old_names must be a list of plain file names")
        kind = kinds[0]
        by_glob = origin.get("parts") == GLOB
        if by_glob:
            glob_check(where, file)
        parts = () if by_glob else part_names(where, file, origin.get("parts"))
        use = origin.get("use", True)
        if not isinstance(use, bool):
            raise StageError(f"{where}: use must be true or false, got {use!r}")
        if (parts or by_glob) and kind not in PARTS_KINDS:
            raise StageError(
                f"{where}: a source of parts comes from a folder on disk (local), a folder of a "
                f"Hugging Face dataset (hf) or a manual step, not {kind}"
            )
        if not use and not (parts or by_glob):
            raise StageError(f"{where}: only a source of parts can be left out (use: false)")
        spec = transports.parse_spec(where, kind, origin[kind])
        if kind == "hf" and (parts or by_glob):
            hf_parts_path(where, file, spec[1])
        return cls(
            name,
            file,
            kind,
            spec,
            size,
            tuple(checksums),
            profile,
            approx,
            records,
            tuple(sorted(files.items())),
            tuple(sorted(known.items())),
            shown,
            prefix,
            tuple(old_names),
            parts,
            use,
            by_glob,
        )

    @property
    def where(self) -> str:
        """The registry key of this origin."""
        return f"sources.{self.name}.{self.profile}"


def part_names(where: str, file: str, raw: object) -> tuple[str, ...]:
    """The names of a source of parts: `file` a pattern with one integer field such as
    `sa_{:06d}.tar`, `parts` the first and last number, both included."""
    fields = [f for _, f, _, _ in string.Formatter().parse(file) if f is not None]
    if "*" in file:
        raise StageError(
            f"{where}: `file` {file!r} is a glob: give `parts: glob` (its parts are the files "
            f"matching it), or name them by a pattern such as test-{{:05d}}.parquet with "
            f"`parts: [first, last]`"
        )
    if raw is None:
        if fields:
            raise StageError(f"{where}: `file` {file!r} is a pattern: give `parts: [first, last]`")
        return ()
    ok = isinstance(raw, list) and len(raw) == 2
    ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in raw)
    if not ok or raw[0] > raw[1]:
        raise StageError(
            f"{where}: parts must be [first, last], whole numbers, or `glob` (with `file` a "
            f"glob such as test-*.parquet), got {raw!r}"
        )
    if fields != [""]:
        raise StageError(
            f"{where}: a source of parts names its files with one field, e.g. sa_{{:06d}}.tar; "
            f"got {file!r}"
        )
    try:
        names = tuple(file.format(n) for n in range(raw[0], raw[1] + 1))
    except (ValueError, IndexError) as err:
        raise StageError(f"{where}: `file` {file!r} cannot name a part ({err})") from None
    if len(set(names)) != len(names) or any("/" in n for n in names):
        raise StageError(f"{where}: `file` {file!r} must give each part its own plain name")
    return names


def glob_check(where: str, file: str) -> None:
    """Refuse a `file` that cannot be a glob of parts (`parts: glob`)."""
    if "*" not in file:
        raise StageError(
            f"{where}: `parts: glob` takes the files matching `file`, a glob with `*` such as "
            f"test-*.parquet, but {file!r} has no `*`; give it one, or name the parts by a "
            f"pattern (e.g. test-{{:05d}}.parquet) with `parts: [first, last]`"
        )
    if any(c in file for c in "{}?["):
        raise StageError(
            f"{where}: a glob of parts has `*` for any characters and nothing else special; "
            f"{file!r} also has {{}}, ? or [ (a pattern's field is `parts: [first, last]`'s)"
        )


def hf_parts_path(where: str, file: str, path: str) -> None:
    """Refuse an `hf.path` of parts that is not `file` under a plain folder."""
    folder, _, base = path.rpartition("/")
    if base != file:
        raise StageError(
            f"{where}: hf.path of a source of parts is its folder and `file`, e.g. "
            f'"data/{file}"; got {path!r}, whose base name is not `file` ({file!r})'
        )
    if any(c in folder for c in "*{}?[") or folder.startswith("/") or "//" in path:
        raise StageError(
            f"{where}: the folder of hf.path ({folder!r}) must be a plain path in the "
            f"repository: only the file name may be a pattern or a glob"
        )


def local_copies(overrides: Path | None) -> dict[str, Path]:
    """Source name -> the copy listed in the (uncommitted) overrides file, `~` expanded."""
    if overrides is None or not overrides.exists():
        return {}
    try:
        table = yaml.safe_load(overrides.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise StageError(f"{overrides} cannot be read as YAML ({err}); fix it") from None
    if not isinstance(table, dict):
        raise StageError(f"{overrides} must map source names to paths, e.g. `webdata: /data/W.zip`")
    return {str(k): Path(os.path.expanduser(str(v))) for k, v in table.items()}


def local_copy_for(name: str, overrides: Path | None, folder: bool = False) -> Path | None:
    """The path of an existing copy of `name` listed in the (uncommitted) overrides file:
    a file, or with `folder` (a source of parts) the folder holding the parts."""
    path = local_copies(overrides).get(name)
    if path is None:
        return None
    if not (path.is_dir() if folder else path.is_file()):
        what = "a folder (of the source's parts)" if folder else "a file"
        raise StageError(
            f"source {name!r}: {overrides} points at {path}, which is not {what}; fix that "
            f"line, or remove it to download from the origin, and run `dvc repro fetch@{name}`"
        )
    return path
