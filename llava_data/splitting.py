"""Split an annotation file into the parts it was mixed from (`splits.<name>` of the params).

A split names the part of every record by the strongest evidence there is, in this order:

1. `rules`, tried in order, the first that matches wins. A rule names its `part` and any
   of these conditions, all of which must hold:
   - `shared_with: <reference>`: the record equals one of that upstream file's records
     (its canonical form), once `image_prefix` is put before the reference's image paths;
   - `prefix: <p> | [<p>, ...]`: the (first) image path starts with one of them;
   - `prompt: <text> | [<text>, ...]`: a human turn holds one of these texts;
   - `min_rounds` / `max_rounds`: the number of human turns is at least / at most this;
   - `text_only: true | false`: the record has no image (or has one).
2. `text_only`: the part of the records without an image that no rule took.
3. `prefixes`: image-path prefix -> part, the longest matching prefix wins.

A record none of these places stops the split with the unknown folders listed (see
`mixcore.assign_components`). `published` (optional) holds each part's published record
count per profile (the miniature's are its own): the metrics then show measured against
published, so a full build says whether the split is exact. The split's index
(`save_index`) keeps every record's byte span, id, digest and part, for the mix stage.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from llava_data import jsonscan, mixcore
from llava_data.common import StageError, atomic_path

PROFILES = ("full", "mini")
RULE_KEYS = (
    "part",
    "shared_with",
    "image_prefix",
    "prefix",
    "prompt",
    "min_rounds",
    "max_rounds",
    "text_only",
)


def _texts(where: str, value: object) -> tuple[str, ...]:
    """One text or a list of texts, every one non-empty."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) and t for t in items):
        raise StageError(f"{where}: expected a text or a list of texts, got {value!r}")
    return tuple(items)


def _rounds(where: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StageError(f"{where}: expected a whole number >= 0, got {value!r}")
    return value


def _part_name(where: str, value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or "." in value:
        raise StageError(f"{where}: a part name (no '/' or '.'), got {value!r}")
    return value


@dataclass(frozen=True)
class Rule:
    """One rule of a split: the part it names and the conditions a record must meet."""

    part: str
    shared_with: str | None = None
    image_prefix: str = ""
    prefixes: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    min_rounds: int | None = None
    max_rounds: int | None = None
    text_only: bool | None = None

    @classmethod
    def parse(cls, where: str, raw: object) -> Rule:
        if not isinstance(raw, dict):
            raise StageError(f"{where}: a rule is a mapping with `part` and its conditions")
        unknown = sorted(set(raw) - set(RULE_KEYS), key=str)
        if unknown:
            raise StageError(f"{where}: unknown key(s) {unknown}; a rule may hold {RULE_KEYS}")
        text_only = raw.get("text_only")
        if text_only is not None and not isinstance(text_only, bool):
            raise StageError(f"{where}.text_only: true or false, got {text_only!r}")
        shared = raw.get("shared_with")
        if shared is not None and (not isinstance(shared, str) or not shared):
            raise StageError(f"{where}.shared_with: the name of a reference file, got {shared!r}")
        image_prefix = raw.get("image_prefix", "")
        if not isinstance(image_prefix, str) or (image_prefix and shared is None):
            raise StageError(f"{where}.image_prefix: a text, and only with shared_with")
        rule = cls(
            part=_part_name(f"{where}.part", raw.get("part")),
            shared_with=shared,
            image_prefix=image_prefix,
            prefixes=_texts(f"{where}.prefix", raw["prefix"]) if "prefix" in raw else (),
            prompts=_texts(f"{where}.prompt", raw["prompt"]) if "prompt" in raw else (),
            min_rounds=_rounds(f"{where}.min_rounds", raw.get("min_rounds")),
            max_rounds=_rounds(f"{where}.max_rounds", raw.get("max_rounds")),
            text_only=text_only,
        )
        if text_only and (rule.prefixes or rule.image_prefix):
            raise StageError(f"{where}: a text-only rule cannot ask for an image prefix")
        return rule

    @property
    def needs_turns(self) -> bool:
        return bool(self.prompts) or self.min_rounds is not None or self.max_rounds is not None

    def describe(self) -> str:
        """The evidence this rule stands for, as the metrics show it."""
        bits = []
        if self.shared_with:
            bits.append(f"shared with {self.shared_with}")
        if self.text_only is not None:
            bits.append("text only" if self.text_only else "with an image")
        if self.prefixes:
            bits.append("image under " + " or ".join(self.prefixes))
        if self.prompts:
            bits.append("prompt " + " or ".join(repr(p.strip()) for p in self.prompts))
        if self.min_rounds is not None:
            bits.append(f">= {self.min_rounds} rounds")
        if self.max_rounds is not None:
            bits.append(f"<= {self.max_rounds} rounds")
        return ", ".join(bits) or "every record"


@dataclass(frozen=True)
class SplitSpec:
    """`splits.<name>`: its rules, text-only part, prefix map and published counts."""

    name: str
    rules: tuple[Rule, ...]
    text_only: str | None
    prefixes: dict[str, str]
    published: dict[str, dict[str, int]]  # profile -> part -> published record count

    @classmethod
    def parse(cls, name: str, raw: object) -> SplitSpec:
        where = f"params.yaml: splits.{name}"
        if not isinstance(raw, dict):
            raise StageError(f"{where}: expected a mapping (rules, text_only, prefixes)")
        unknown = sorted(set(raw) - {"rules", "text_only", "prefixes", "published"}, key=str)
        if unknown:
            raise StageError(f"{where}: unknown key(s) {unknown}")
        rules_raw = raw.get("rules") or []
        if not isinstance(rules_raw, list):
            raise StageError(f"{where}.rules: a list of rules")
        rules = tuple(Rule.parse(f"{where}.rules[{i}]", r) for i, r in enumerate(rules_raw))
        text_only = raw.get("text_only")
        if text_only is not None:
            text_only = _part_name(f"{where}.text_only", text_only)
        prefixes = raw.get("prefixes") or {}
        if not isinstance(prefixes, dict):
            raise StageError(f"{where}.prefixes: a mapping of image-path prefixes to parts")
        for prefix, part in prefixes.items():
            if not isinstance(prefix, str) or not prefix.endswith("/"):
                raise StageError(f"{where}.prefixes key {prefix!r} must end with '/'")
            _part_name(f"{where}.prefixes.{prefix}", part)
        if not rules and not prefixes and text_only is None:
            raise StageError(f"{where}: give rules, text_only or prefixes")
        published = raw.get("published") or {}
        if not isinstance(published, dict) or not all(
            profile in PROFILES and isinstance(counts, dict)
            for profile, counts in published.items()
        ):
            raise StageError(
                f"{where}.published: per profile ({', '.join(PROFILES)}), part -> record count"
            )
        spec = cls(name, rules, text_only, dict(prefixes), {})
        for profile, counts in published.items():
            for part, count in counts.items():
                at = f"{where}.published.{profile}.{part}"
                if part not in spec.parts:
                    raise StageError(f"{at}: not a part of this split")
                if _rounds(at, count) is None:
                    raise StageError(f"{at}: a record count")
        return cls(
            name, rules, text_only, dict(prefixes), {k: dict(v) for k, v in published.items()}
        )

    @property
    def parts(self) -> list[str]:
        """Every part name, sorted."""
        named = {r.part for r in self.rules} | set(self.prefixes.values())
        return sorted(named | ({self.text_only} if self.text_only else set()))

    @property
    def references(self) -> list[str]:
        return sorted({r.shared_with for r in self.rules if r.shared_with})


def parse_splits(raw: object) -> dict[str, SplitSpec]:
    """`splits` of the params: name -> SplitSpec."""
    if not isinstance(raw, dict) or not raw:
        raise StageError("params.yaml: `splits` must map split names to their rules")
    return {str(name): SplitSpec.parse(str(name), spec) for name, spec in raw.items()}


def reference_digests(index: jsonscan.RecordIndex, image_prefix: str) -> set[bytes]:
    """The digests the records of a reference file would have with `image_prefix` before
    their image paths (the same canonical form and hash as `jsonscan.scan`)."""

    def prefixed(obj: dict) -> dict:
        image = obj.get("image")
        if isinstance(image, str):
            obj["image"] = image_prefix + image
        elif isinstance(image, list) and all(isinstance(i, str) for i in image):
            obj["image"] = [image_prefix + i for i in image]
        return obj

    out = set()
    for _, obj in jsonscan.iter_records(index, range(len(index))):
        if type(obj.get("id")) is int:
            obj["id"] = str(obj["id"])
        text = orjson.dumps(prefixed(obj) if image_prefix else obj)
        out.add(jsonscan.record_digest(text))
    return out


def _turns(obj: dict) -> list[str] | None:
    """The human turns' texts of a parsed record (None when it has no usable conversations)."""
    conv = obj.get("conversations")
    if not isinstance(conv, list):
        return None
    return [
        t["value"]
        for t in conv
        if isinstance(t, dict) and t.get("from") == "human" and isinstance(t.get("value"), str)
    ]


def first_image(image: object) -> str | None:
    if isinstance(image, str):
        return image
    if type(image) is tuple and image and isinstance(image[0], str):
        return image[0]
    return None


def assign(
    spec: SplitSpec,
    index: jsonscan.RecordIndex,
    references: Mapping[str, set[bytes]],
    load: Callable[[Sequence[int]], list[dict]] | None = None,
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """(part name of every record, evidence: part -> {what placed it: count}).

    `references` holds the digests of each `shared_with` file (`reference_digests`);
    `load(rows)` parses records, needed only by rules that read turns (it defaults to
    reading them from the index's file).
    """
    n = len(index)
    out = np.empty(n, dtype=object)
    placed = np.zeros(n, dtype=bool)
    evidence: dict[str, dict[str, int]] = {}

    def note(part: str, what: str, count: int) -> None:
        if count:
            slot = evidence.setdefault(part, {})
            slot[what] = slot.get(what, 0) + count

    if spec.rules:
        missing = [r for r in spec.references if r not in references]
        if missing:
            raise StageError(f"split {spec.name}: no reference file given for {missing}")
        if load is None:

            def load(rows):
                return [obj for _, obj in jsonscan.iter_records(index, rows)]

        first = [first_image(i) for i in index.images]
        has_image = np.array([f is not None for f in first], dtype=bool)
        digests = index.digests
        turns: dict[int, list[str] | None] = {}
        for k, rule in enumerate(spec.rules):
            cand = np.flatnonzero(~placed)
            if rule.text_only is not None:
                cand = cand[~has_image[cand]] if rule.text_only else cand[has_image[cand]]
            if rule.prefixes:
                cand = np.array(
                    [i for i in cand.tolist() if first[i] and first[i].startswith(rule.prefixes)],
                    dtype=np.int64,
                )
            if rule.shared_with and cand.size:
                if digests is None:
                    raise StageError(f"split {spec.name}: shared_with needs a scan with digests")
                ref = references[rule.shared_with]
                cand = np.array(
                    [i for i in cand.tolist() if digests[i].tobytes() in ref], dtype=np.int64
                )
            if rule.needs_turns and cand.size:
                todo = [i for i in cand.tolist() if i not in turns]
                for i, obj in zip(todo, load(todo), strict=True):
                    turns[i] = _turns(obj)
                cand = np.array([i for i in cand.tolist() if _meets(rule, turns[i])], np.int64)
            out[cand] = rule.part
            placed[cand] = True
            note(rule.part, f"rule {k + 1}: {rule.describe()}", int(cand.size))
    rest = np.flatnonzero(~placed)
    if rest.size:
        images = [index.images[i] for i in rest.tolist()]
        if spec.text_only is None:
            lone = [
                i
                for i, image in zip(rest.tolist(), images, strict=True)
                if image is None or image is jsonscan.INVALID_IMAGE
            ]
            if lone:
                raise StageError(
                    f"split {spec.name}: {len(lone)} text-only records no rule places, e.g. "
                    f"id {index.ids[lone[0]]!r}; give the split a `text_only` part"
                )
        names = mixcore.assign_components(
            images,
            spec.prefixes,
            spec.text_only or "",
            ids=[index.ids[i] for i in rest.tolist()],
        )
        out[rest] = names
        for part in sorted(set(names.tolist())):
            where = names == part
            no_image = np.array([images[j] is None for j in np.flatnonzero(where)])
            note(part, "text only", int(no_image.sum()))
            note(part, "image prefix", int((~no_image).sum()))
    return out, evidence


def _meets(rule: Rule, turns: list[str] | None) -> bool:
    if turns is None:
        return False
    if rule.min_rounds is not None and len(turns) < rule.min_rounds:
        return False
    if rule.max_rounds is not None and len(turns) > rule.max_rounds:
        return False
    return not rule.prompts or any(p in t for t in turns for p in rule.prompts)


# ---- the index the mix stage reads --------------------------------------------------------


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (np.load reads it) whose bytes depend only on the arrays.

    np.savez writes zip64 headers whose fields vary between Python patch releases, so two
    machines would hash the same index differently: here every member is stored with
    fixed metadata.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr = 3, 0o100644 << 16
            zf.writestr(info, buf.getvalue())


def save_index(
    path: Path, index: jsonscan.RecordIndex, codes: np.ndarray, names: list[str]
) -> None:
    """The record index the mix stage reads: source, spans, ids, images, digests and part
    codes."""
    ids = [i.encode("utf-8") for i in index.ids]
    images = [image_field(i).encode("utf-8") for i in index.images]
    save_npz(
        path,
        {
            "source": np.array(Path(index.path).as_posix()),
            "offsets": index.offsets,
            "lengths": index.lengths,
            "id_was_int": index.id_was_int,
            "ids_blob": np.frombuffer(b"".join(ids), dtype=np.uint8),
            "ids_len": np.array([len(i) for i in ids], dtype=np.int64),
            "images_blob": np.frombuffer(b"".join(images), dtype=np.uint8),
            "images_len": np.array([len(i) for i in images], dtype=np.int64),
            "digests": index.digests,
            "canonical_lengths": index.canonical_lengths,
            "is_canonical": index.is_canonical,
            "file_size": np.int64(index.file_size),
            "components": codes,
            "component_names": np.array(names),
        },
    )


def image_field(image: object) -> str:
    """A record's image paths as one string, NUL between two (no path holds a NUL); ""
    for a record without a valid image field."""
    if isinstance(image, str):
        return image
    return "\0".join(image) if isinstance(image, tuple) else ""


class LazyIds(Sequence):
    """The ids of an index, decoded from its blob only when one is asked for (a recipe
    needs the ids of the records it reports, not of the million it writes)."""

    def __init__(self, blob: bytes, lengths: np.ndarray):
        self.blob = blob
        self.ends = np.cumsum(lengths)

    def __len__(self) -> int:
        return int(self.ends.size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        start = int(self.ends[i - 1]) if i else 0
        return self.blob[start : int(self.ends[i])].decode("utf-8")


class LazyImages(LazyIds):
    """The images of an index's records as the scan gives them: a path, a tuple of paths
    (a multi-image record) or None, decoded only when asked for."""

    def __getitem__(self, i):
        text = super().__getitem__(i)
        if isinstance(text, list):
            return [self._field(t) for t in text]
        return self._field(text)

    @staticmethod
    def _field(text: str):
        if not text:
            return None
        return tuple(text.split("\0")) if "\0" in text else text


@dataclass
class SplitIndex:
    """A split's index as the mix stage reads it: the records and the part of each."""

    index: jsonscan.RecordIndex
    codes: np.ndarray
    parts: list[str]

    def rows_of(self, part: str) -> np.ndarray:
        """The record numbers of `part`, in file order."""
        return np.flatnonzero(self.codes == self.parts.index(part))


def load_index(path: Path) -> SplitIndex:
    """What `save_index` wrote; the source file it indexes is checked to be unchanged."""
    try:
        npz = np.load(path)
    except (OSError, ValueError) as err:
        raise StageError(f"{path} cannot be read ({err}); run its split stage again") from None
    with npz:
        source = Path(str(npz["source"]))
        index = jsonscan.RecordIndex(
            path=source,
            offsets=npz["offsets"],
            lengths=npz["lengths"],
            ids=LazyIds(npz["ids_blob"].tobytes(), npz["ids_len"]),
            id_was_int=npz["id_was_int"],
            images=LazyImages(npz["images_blob"].tobytes(), npz["images_len"]),
            digests=npz["digests"],
            canonical_lengths=npz["canonical_lengths"],
            is_canonical=npz["is_canonical"],
            file_size=int(npz["file_size"]),
        )
        codes, names = npz["components"], [str(n) for n in npz["component_names"]]
    if not source.is_file() or source.stat().st_size != index.file_size:
        raise StageError(
            f"{path} indexes {source}, which is missing or changed since; run "
            f"`dvc repro` (it fetches the file and splits it again)"
        )
    return SplitIndex(index, codes, names)
