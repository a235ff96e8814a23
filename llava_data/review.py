"""Review a data change: one Markdown report of what HEAD (or the workspace) does to the data.

`make review BASE=<rev>` (`python -m llava_data.review --base <rev>`) compares two versions
of this repository with git and DVC alone, rebuilding nothing:
- what was asked: params.yaml's changes in words, sources.yaml's per source;
- what it does: records per recipe and part, drop reasons, records per split and
  prepared file, images per tree, the composition chart before and after (an SVG);
- which outputs changed, per stage, from the two dvc.lock (sizes and file counts), and
  which stages' dependencies changed while their outputs did not;
- which records changed in each changed training file: added, removed, reordered, with
  examples, from a streaming diff of the two files (`llava_data.recdiff`) read from the
  DVC cache, fetched from the team remote when missing;
- the warnings a reviewer needs: a pin or licence changed, a checksum removed, a count off
  its published count, a dvc.lock that is not what dvc.yaml and the params produce,
  outputs missing from the remote.
What could not be compared (a file not at one side, an object in neither the cache nor the
remote, no remote to ask) is said so in "Not compared".

The side compared with BASE is the workspace by default (after `dvc repro` or `dvc exp
run`), or a commit (`--head`). The report (report.md) and the charts go to `--out`; the
report is also printed.
"""

from __future__ import annotations

import argparse
import html
import json
import subprocess
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from llava_data import recdiff
from llava_data.common import StageError, atomic_path, run_main

MARKER = "<!-- llava-data review -->"
# s3fs leaves a coroutine behind when the remote check fails; it is not the user's concern
warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
STEPS = ("published", "after_weights", "after_decontamination", "after_validation")
STEP_WORDS = {
    "published": "published",
    "after_weights": "after amounts",
    "after_decontamination": "after decontamination",
    "after_validation": "after validation",
}
# what a recipe's metrics count besides its records (llava_data.audit), in words
AUDIT_WORDS = {
    "decontaminated": "left out by decontamination",
    "duplicates": "duplicate images",
    "overlap": "evaluation overlap",
}
PINS = ("revision", "sha256", "md5", "size", "sha256_prefix")
CHECKSUMS = ("sha256", "md5")
# the dvc beside this interpreter (the environment's), else the one on PATH
DVC = (
    str(Path(sys.executable).with_name("dvc"))
    if Path(sys.executable).with_name("dvc").exists()
    else "dvc"
)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: dvc.lock loads 10x faster


def load_yaml(data: str | bytes) -> Any:
    return yaml.load(data, Loader=_LOADER)  # noqa: S506 - a safe loader


# ---- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """params.yaml `review`: examples per kind of change, tolerance of a published count."""

    examples: int = 3
    tolerance: float = 0.02

    @classmethod
    def parse(cls, raw: object) -> Settings:
        raw = {} if raw is None else raw
        if not isinstance(raw, dict) or set(raw) - {"examples", "tolerance"}:
            raise StageError(
                "params.yaml: `review` must be a mapping of `examples` (a count) and "
                "`tolerance` (a fraction, e.g. 0.02)"
            )
        examples, tolerance = raw.get("examples", cls.examples), raw.get("tolerance", 0.02)
        if type(examples) is not int or examples < 0:
            raise StageError(f"params.yaml: review.examples must be a count >= 0, not {examples!r}")
        if type(tolerance) not in (int, float) or not 0 <= tolerance < 1:
            raise StageError(
                f"params.yaml: review.tolerance must be a fraction in [0, 1), not {tolerance!r}"
            )
        return cls(examples, float(tolerance))


# ---- the two sides -------------------------------------------------------------------------


def git(root: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise StageError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Side:
    """One version of the repository: a commit, or the workspace (rev None)."""

    label: str
    rev: str | None
    root: Path
    commit: str | None = None
    _cache: dict = field(default_factory=dict)

    @classmethod
    def at(cls, root: Path, rev: str | None) -> Side:
        if rev is None:
            return cls("workspace", None, root)
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise StageError(
                f"{rev!r} is not a commit of this repository; name a branch, tag or commit "
                f"(`git log --oneline` lists them; in CI, fetch the base branch first)"
            )
        commit = proc.stdout.strip()
        return cls(f"{rev} ({commit[:7]})", rev, root, commit)

    def read(self, rel: str) -> bytes | None:
        if rel in self._cache:
            return self._cache[rel]
        if self.rev is None:
            path = self.root / rel
            data = path.read_bytes() if path.is_file() else None
        else:
            proc = subprocess.run(
                ["git", "cat-file", "blob", f"{self.commit}:{rel}"],
                cwd=self.root,
                capture_output=True,
            )
            data = proc.stdout if proc.returncode == 0 else None
        self._cache[rel] = data
        return data

    def yaml(self, rel: str) -> Any:
        data = self.read(rel)
        return None if data is None else load_yaml(data)

    def json(self, rel: str) -> Any:
        data = self.read(rel)
        return None if data is None else json.loads(data)

    def files(self, folder: str, suffix: str) -> list[str]:
        """The files below `folder` whose names end in `suffix` (committed, or on disk)."""
        if self.rev is None:
            base = self.root / folder
            found = [p.relative_to(self.root).as_posix() for p in base.rglob(f"*{suffix}")]
        else:
            out = git(self.root, "ls-tree", "-r", "--name-only", self.commit, "--", folder)
            found = [line for line in out.splitlines() if line.endswith(suffix)]
        return sorted(found)


# ---- words for values ----------------------------------------------------------------------


def show(value: object) -> str:
    """A value as one short line of YAML flow style."""
    if value is MISSING:
        return "(none)"
    if isinstance(value, str):
        return value if value and len(value) <= 80 else json.dumps(value)[:80]
    text = json.dumps(value, ensure_ascii=False, sort_keys=False)
    return text if len(text) <= 80 else text[:77] + "..."


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def flatten(node: object, prefix: str = "") -> dict[str, object]:
    """Dotted keys (list items as [i]) of every leaf; an empty mapping or list is a leaf."""
    out: dict[str, object] = {}
    if isinstance(node, dict) and node:
        for key, value in node.items():
            out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list) and node and any(isinstance(v, dict | list) for v in node):
        for i, value in enumerate(node):
            out |= flatten(value, f"{prefix}[{i}]")
    else:
        out[prefix] = node
    return out


def changed_keys(old: object, new: object) -> list[tuple[str, object, object]]:
    """(key, old, new) for every leaf that differs, in the new file's order."""
    a, b = flatten(old or {}), flatten(new or {})
    keys = list(b) + [k for k in a if k not in b]
    return [
        (k, a.get(k, MISSING), b.get(k, MISSING))
        for k in keys
        if a.get(k, MISSING) != b.get(k, MISSING)
    ]


def weight_words(value: object) -> str:
    if value is MISSING:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return show(value)
    if value == 0:
        return "0 (left out)"
    if value == int(value):
        return f"{value:g}" + (f" (every record {int(value)} times)" if value > 1 else "")
    return f"{value:g} (about {value * 100:.3g}% of its records)"


# ---- what was asked: params and sources ----------------------------------------------------


def params_words(old: dict | None, new: dict | None) -> list[str]:
    """params.yaml's changes as sentences a reviewer reads."""
    old, new = old or {}, new or {}
    sections = {}  # weights section -> recipes using it
    for params in (old, new):
        for name, spec in (params.get("recipes") or {}).items():
            if isinstance(spec, dict) and isinstance(spec.get("weights"), str):
                sections.setdefault(spec["weights"], set()).add(name)
    lines = []
    recipe_keys = {}
    for key, a, b in changed_keys(old, new):
        top = key.split(".", 1)[0].split("[", 1)[0]
        owner = next(
            (s for s in sorted(sections, key=len, reverse=True) if key.startswith(s + ".")), None
        )
        if owner is not None:
            what = key[len(owner) + 1 :]
            recipes = ", ".join(f"`{r}`" for r in sorted(sections[owner]))
            if what == "seed":
                lines.append(
                    f"recipe {recipes}: seed {show(a)} → {show(b)} (every fractional weight "
                    f"and `random:N` draws anew)"
                )
            else:
                kind = "sampling" if isinstance(a, str) or isinstance(b, str) else "weight"
                lines.append(
                    f"recipe {recipes}, part `{what}`: {kind} {weight_words(a)} → {weight_words(b)}"
                )
        elif top == "recipes":
            name = key.split(".")[1]
            recipe_keys.setdefault(name, []).append((key, a, b))
        elif top == "profile":
            lines.append(f"profile: `{show(a)}` → `{show(b)}` (every source's origin changes)")
        elif top == "splits":
            name = key.split(".")[1].split("[")[0]
            rest = key.split(".", 2)[2] if key.count(".") > 1 else key
            lines.append(f"split `{name}`: `{rest}` {show(a)} → {show(b)}")
        elif top == "validate":
            lines.append(f"validation: `{key.split('.', 1)[1]}` {show(a)} → {show(b)}")
        elif top == "dedup":
            lines.append(
                f"duplicates: `{key.split('.', 1)[1]}` {show(a)} → {show(b)} (every recipe "
                f"counts its near duplicates anew)"
            )
        else:
            lines.append(f"`{key}`: {show(a)} → {show(b)}")
    for name, changes in recipe_keys.items():
        was, now = (old.get("recipes") or {}).get(name), (new.get("recipes") or {}).get(name)
        if was is None:
            lines.append(
                f"recipe `{name}` added (weights: `{now.get('weights')}`, out: {now.get('out')})"
            )
        elif now is None:
            lines.append(f"recipe `{name}` removed")
        else:
            for key, a, b in changes:
                what = key.split(".", 2)[2]
                if what == "decontaminate":
                    lines.append(decontaminate_words(name, a, b))
                else:
                    lines.append(f"recipe `{name}`: `{what}` {show(a)} → {show(b)}")
    return lines


def decontaminate_words(recipe: str, old: object, new: object) -> str:
    """`recipes.<name>.decontaminate` as a sentence: which sets it now leaves out."""
    was = set(old) if isinstance(old, list) else set()
    now = set(new) if isinstance(new, list) else set()
    said = []
    if now - was:
        said.append("now leaves out the records whose image is in " + _sets(now - was))
    if was - now:
        said.append("keeps again the records whose image is in " + _sets(was - now))
    return f"recipe `{recipe}`: " + "; ".join(said or [f"decontaminate {show(old)} → {show(new)}"])


def _sets(names: set) -> str:
    return ", ".join(f"`{n}`" for n in sorted(names)) + " (exact or near copies)"


@dataclass
class SourceChange:
    source: str
    key: str
    old: object
    new: object


def source_changes(old: dict | None, new: dict | None) -> list[SourceChange]:
    """Per source of sources.yaml, every fact that changed (the `what` prose aside)."""
    a = (old or {}).get("sources") or {}
    b = (new or {}).get("sources") or {}
    out = []
    for name in list(b) + [n for n in a if n not in b]:
        if name not in a or name not in b:
            out.append(SourceChange(name, "", a.get(name, MISSING), b.get(name, MISSING)))
            continue
        for key, x, y in changed_keys(a[name], b[name]):
            if key != "what":
                out.append(SourceChange(name, key, x, y))
    return out


def source_warnings(changes: list[SourceChange]) -> list[str]:
    out = []
    for c in changes:
        leaf = c.key.rsplit(".", 1)[-1]
        if not c.key:
            continue
        if leaf == "licence":
            out.append(f"source `{c.source}`: licence changed: {show(c.old)} → {show(c.new)}")
        elif leaf in CHECKSUMS and c.old not in (None, MISSING) and c.new in (None, MISSING):
            out.append(f"source `{c.source}`: checksum `{c.key}` removed (was {show(c.old)})")
        elif leaf in PINS:
            out.append(f"source `{c.source}`: upstream pin `{c.key}` changed")
    return out


# ---- what it does: counts ------------------------------------------------------------------


def delta(a: object, b: object) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return f"{show(a)} → {show(b)}"
    if a == b:
        return f"{b:,}"
    return f"{a:,} → {b:,} ({b - a:+,})"


def step(counts: dict, name: str) -> object:
    """A part's count after a step; metrics older than decontamination had none between
    the amounts and validation, which is the count after the amounts."""
    if name == "after_decontamination" and name not in counts:
        return counts.get("after_weights", 0)
    return counts.get(name, 0)


def recipe_rows(old: dict | None, new: dict | None) -> list[list[str]]:
    """Rows (part, then its count after each step) of the parts that moved."""
    old, new = old or {}, new or {}
    a_parts, b_parts = old.get("parts") or {}, new.get("parts") or {}
    rows = []
    for part in list(b_parts) + [p for p in a_parts if p not in b_parts]:
        x, y = a_parts.get(part, {}), b_parts.get(part, {})
        if [step(x, s) for s in STEPS] != [step(y, s) for s in STEPS]:
            rows.append([f"`{part}`", *(delta(step(x, s), step(y, s)) for s in STEPS)])
    x, y = old.get("records") or {}, new.get("records") or {}
    if rows and [step(x, s) for s in STEPS] != [step(y, s) for s in STEPS]:
        rows.append(["**all**", *(delta(step(x, s), step(y, s)) for s in STEPS)])
    return rows


def audit_moved(old: dict | None, new: dict | None) -> list[str]:
    """The duplicate, overlap and decontamination counts of a recipe that moved."""
    out = []
    for section, words in AUDIT_WORDS.items():
        a, b = (old or {}).get(section), (new or {}).get(section)
        moved = [f"`{k}` {delta(x, y)}" for k, x, y in numbers_moved(a or {}, b or {})]
        if moved:
            out.append(f"{words}: " + ", ".join(moved))
    return out


def reasons_moved(old: dict | None, new: dict | None) -> list[str]:
    a = (old or {}).get("problems") or {}
    b = (new or {}).get("problems") or {}
    return [
        f"{k} {a.get(k, 0):,} → {b.get(k, 0):,}"
        for k in sorted(set(a) | set(b))
        if a.get(k, 0) != b.get(k, 0)
    ]


def numbers_moved(old: object, new: object) -> list[tuple[str, object, object]]:
    return [
        (k, a, b)
        for k, a, b in changed_keys(old, new)
        if isinstance(a, int | float | _Missing) and isinstance(b, int | float | _Missing)
    ]


def read_composition(data: bytes | None) -> list[tuple[str, int]] | None:
    if data is None:
        return None
    lines = data.decode("utf-8").splitlines()[1:]
    return [(p, int(m)) for p, _, m in (line.split(",") for line in lines if line)]


def composition_svg(recipe: str, before: list, after: list) -> str:
    """A horizontal bar chart of each part's records, before (grey) and after (blue)."""
    parts = list(dict.fromkeys([p for p, _ in after] + [p for p, _ in before]))
    a, b = dict(before), dict(after)
    top = max([*a.values(), *b.values(), 1])
    label_w, bar_w, row_h = 130, 360, 26
    height = 40 + row_h * len(parts) + 24
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        f'<text x="8" y="18" font-size="14">{html.escape(recipe)}: records per part '
        f"(after validation)</text>",
        f'<rect x="{label_w}" y="26" width="10" height="10" fill="#9e9e9e"/>'
        f'<text x="{label_w + 14}" y="35">before</text>'
        f'<rect x="{label_w + 70}" y="26" width="10" height="10" fill="#1f77b4"/>'
        f'<text x="{label_w + 84}" y="35">after</text>',
    ]
    for i, part in enumerate(parts):
        y = 44 + i * row_h
        out.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{html.escape(part)}</text>'
        )
        for k, (value, colour) in enumerate(
            ((a.get(part, 0), "#9e9e9e"), (b.get(part, 0), "#1f77b4"))
        ):
            w = round(bar_w * value / top, 1)
            out.append(
                f'<rect x="{label_w}" y="{y + k * 10}" width="{w}" height="9" fill="{colour}"/>'
                f'<text x="{label_w + w + 4}" y="{y + k * 10 + 8}" font-size="9">{value:,}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---- which outputs changed: the two dvc.lock ------------------------------------------------


def lock_stages(lock: dict | None) -> dict[str, dict]:
    return dict((lock or {}).get("stages") or {})


def _entries(items: list | None) -> dict[str, dict]:
    return {e["path"]: e for e in items or []}


def human(size: object) -> str:
    if not isinstance(size, int):
        return "?"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def describe_out(entry: dict | None) -> str:
    if entry is None:
        return "—"
    files = entry.get("nfiles")
    if files is None:
        return human(entry.get("size"))
    return human(entry.get("size")) + f", {files:,} file" + ("" if files == 1 else "s")


@dataclass
class StageChange:
    stage: str
    outs: list[tuple[str, dict | None, dict | None]]  # changed, added or removed outputs
    inputs_changed: bool


def stage_changes(old: dict, new: dict) -> list[StageChange]:
    out = []
    for name in list(new) + [n for n in old if n not in new]:
        a, b = old.get(name, {}), new.get(name, {})
        if a == b:
            continue
        ao, bo = _entries(a.get("outs")), _entries(b.get("outs"))
        outs = [
            (p, ao.get(p), bo.get(p))
            for p in list(bo) + [p for p in ao if p not in bo]
            if (ao.get(p) or {}).get("md5") != (bo.get(p) or {}).get("md5")
        ]
        inputs = any(a.get(k) != b.get(k) for k in ("cmd", "deps", "params"))
        out.append(StageChange(name, outs, inputs))
    return out


def family(stage: str) -> str:
    return stage.split("@", 1)[0] + ("@*" if "@" in stage else "")


# ---- the DVC cache and the remote ----------------------------------------------------------


class Store:
    """Objects of the DVC cache by md5; missing ones fetched from the remote per side."""

    def __init__(self, root: Path):
        self.root = root
        out = subprocess.run([DVC, "cache", "dir"], cwd=root, capture_output=True, text=True)
        self.cache = Path(out.stdout.strip()) if out.returncode == 0 else root / ".dvc/cache"
        self.fetched: set[tuple[str | None, str]] = set()
        self.fetch_errors: list[str] = []

    def path(self, md5: str) -> Path:
        return self.cache / "files" / "md5" / md5[:2] / md5[2:]

    def has(self, md5: str) -> bool:
        return self.path(md5).is_file()

    def fetch(self, side: Side, target: str) -> None:
        """Bring `target`'s objects of `side` from the remote (once per side and target)."""
        if (side.rev, target) in self.fetched:
            return
        self.fetched.add((side.rev, target))
        from dvc.repo import Repo  # only when an object is missing: the import costs a second

        try:
            with Repo(str(self.root)) as repo:
                repo.fetch(
                    targets=[target],
                    revs=[side.commit] if side.commit else None,
                    workspace=side.rev is None,
                )
        except Exception as err:  # noqa: BLE001 - any failure is reported, the rest goes on
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.fetch_errors.append(f"{target} at {side.label}: {first}")

    def listing(self, side: Side, entry: dict) -> dict[str, str] | None:
        """A directory output's files (relpath -> md5), or None if its listing is missing."""
        md5 = entry.get("md5", "")
        if not md5.endswith(".dir"):
            return None
        if not self.has(md5):
            self.fetch(side, entry["path"])
        if not self.has(md5):
            return None
        items = json.loads(self.path(md5).read_bytes())
        return {i["relpath"]: i["md5"] for i in items}

    def file(self, side: Side, target: str, md5: str) -> Path | None:
        if not self.has(md5):
            self.fetch(side, target)
        return self.path(md5) if self.has(md5) else None


# ---- which records changed -----------------------------------------------------------------


@dataclass
class FileDiff:
    path: str
    old_size: int | None
    new_size: int | None
    diff: recdiff.Diff | None
    examples: list[list[str]]
    note: str = ""


def changed_files(store: Store, base: Side, head: Side, changes: list[StageChange]):
    """(path, its output, old md5, new md5) of every changed .json file of the outputs
    under data/, and the listings that could not be read."""
    out, missing = [], []
    for change in changes:
        for path, a, b in change.outs:
            if not path.startswith("data/"):
                continue
            if path.endswith(".json") and not (a or b or {}).get("md5", "").endswith(".dir"):
                out.append((path, path, (a or {}).get("md5"), (b or {}).get("md5")))
                continue
            old = store.listing(base, a) if a else {}
            new = store.listing(head, b) if b else {}
            if old is None or new is None:
                which = base if old is None else head
                missing.append(f"the file listing of `{path}` at {which.label}")
                continue
            for rel in sorted(set(old) | set(new)):
                if rel.endswith(".json") and old.get(rel) != new.get(rel):
                    out.append((f"{path}/{rel}", path, old.get(rel), new.get(rel)))
    return out, missing


def _image(record: dict) -> str:
    image = record.get("image")
    if isinstance(image, list):
        return f"{image[0]} (+{len(image) - 1})" if image else "[]"
    return str(image) if image is not None else "(text only)"


def record_diffs(
    store: Store, base: Side, head: Side, files, recipe_outs: dict[str, str], k: int
) -> tuple[list[FileDiff], list[str]]:
    """The record diff of each changed training file; what could not be read, in words."""
    # recipe -> part -> (old records, new records) of its changed part files
    part_files: dict[str, dict[str, tuple[recdiff.Records, recdiff.Records]]] = {}
    results, missing = [], []
    # part files first: a recipe's training file names the part of a record from them
    parts_first = sorted(files, key=lambda f: _part_of(f[0], recipe_outs)[1] is None)
    seen: dict[tuple, str] = {}  # (old md5, new md5) -> the file diffed with them
    for path, out_path, old_md5, new_md5 in parts_first:
        if (old_md5, new_md5) in seen:  # an alias of a file already compared
            results.append(
                FileDiff(
                    path, None, None, None, [], f"the same change as `{seen[old_md5, new_md5]}`"
                )
            )
            continue
        seen[old_md5, new_md5] = path
        old_file = store.file(base, out_path, old_md5) if old_md5 else None
        new_file = store.file(head, out_path, new_md5) if new_md5 else None
        if (old_md5 and old_file is None) or (new_md5 and new_file is None):
            which = base if old_md5 and old_file is None else head
            missing.append(f"`{path}` at {which.label}: not in the DVC cache nor the remote")
            continue
        old_recs = recdiff.records(old_file) if old_file else _empty(path)
        new_recs = recdiff.records(new_file) if new_file else _empty(path)
        diff = recdiff.compare(old_recs, new_recs)
        recipe, part = _part_of(path, recipe_outs)
        if part is not None:
            part_files.setdefault(recipe, {})[part] = (old_recs, new_recs)
        examples = []
        for kind, recs, rows in (
            ("added", new_recs, diff.added[:k]),
            ("removed", old_recs, diff.removed[:k]),
            ("moved", new_recs, diff.reordered[:k]),
        ):
            for row, record in zip(rows.tolist(), recs.read(rows.tolist()), strict=True):
                where = (
                    f"`{part}`"
                    if part
                    else _lookup(part_files.get(recipe, {}), recs.digests[row], kind)
                )
                examples.append([kind, f"`{record.get('id')}`", where, f"`{_image(record)}`"])
        results.append(
            FileDiff(
                path,
                old_file.stat().st_size if old_file else None,
                new_file.stat().st_size if new_file else None,
                diff,
                examples,
            )
        )
    return sorted(results, key=lambda r: (r.diff is None, r.path)), missing


def _empty(path: str) -> recdiff.Records:
    return recdiff.Records(
        Path(path), np.zeros(0, recdiff._DIGEST), np.zeros(0, np.int64), np.zeros(0, np.int64)
    )


def _part_of(path: str, recipe_outs: dict[str, str]) -> tuple[str | None, str | None]:
    p = PurePosixPath(path)
    if len(p.parts) == 4 and p.parts[:2] == ("data", "recipes") and p.suffix == ".json":
        return p.parts[2], p.stem
    for recipe, out in recipe_outs.items():
        if out == path:
            return recipe, None
    return None, None


def _lookup(parts: dict[str, tuple], digest, kind: str) -> str:
    side = 0 if kind == "removed" else 1
    for part, pair in sorted(parts.items()):
        if (pair[side].digests == digest).any():
            return f"`{part}`"
    return "—"


# ---- warnings ------------------------------------------------------------------------------


def off_published(side: Side, params: dict | None, tol: float) -> dict[str, str]:
    """Counts of `side` off their published count by more than `tol`: key -> sentence."""
    out = {}
    params = params or {}
    profile = params.get("profile", "mini")
    for name, spec in (params.get("splits") or {}).items():
        published = ((spec or {}).get("published") or {}).get(profile) or {}
        counts = (side.json(f"metrics/splits/{name}.json") or {}).get("parts") or {}
        for part, want in published.items():
            got = counts.get(part)
            if isinstance(want, int) and want and got is not None and abs(got - want) > tol * want:
                out[f"split:{name}:{part}"] = (
                    f"split `{name}`, part `{part}`: {got:,} records, published {want:,} "
                    f"({(got - want) / want:+.1%})"
                )
    trees = (side.json("metrics/layout.json") or {}).get("trees") or {}
    for name, tree in trees.items():
        want, got = tree.get("expected"), tree.get("files")
        published = tree.get("expected_known") == "published" and isinstance(want, int)
        if published and want and got is not None and abs(got - want) > tol * want:
            out[f"tree:{name}"] = (
                f"tree `{name}` ({tree.get('dest')}): {got:,} images, published {want:,} "
                f"({(got - want) / want:+.1%})"
            )
    return out


def dvc_status(root: Path) -> tuple[tuple[object | None, str], tuple[object | None, str]]:
    """`dvc status` and `dvc status --cloud` in this process, each as (answer, error)."""
    import logging

    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.CRITICAL)  # the errors are reported here
    answers = []
    with Repo(str(root)) as repo:
        for cloud in (False, True):
            try:
                answers.append((repo.status(cloud=cloud), ""))
            except Exception as err:  # noqa: BLE001 - reported as not checked
                text = str(err).strip().splitlines()
                answers.append((None, text[0] if text else type(err).__name__))
    return answers[0], answers[1]


def lock_warnings(root: Path, rebuilt: bool) -> tuple[list[str], list[str]]:
    """(warnings, not checked): dvc.lock against dvc.yaml and params; outputs on the remote."""
    warnings, unchecked = [], []
    (found, err), (remote, remote_err) = dvc_status(root)
    if found is None:
        unchecked.append(f"whether dvc.lock matches dvc.yaml and the params (`dvc status`: {err})")
    elif found:
        stages = sorted(found)
        warnings.append(
            f"dvc.lock is not what dvc.yaml and the params produce: {len(stages)} stage(s) "
            f"out of date ({_names(stages)}); run `make repro` and commit dvc.lock"
        )
    if rebuilt:
        committed = load_yaml(git(root, "show", "HEAD:dvc.lock", check=False) or "{}")
        built = load_yaml((root / "dvc.lock").read_text(encoding="utf-8"))
        if committed != built:
            moved = [c.stage for c in stage_changes(lock_stages(committed), lock_stages(built))]
            warnings.append(
                f"the committed dvc.lock is not what `dvc repro` produced from this commit: "
                f"{len(moved)} stage(s) differ ({_names(moved)}); run `make repro` and "
                f"commit dvc.lock"
            )
    if remote is None:
        unchecked.append(
            f"whether every output is on the remote (`dvc status --cloud`: {remote_err})"
        )
    else:
        missing = sorted(p for p, s in remote.items() if s in ("new", "deleted", "missing"))
        if missing:
            warnings.append(
                f"{len(missing)} output(s) are not on the remote ({_names(missing)}): a "
                f"teammate's `dvc pull` cannot bring them; run `dvc push`"
            )
    return warnings, unchecked


def _names(items: list[str], most: int = 6) -> str:
    shown = ", ".join(f"`{i}`" for i in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


# ---- the report ----------------------------------------------------------------------------


def table(header: Iterable[str], rows: list[list[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


@dataclass
class Review:
    base: Side
    head: Side
    settings: Settings
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    charts: dict[str, str] = field(default_factory=dict)
    changed: bool = False


def build(root: Path, base_rev: str, head_rev: str | None, rebuilt: bool = False) -> Review:
    base, head = Side.at(root, base_rev), Side.at(root, head_rev)
    params_old, params_new = base.yaml("params.yaml"), head.yaml("params.yaml")
    settings = Settings.parse((params_new or {}).get("review"))
    review = Review(base, head, settings)
    checked_out = head.rev is None or (
        head.commit == git(root, "rev-parse", "HEAD").strip()
        and not git(root, "status", "--porcelain", "--untracked-files=no").strip()
    )
    out = review.lines
    out += [MARKER, f"# Data review: {head.label} against {base.label}", ""]

    # what was asked
    asked = params_words(params_old, params_new)
    reg_old, reg_new = base.yaml("sources.yaml"), head.yaml("sources.yaml")
    sources = source_changes(reg_old, reg_new)
    layout = changed_keys((reg_old or {}).get("layout"), (reg_new or {}).get("layout"))
    review.warnings += source_warnings(sources)

    # what it does
    recipe_names = list(
        dict.fromkeys(
            [*(params_new or {}).get("recipes", {}), *(params_old or {}).get("recipes", {})]
        )
    )
    recipe_sections = []
    for name in recipe_names:
        rel = f"metrics/recipes/{name}.json"
        a, b = base.json(rel), head.json(rel)
        if a == b:
            continue
        rows = recipe_rows(a, b)
        reasons = reasons_moved(a, b)
        section = [
            f"#### Recipe `{name}`"
            + (" (new)" if a is None else " (removed)" if b is None else ""),
            "",
        ]
        if rows:
            section += table(["part", *(STEP_WORDS[s] for s in STEPS)], rows)
        if reasons:
            section += ["Drop reasons that moved: " + "; ".join(reasons) + ".", ""]
        audits = audit_moved(a, b)
        if audits:
            section += [f"- {line}" for line in audits] + [""]
        plot = f"metrics/recipes/{name}.composition.csv"
        before, after = read_composition(base.read(plot)), read_composition(head.read(plot))
        if before != after and (before or after):
            chart = f"{name}.composition.svg"
            review.charts[chart] = composition_svg(name, before or [], after or [])
            section += [f"![composition of {name}, before and after]({chart})", ""]
        recipe_sections += section
    numbers = []
    for key, a, b in numbers_moved(
        base.json("metrics/dedup.json"), head.json("metrics/dedup.json")
    ):
        numbers.append(["image duplicates (`metrics/dedup.json`)", f"`{key}`", delta(a, b)])
    for folder, what in (("metrics/splits", "split"), ("metrics/prepare", "prepared file")):
        names = sorted(set(base.files(folder, ".json")) | set(head.files(folder, ".json")))
        for rel in names:
            for key, a, b in numbers_moved(base.json(rel), head.json(rel)):
                if not key.startswith("problems."):
                    numbers.append([f"{what} `{PurePosixPath(rel).stem}`", f"`{key}`", delta(a, b)])
    trees_old = (base.json("metrics/layout.json") or {}).get("trees") or {}
    trees_new = (head.json("metrics/layout.json") or {}).get("trees") or {}
    trees = [
        [
            f"`{t}`",
            f"{(trees_new.get(t) or trees_old.get(t) or {}).get('dest', '')}",
            delta(
                (trees_old.get(t) or {}).get("files", 0), (trees_new.get(t) or {}).get("files", 0)
            ),
        ]
        for t in list(trees_new) + [t for t in trees_old if t not in trees_new]
        if (trees_old.get(t) or {}).get("files") != (trees_new.get(t) or {}).get("files")
    ]

    # which outputs changed
    lock_old, lock_new = base.yaml("dvc.lock"), head.yaml("dvc.lock")
    if lock_old is None or lock_new is None:
        review.unchecked.append(
            f"the outputs: no dvc.lock at {(base if lock_old is None else head).label}"
        )
    changes = stage_changes(lock_stages(lock_old), lock_stages(lock_new))
    store = Store(root)
    recipe_outs = {
        name: spec.get("out")
        for name, spec in ((params_new or {}).get("recipes") or {}).items()
        if isinstance(spec, dict)
    }
    files, missing = changed_files(store, base, head, changes)
    diffs, unread = record_diffs(store, base, head, files, recipe_outs, settings.examples)
    review.unchecked += [f"the records of {m}" for m in missing + unread]
    review.unchecked += [f"fetching {e}" for e in store.fetch_errors]

    # warnings at the head
    new_off = off_published(head, params_new, settings.tolerance)
    old_off = off_published(base, params_old, settings.tolerance)
    review.warnings += [s + ("" if k in old_off else " (new)") for k, s in new_off.items()]
    if checked_out:
        warns, unchecked = lock_warnings(root, rebuilt)
        review.warnings += warns
        review.unchecked += unchecked
    else:
        review.unchecked.append(
            f"dvc.lock against dvc.yaml, and the remote: {head.label} is not checked out"
        )

    review.changed = bool(
        asked or sources or layout or changes or recipe_sections or numbers or trees
    )
    if not review.changed:
        out += [
            "**No change to the data**: params.yaml, sources.yaml, dvc.lock and the metrics are "
            "the same at both sides.",
            "",
        ]
    else:
        out += [_summary(asked, sources, changes, diffs), ""]
    if review.warnings:
        out += ["## Warnings", ""] + [f"- ⚠ {w}" for w in review.warnings] + [""]
    if asked or sources or layout:
        out += ["## What was asked", ""]
        if asked:
            out += ["### Parameters (params.yaml)", ""] + [f"- {line}" for line in asked] + [""]
        if sources:
            rows = [
                [
                    f"`{c.source}`",
                    f"`{c.key}`" if c.key else "(the source)",
                    show(c.old),
                    show(c.new),
                ]
                for c in sources
            ]
            out += ["### Sources (sources.yaml)", ""] + table(
                ["source", "fact", "before", "after"], rows
            )
        if layout:
            rows = [[f"`{k}`", show(a), show(b)] for k, a, b in layout]
            out += ["### Layout (sources.yaml `layout`)", ""] + table(
                ["key", "before", "after"], rows
            )
    if recipe_sections or numbers or trees:
        out += ["## What it does", ""]
        if recipe_sections:
            out += ["### Records per recipe", ""] + recipe_sections
        if numbers:
            out += ["### Records per split and prepared file", ""] + table(
                ["file", "count", "before → after"], numbers
            )
        if trees:
            out += ["### Images per tree", ""] + table(["tree", "folder", "images"], trees)
    if changes:
        out += ["## Which outputs changed", ""]
        rows, same = [], []
        for c in changes:
            if not c.outs:
                same.append(c.stage)
            for path, a, b in c.outs:
                state = "added" if a is None else "removed" if b is None else "changed"
                rows.append([f"`{c.stage}`", f"`{path}`", state, describe_out(a), describe_out(b)])
        if rows:
            out += table(["stage", "output", "", "before", "after"], rows)
        if same:
            groups: dict[str, list[str]] = {}
            for s in same:
                groups.setdefault(family(s), []).append(s)
            words = ", ".join(
                f"`{g}` ({len(v)})" if len(v) > 1 else f"`{v[0]}`" for g, v in groups.items()
            )
            out += [f"Dependencies changed, outputs did not: {words}.", ""]
    if diffs:
        out += ["## Which records changed", ""]
        for d in diffs:
            r = d.diff
            if r is None:
                out += [f"### `{d.path}`", "", d.note + ".", ""]
                continue
            out += [
                f"### `{d.path}`",
                "",
                f"{human(d.old_size)} → {human(d.new_size)}; {len(r.added):,} added, "
                f"{len(r.removed):,} removed, {len(r.reordered):,} moved, {r.common:,} kept.",
                "",
            ]
            if d.examples:
                out += table(["", "id", "part", "image"], d.examples)
    if review.unchecked:
        out += ["## Not compared", ""] + [f"- {u}" for u in review.unchecked] + [""]
    return review


def _summary(asked, sources, changes, diffs) -> str:
    outs = sum(len(c.outs) for c in changes)
    return (
        f"{len(asked)} parameter change(s), {len({c.source for c in sources})} source(s) changed; "
        f"{outs} output(s) of {sum(1 for c in changes if c.outs)} stage(s) changed; "
        f"{len(diffs)} training file(s) with other records."
    )


def write(review: Review, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.composition.svg"):
        if stale.name not in review.charts:
            stale.unlink()
    for name, svg in review.charts.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_text(svg, encoding="utf-8")
    report = folder / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(review.lines).rstrip("\n") + "\n", encoding="utf-8")
    return report


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit, branch or tag compared against")
    ap.add_argument("--head", help="a commit to review instead of the workspace")
    ap.add_argument("--out", type=Path, default=Path("review"), help="folder of the report")
    ap.add_argument(
        "--rebuilt",
        action="store_true",
        help="the workspace is HEAD after `dvc repro`: its dvc.lock must be HEAD's",
    )
    ap.add_argument("--repo", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    root = Path(git(args.repo, "rev-parse", "--show-toplevel").strip())
    review = build(root, args.base, args.head, args.rebuilt)
    report = write(review, args.out)
    sys.stdout.write(report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(run_main(main))
