"""Benchmark splitting, comparing and re-mixing a synthetic mix1M, lean scan against json.load.

Writes, in `--workdir` (a temporary folder by default, removed at the end unless `--keep`;
files already there are reused when their recorded sizes match), three files generated
from a fixed seed, without the clock:

- `mix1M.json`: about `--records` records (1.64 GB at 1M), compact as `json.dumps` writes
  it by default (", " and ": " separators, non-ASCII as \\u escapes), in shuffled order,
  integer and string ids mixed; image prefixes and proportions like Open-LLaVA-NeXT's;
- `sharegpt4v.json`: the 665K part as ShareGPT4V publishes it, indented by 2, UTF-8, some
  ids strings where the mix has integers, a few hundred records differing from the mix;
- `allava.json`: ALLaVA-Instruct-VFLAN-4V (203,065 records at 1M), indented by 4, some
  records missing from the mix or changed in it.

Then it runs each job in a fresh subprocess so that its peak memory is its own (the lean
ones `--repeat` times, reporting the median run, as the machine may be shared):

- split: what the split stages do with `llava_data`: `jsonscan.scan_many` of the three
  files with digests (this process scans mix1M, a second one the two upstream files),
  `splitting.assign` of mix1M's records to its parts and of the 665K file's to its parts
  (by image folder), `mixcore.compare` of the ShareGPT4V and ALLaVA parts with their
  upstream files, `splitting.save_index` of both indexes;
- mix1m, 665k: what stage mix@<recipe> does, but validation (there are no images):
  `splitting.load_index`, every part at weight 1 (for mix1M also allava=0),
  `recipes.write_recipe`: the training file (2 processes) and each part's file;
- naive, naive-665k: the same with json.load, Python loops, json.dumps hashing and
  json.dump of the training file and each part's file.

The bench checks the split jobs' counts against what the generator planted, then parses
each recipe's two training files (with orjson, untimed) and compares their records in
canonical form. Before each job it flushes dirty pages (`sync`) so that no job pays for
another's writes, and it reports the CPU time other processes of the machine used during
each job. Prints the command, the machine, the file sizes and a Markdown table on stdout
(progress notes go to stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

SEED = 20240611
GEN_VERSION = 2
FILES = {"mix": "mix1M.json", "sharegpt4v": "sharegpt4v.json", "allava": "allava.json"}
MIX_BYTES_AT_1M = 1.64e9
# Share of the mix's bytes by origin: ShareGPT4V's 1.23 GB file is ~1.08 GB compacted, ALLaVA's
# 0.23 GB ~0.2 GB; the other six sets make up the rest.
PART_SHARE = {"sharegpt4v": 0.66, "allava": 0.12, "mix": 0.22}
OUT_NAME = "mixed.json"
MIX_SEED = 7

# (name, image prefix or None for text-only, count at 1M, part, kind, id style)
SPECS = [
    ("coco", "coco/train2017/", 349_860, "sharegpt4v", "llava", "coco"),
    ("gqa", "gqa/images/", 72_140, "sharegpt4v", "vqa", "digits"),
    ("ocr_vqa", "ocr_vqa/images/", 80_000, "sharegpt4v", "vqa", "digits"),
    ("textvqa", "textvqa/train_images/", 21_953, "sharegpt4v", "vqa", "int_in_mix"),
    ("vg", "vg/VG_100K/", 86_417, "sharegpt4v", "vqa", "int"),
    ("sam", "sam/images/", 9_000, "sharegpt4v", "caption", "sam"),
    ("web-celebrity", "web-celebrity/images/", 500, "sharegpt4v", "caption", "name"),
    ("web-landmark", "web-landmark/images/", 500, "sharegpt4v", "caption", "name"),
    ("wikiart", "wikiart/images/", 500, "sharegpt4v", "caption", "name"),
    ("share_textvqa", "share_textvqa/images/", 500, "sharegpt4v", "caption", "name"),
    ("llava_pretrain", "llava/llava_pretrain/images/", 3_000, "sharegpt4v", "caption", "lcs"),
    ("text", None, 40_688, "sharegpt4v", "text", "sharegpt"),
    ("allava", "allava_vflan/images/images_191task_1k/", 203_065, "allava", "allava", "allava"),
    ("docvqa", "docvqa/train/documents/", 39_000, "mix", "doc", "int"),
    ("synthdog", "synthdog-en/images/", 30_000, "mix", "ocr", "name"),
    ("chartqa", "chartqa/train/png/", 18_000, "mix", "doc", "name"),
    ("dvqa", "dvqa/images/", 20_000, "mix", "vqa", "name"),
    ("ai2d", "ai2d/images/", 12_000, "mix", "doc", "name"),
    ("geoqa", "geoqa+/images/", 12_000, "mix", "geo", "name"),
]
# Component map the jobs use: every ShareGPT4V folder to one component, and so on.
_SG4V_FOLDERS = ["coco", "gqa", "ocr_vqa", "textvqa", "vg", "sam", "web-celebrity"]
_SG4V_FOLDERS += ["web-landmark", "wikiart", "share_textvqa"]
PREFIXES = {
    **{f"{folder}/": "sharegpt4v" for folder in _SG4V_FOLDERS},
    "llava/llava_pretrain/images/": "sharegpt4v",
    "allava_vflan/": "allava",
    "docvqa/": "docvqa",
    "synthdog-en/": "synthdog",
    "chartqa/": "chartqa",
    "dvqa/": "dvqa",
    "ai2d/": "ai2d",
    "geoqa+/": "geoqa",
}
TEXT_ONLY = "sharegpt4v"
COMPONENTS = sorted(set(PREFIXES.values()))
# (turns low, high), (human chars low, high), (gpt chars low, high): before scaling.
KINDS = {
    "llava": ((1, 6), (30, 160), (60, 900)),
    "vqa": ((2, 10), (30, 110), (1, 40)),
    "caption": ((1, 1), (40, 120), (600, 2400)),
    "text": ((1, 5), (40, 1500), (200, 3000)),
    "allava": ((1, 1), (40, 300), (300, 1400)),
    "doc": ((1, 6), (30, 120), (1, 80)),
    "ocr": ((1, 1), (30, 80), (200, 1500)),
    "geo": ((1, 1), (60, 400), (100, 600)),
}
CHANGED = {"sharegpt4v": 300, "allava": 40}  # at any size: records that differ in the mix
DROPPED = {"sharegpt4v": 120, "allava": 75}  # upstream records the mix leaves out
WORDS = [
    "the",
    "a",
    "an",
    "of",
    "in",
    "on",
    "with",
    "and",
    "to",
    "is",
    "are",
    "this",
    "that",
    "image",
    "picture",
    "photo",
    "shows",
    "man",
    "woman",
    "people",
    "child",
    "dog",
    "cat",
    "car",
    "bus",
    "street",
    "building",
    "table",
    "chair",
    "window",
    "tree",
    "sky",
    "water",
    "red",
    "blue",
    "green",
    "white",
    "black",
    "yellow",
    "small",
    "large",
    "left",
    "right",
    "top",
    "bottom",
    "front",
    "behind",
    "near",
    "holding",
    "wearing",
    "standing",
    "sitting",
    "walking",
    "looking",
    "background",
    "foreground",
    "scene",
    "text",
    "sign",
    "reads",
    "chart",
    "value",
    "answer",
    "question",
    "document",
    "page",
    "title",
    "figure",
    "shape",
    "angle",
    "line",
]
SPECIAL = ['"quoted"', "{braces}", "[brackets]", "back\\slash", '\\"', "a\nb", "tab\there"]
UNICODE = ["café", "naïve", "Zürich", "東京タワー", "Ελληνικά", "emoji 🙂", "São Paulo", "–"]


def note(msg: str) -> None:
    """A progress note on stderr."""
    print(f"[bench.mix] {msg}", file=sys.stderr, flush=True)


def counts_for(records: int) -> dict[str, int]:
    """The number of records of each spec for a mix of about `records` records."""
    scale = records / 1_000_000
    return {spec[0]: max(3, round(spec[2] * scale)) for spec in SPECS}


class Plan:
    """Every record's parameters, drawn at once with numpy; records are built on demand."""

    def __init__(self, records: int, seed: int = SEED):
        rng = np.random.default_rng(seed)
        words = np.array(WORDS + SPECIAL, dtype=object)
        prob = np.r_[np.full(len(WORDS), 1.0), np.full(len(SPECIAL), 0.004)]
        picks = rng.choice(words.size, size=6_000_000, p=prob / prob.sum())
        self.pool = " ".join(words[picks].tolist())
        self.counts = counts_for(records)
        self.specs = {spec[0]: spec for spec in SPECS}
        self.turn_start, self.turns, self.lens, self.offs, self.uni = {}, {}, {}, {}, {}
        fixed, answers = Counter(), Counter()  # per part: bytes besides answers, answers
        for name, n in self.counts.items():
            (t_lo, t_hi), (h_lo, h_hi), (g_lo, g_hi) = KINDS[self.specs[name][4]]
            turns = rng.integers(t_lo, t_hi + 1, n)
            total = int(turns.sum())
            lens = np.stack(
                [rng.integers(h_lo, h_hi + 1, total), rng.integers(g_lo, g_hi + 1, total)]
            )
            self.turns[name] = turns
            self.turn_start[name] = np.r_[0, np.cumsum(turns)[:-1]]
            self.lens[name] = lens
            self.uni[name] = rng.random(n) < 0.08
            part = self.specs[name][3]
            fixed[part] += int(lens[0].sum()) + 62 * total + 110 * n
            answers[part] += int(lens[1].sum())
        target = MIX_BYTES_AT_1M * records / 1_000_000
        for name in self.counts:
            part = self.specs[name][3]
            scale = max(0.05, (target * PART_SHARE[part] - fixed[part]) / answers[part])
            lens = self.lens[name]
            lens[1] = np.maximum(1, (lens[1] * scale).astype(np.int64))
            self.offs[name] = rng.integers(0, len(self.pool) - int(lens.max()) - 1, lens.shape)
        self.mix_order = self._mix_order(rng)

    def _mix_order(self, rng) -> list[tuple[str, int]]:
        """(component, index) of every mix record, shuffled; dropped upstream ones left out.

        Also picks, per upstream file, the records the mix drops and those it changes.
        """
        self.dropped, self.changed = {}, {}
        for part in DROPPED:
            names = [name for name, spec in self.specs.items() if spec[3] == part]
            sizes = np.array([self.counts[name] for name in names])
            total = int(sizes.sum())
            n_drop, n_change = (min(k[part], total // 10) for k in (DROPPED, CHANGED))
            pick = rng.choice(total, size=n_drop + n_change, replace=False)
            bounds = np.cumsum(sizes)
            where = np.searchsorted(bounds, pick, side="right")
            local = pick - np.r_[0, bounds][where]
            pairs = [
                (names[w], int(i)) for w, i in zip(where.tolist(), local.tolist(), strict=True)
            ]
            self.dropped[part] = set(pairs[:n_drop])
            self.changed[part] = set(pairs[n_drop:])
        order = [
            (name, i)
            for name, n in self.counts.items()
            for i in range(n)
            if (name, i) not in self.dropped.get(self.specs[name][3], ())
        ]
        perm = rng.permutation(len(order))
        return [order[j] for j in perm.tolist()]

    def record(self, name: str, i: int, *, in_mix: bool) -> dict:
        """Record i of component `name`, as the mix (or its upstream file) holds it."""
        spec = self.specs[name]
        prefix, part, style = spec[1], spec[3], spec[5]
        pool, offs, lens = self.pool, self.offs[name], self.lens[name]
        start = int(self.turn_start[name][i])
        convs = []
        for j in range(start, start + int(self.turns[name][i])):
            h_off, g_off = int(offs[0, j]), int(offs[1, j])
            convs.append({"from": "human", "value": pool[h_off : h_off + int(lens[0, j])]})
            convs.append({"from": "gpt", "value": pool[g_off : g_off + int(lens[1, j])]})
        if prefix is not None:
            convs[0]["value"] = "<image>\n" + convs[0]["value"]
        if self.uni[name][i]:
            convs[-1]["value"] += " " + UNICODE[i % len(UNICODE)]
        if in_mix and (name, i) in self.changed.get(part, ()):
            convs[-1]["value"] += " (revised)"
        rid: str | int = _record_id(style, name, i, in_mix)
        rec: dict = {"id": rid}
        if prefix is not None:
            rec["image"] = prefix + _image_name(name, i)
        rec["conversations"] = convs
        if name == "geoqa" and i % 2:  # keys in another order
            rec = {"image": rec["image"], "conversations": convs, "id": rid}
        return rec


def _record_id(style: str, name: str, i: int, in_mix: bool) -> str | int:
    if style == "coco":
        return f"{(i * 7919) % 581_929:012d}"
    if style == "digits":
        return str(1_000_000 + i * 13)
    if style == "int":
        return 2_000_000 + i
    if style == "int_in_mix":
        return 3_000_000 + i if in_mix else str(3_000_000 + i)
    if style == "sharegpt":
        return f"sg_{i:06x}_{i % 7}"
    if style == "allava":
        return f"allava_vflan_inst_{i}"
    return f"{name}_{i}"


def _image_name(name: str, i: int) -> str:
    if name == "llava_pretrain":
        return f"{i // 1000:05d}/{i:09d}.jpg"
    if name == "allava":
        return f"VQA-E+visual_question_answering_{i}_COCO_train2014_{i:012d}.jpg"
    if name in ("web-celebrity", "web-landmark"):
        return f"Person_{i}_Ünïcode.jpg"
    ext = ".png" if name in ("docvqa", "chartqa", "dvqa", "ai2d", "geoqa") else ".jpg"
    return f"{i:09d}{ext}"


def _write_records(path: Path, items, dump, indent: int) -> int:
    """Write a JSON array of `dump(record)` items, each indented by `indent` spaces."""
    pad = b"\n" + b" " * indent
    with open(path, "wb", buffering=1 << 22) as out:
        out.write(b"[" if indent else b"[")
        first = True
        for rec in items:
            text = dump(rec)
            if indent:
                text = pad + text.replace(b"\n", pad)
            out.write(text if first else b"," + (b"" if indent else b" ") + text)
            first = False
        out.write(b"\n]" if indent else b"]")
    return path.stat().st_size


def _dump_default(rec: dict) -> bytes:
    return json.dumps(rec).encode()


def _dump_indent2(rec: dict) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_INDENT_2)


def _dump_indent4(rec: dict) -> bytes:
    return json.dumps(rec, indent=4, ensure_ascii=False).encode()


def generate(workdir: Path, records: int) -> dict[str, Path]:
    """The three files for `records`, reused when the manifest and their sizes match."""
    paths = {key: workdir / name for key, name in FILES.items()}
    manifest = workdir / "bench-mix.json"
    want = {"version": GEN_VERSION, "seed": SEED, "records": records}
    if manifest.exists():
        have = json.loads(manifest.read_text())
        sizes = have.get("sizes", {})
        if {k: have.get(k) for k in want} == want and all(
            paths[k].exists() and paths[k].stat().st_size == sizes.get(k) for k in paths
        ):
            note(f"reusing the files in {workdir}")
            return paths
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan = Plan(records)
    note(f"planned {len(plan.mix_order):,} mix records in {time.perf_counter() - t0:.1f} s")
    sizes = {}
    names = {part: [s[0] for s in SPECS if s[3] == part] for part in ("sharegpt4v", "allava")}
    for key, dump, indent in (("sharegpt4v", _dump_indent2, 2), ("allava", _dump_indent4, 4)):
        items = (
            plan.record(name, i, in_mix=False)
            for name in names[key]
            for i in range(plan.counts[name])
        )
        sizes[key] = _write_records(paths[key], items, dump, indent)
        note(
            f"wrote {paths[key].name}: {sizes[key] / 1e9:.2f} GB ({time.perf_counter() - t0:.0f} s)"
        )
    items = (plan.record(name, i, in_mix=True) for name, i in plan.mix_order)
    sizes["mix"] = _write_records(paths["mix"], items, _dump_default, 0)
    note(
        f"wrote {paths['mix'].name}: {sizes['mix'] / 1e9:.2f} GB ({time.perf_counter() - t0:.0f} s)"
    )
    expected = expected_counts(plan)
    manifest.write_text(json.dumps({**want, "sizes": sizes, "expected": expected}, indent=2))
    return paths


def expected_counts(plan: Plan) -> dict:
    """What the jobs must find: component sizes and compare results the generator planted."""
    comp = Counter()
    for name, n in plan.counts.items():
        spec = plan.specs[name]
        part = spec[3]
        kept = n - sum(1 for d in plan.dropped.get(part, ()) if d[0] == name)
        comp[_component_of(spec)] += kept
    out = {"records": len(plan.mix_order), "components": dict(sorted(comp.items()))}
    for part in ("sharegpt4v", "allava"):
        total = sum(plan.counts[s[0]] for s in SPECS if s[3] == part)
        changed, dropped = len(plan.changed[part]), len(plan.dropped[part])
        out[part] = {
            "identical": total - changed - dropped,
            "only_in_mix": changed,
            "only_in_upstream": changed + dropped,
        }
    return out


def _component_of(spec) -> str:
    if spec[1] is None:
        return TEXT_ONLY
    matches = [p for p in PREFIXES if spec[1].startswith(p)]
    return PREFIXES[max(matches, key=len)]


# ---------------------------------------------------------------- jobs (run in subprocesses)


# The 665K recipe's parts: ShareGPT4V's file by its image folders (as split_sharegpt4v_665k
# places the synthetic file's records: no prompts here, so prefixes and text-only only).
PREFIXES_665K = {f"{folder}/": folder.replace("-", "_") for folder in _SG4V_FOLDERS}
PREFIXES_665K["llava/llava_pretrain/images/"] = "lcs"
TEXT_ONLY_665K = "sharegpt"
RECIPE_OUT = {"mix1m": f"lean-{OUT_NAME}", "665k": "lean-665k.json"}


def _recipe(name: str, spec):
    from llava_data import recipes

    raw = {"parts": name, "weights": f"mixtures.{name}", "out": f"data/{name}.json"}
    return recipes.Recipe.parse(name, raw, {name: spec})


def _split_specs():
    from llava_data import splitting

    return {
        "mix1m": splitting.SplitSpec.parse("mix1m", {"prefixes": PREFIXES, "text_only": TEXT_ONLY}),
        "665k": splitting.SplitSpec.parse(
            "665k", {"prefixes": PREFIXES_665K, "text_only": TEXT_ONLY_665K}
        ),
    }


def job_split(paths: dict[str, Path], workdir: Path) -> dict:
    """What the split stages do: scan the three files with digests (2 processes), place
    every record of mix1M and of the 665K file, compare, save both indexes."""
    from llava_data import jsonscan, mixcore, splitting

    specs = _split_specs()
    times = {}
    t0 = time.perf_counter()
    mix, sg4v, allava = jsonscan.scan_many(
        [paths["mix"], paths["sharegpt4v"], paths["allava"]], digests=True, workers=2
    )
    times["scan (3 files, 2 processes)"] = time.perf_counter() - t0
    t = time.perf_counter()
    comps, _ = splitting.assign(specs["mix1m"], mix, {})
    parts_665k, _ = splitting.assign(specs["665k"], sg4v, {})
    times["place records (both files)"] = time.perf_counter() - t
    t = time.perf_counter()
    result = {
        "sharegpt4v": mixcore.compare(mix.digests[comps == "sharegpt4v"], sg4v.digests),
        "allava": mixcore.compare(mix.digests[comps == "allava"], allava.digests),
    }
    times["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    for name, index, assigned in (("mix1m", mix, comps), ("665k", sg4v, parts_665k)):
        names = specs[name].parts
        code = {n: k for k, n in enumerate(names)}
        codes = np.array([code[c] for c in assigned], dtype=np.uint8)
        splitting.save_index(workdir / f"{name}.npz", index, codes, names)
    times["save indexes"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    result.update(records=len(mix), components=dict(sorted(Counter(comps.tolist()).items())))
    return {"times": times, "total": total, "result": result}


def job_recipe(name: str, workdir: Path) -> dict:
    """What stage mix@<recipe> does but validation (no images here): load the split index,
    apply every part's weight 1 (and, for mix1M, allava=0 as well), write the training
    file with 2 processes and copy each part's records to its own file."""
    from llava_data import recipes, splitting

    spec = _split_specs()[name]
    recipe = _recipe(name, spec)
    times = {}
    t0 = time.perf_counter()
    indexes = {name: splitting.load_index(workdir / f"{name}.npz")}
    times["load index"] = time.perf_counter() - t0
    t = time.perf_counter()
    ones = recipes.Amounts.parse(
        recipe.weights, {"seed": MIX_SEED, **dict.fromkeys(spec.parts, 1)}, spec.parts
    )
    mult, rows_of = recipes.multiplicities(recipe, ones, indexes)
    mixed = [int(mult[name].sum())]
    if "allava" in spec.parts:
        no_allava = recipes.Amounts.parse(
            recipe.weights,
            {"seed": MIX_SEED, **dict.fromkeys(spec.parts, 1), "allava": 0},
            spec.parts,
        )
        mixed.append(int(recipes.multiplicities(recipe, no_allava, indexes)[0][name].sum()))
    labels = recipes.part_labels(recipe, indexes, rows_of)
    times["amounts"] = time.perf_counter() - t
    t = time.perf_counter()
    out = workdir / RECIPE_OUT[name]
    recipes.write_recipe(recipe, indexes, mult, labels, out, workdir / f"lean-{name}-parts")
    times["write training file + part files"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    return {"times": times, "total": total, "result": {"mixed": mixed}}


def job_naive(paths: dict[str, Path], workdir: Path) -> dict:
    """The same with json.load, dict filtering, json.dumps hashing and json.dump."""
    times = {}
    t0 = time.perf_counter()
    with open(paths["mix"], encoding="utf-8") as fh:
        mix = json.load(fh)
    with open(paths["sharegpt4v"], encoding="utf-8") as fh:
        sg4v = json.load(fh)
    with open(paths["allava"], encoding="utf-8") as fh:
        allava = json.load(fh)
    times["json.load (3 files)"] = time.perf_counter() - t0
    t = time.perf_counter()
    longest = sorted(PREFIXES, key=len, reverse=True)

    def component(rec: dict) -> str:
        image = rec.get("image")
        if image is None:
            return TEXT_ONLY
        return next(PREFIXES[p] for p in longest if image.startswith(p))

    comps = [component(rec) for rec in mix]
    times["assign components"] = time.perf_counter() - t
    t = time.perf_counter()

    def key(rec: dict) -> str:
        rec = dict(rec, id=str(rec["id"]))
        return hashlib.sha1(json.dumps(rec, sort_keys=True).encode()).hexdigest()

    result = {}
    for name, upstream in (("sharegpt4v", sg4v), ("allava", allava)):
        a = Counter(key(r) for r, c in zip(mix, comps, strict=True) if c == name)
        b = Counter(key(r) for r in upstream)
        same = sum((a & b).values())
        na, nb = sum(a.values()), sum(b.values())
        result[name] = {"identical": same, "only_in_mix": na - same, "only_in_upstream": nb - same}
    times["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    out1 = [dict(r, id=str(r["id"])) for r in mix]
    out0 = [r for r, c in zip(out1, comps, strict=True) if c != "allava"]
    parts: dict[str, list] = {}
    for rec, comp in zip(out1, comps, strict=True):
        parts.setdefault(comp, []).append(rec)
    times["mix (x2)"] = time.perf_counter() - t
    t = time.perf_counter()
    _dump_naive(out1, parts, workdir / f"naive-{OUT_NAME}", workdir / "naive-mix1m-parts")
    times["json.dump (training file + part files)"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    result.update(
        records=len(mix),
        components=dict(sorted(Counter(comps).items())),
        mixed=[len(out1), len(out0)],
    )
    return {"times": times, "total": total, "result": result}


def job_naive_665k(paths: dict[str, Path], workdir: Path) -> dict:
    """The 665K recipe the straightforward way: json.load, place by prefix, json.dump the
    training file and each part's file."""
    times = {}
    t0 = time.perf_counter()
    with open(paths["sharegpt4v"], encoding="utf-8") as fh:
        records = json.load(fh)
    times["json.load"] = time.perf_counter() - t0
    t = time.perf_counter()
    longest = sorted(PREFIXES_665K, key=len, reverse=True)
    parts: dict[str, list] = {}
    out = []
    for rec in records:
        rec = dict(rec, id=str(rec["id"]))
        image = rec.get("image")
        part = (
            TEXT_ONLY_665K
            if image is None
            else next(PREFIXES_665K[p] for p in longest if image.startswith(p))
        )
        parts.setdefault(part, []).append(rec)
        out.append(rec)
    times["place + ids"] = time.perf_counter() - t
    t = time.perf_counter()
    _dump_naive(out, parts, workdir / "naive-665k.json", workdir / "naive-665k-parts")
    times["json.dump (training file + part files)"] = time.perf_counter() - t
    return {"times": times, "total": time.perf_counter() - t0, "result": {"mixed": [len(out)]}}


def _dump_naive(out: list, parts: dict[str, list], path: Path, folder: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False)
    folder.mkdir(exist_ok=True)
    for name, recs in parts.items():
        with open(folder / f"{name}.json", "w", encoding="utf-8") as fh:
            json.dump(recs, fh, ensure_ascii=False)


def output_digest(path: Path) -> str:
    """sha256 over the output's records in canonical form (compact, file order).

    It parses the whole file with orjson, independently of llava_data.jsonscan.
    """
    h = hashlib.sha256()
    records = orjson.loads(path.read_bytes())
    for rec in records:
        h.update(orjson.dumps(rec) + b"\n")
    del records
    return h.hexdigest()


LEAN = ("split", "mix1m", "665k")
NAIVE = ("naive", "naive-665k")
OUTPUTS = {
    "mix1m": ("lean-" + OUT_NAME, "naive-" + OUT_NAME),
    "665k": ("lean-665k.json", "naive-665k.json"),
}


def run_job(kind: str, workdir: Path) -> None:
    """Entry point of a job subprocess: prints one JSON line with times, counts and memory."""
    paths = {key: workdir / name for key, name in FILES.items()}
    if kind == "split":
        report = job_split(paths, workdir)
    elif kind in ("mix1m", "665k"):
        report = job_recipe(kind, workdir)
    elif kind == "naive":
        report = job_naive(paths, workdir)
    else:
        report = job_naive_665k(paths, workdir)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report["rss_self"] = self_kb * 1024
    report["rss_children"] = child_kb * 1024
    print(json.dumps(report), flush=True)


def busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def launch(kind: str, workdir: Path) -> dict:
    """Run one job in a fresh interpreter: its report, wall time, CPU time, and the CPU time
    other processes of the machine took meanwhile."""
    os.sync()  # start every job with no dirty pages of earlier writes
    cmd = [sys.executable, "-m", "bench.mix", "--job", kind, "--workdir", str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    busy0, load0 = busy_seconds(), os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    busy = busy_seconds() - busy0
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"job {kind} failed with exit code {code}")
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime
    report.update(wall=wall, cpu=cpu, others_cpu=max(0.0, busy - cpu), load_before=load0)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mix", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--lean-only", action="store_true", help="skip the straightforward jobs")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each lean job (median)")
    parser.add_argument("--job", choices=[*LEAN, *NAIVE], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        run_job(args.job, args.workdir)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-mix-"))
    try:
        return _bench(args, workdir)
    finally:
        if not args.keep:
            for name in [*FILES.values(), "bench-mix.json", "mix1m.npz", "665k.npz"]:
                (workdir / name).unlink(missing_ok=True)
            for pair in OUTPUTS.values():
                for name in pair:
                    (workdir / name).unlink(missing_ok=True)
            for kind in ("lean-mix1m", "lean-665k", "naive-mix1m", "naive-665k"):
                shutil.rmtree(workdir / f"{kind}-parts", ignore_errors=True)
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, workdir: Path) -> int:
    paths = generate(workdir, args.records)
    expected = json.loads((workdir / "bench-mix.json").read_text())["expected"]
    sizes = {key: p.stat().st_size for key, p in paths.items()}
    kinds = [*LEAN] + ([] if args.lean_only else [*NAIVE])
    runs: dict[str, list[dict]] = {}
    for kind in kinds:
        for i in range(max(1, args.repeat) if kind in LEAN else 1):
            note(f"running the {kind} job ({i + 1})")
            rep = launch(kind, workdir)
            note(
                f"{kind}: {rep['wall']:.1f} s wall, {rep['cpu']:.1f} s CPU; other processes "
                f"took {rep['others_cpu']:.1f} CPU s meanwhile"
            )
            result = rep["result"]
            if kind in ("split", "naive"):
                got = {k: result[k] for k in ("sharegpt4v", "allava", "components")}
                want = {k: expected[k] for k in ("sharegpt4v", "allava", "components")}
                if got != want:
                    raise SystemExit(f"job {kind} found {result}, expected {expected}")
            runs.setdefault(kind, []).append(rep)
    same = {}
    if not args.lean_only:
        for recipe, pair in OUTPUTS.items():
            note(f"hashing the records of both {recipe} outputs")
            same[recipe] = len({output_digest(workdir / name) for name in pair}) == 1
    print(_table(args, sizes, runs, same))
    return 0 if all(same.values()) else 1


def _median_run(reps: list[dict]) -> dict:
    return sorted(reps, key=lambda r: r["wall"])[(len(reps) - 1) // 2]


def _peak(rep: dict) -> int:
    return rep["rss_self"] + rep["rss_children"]


def _table(args, sizes: dict[str, int], runs: dict[str, list[dict]], same: dict) -> str:
    gb = 1e9
    reports = {kind: _median_run(reps) for kind, reps in runs.items()}
    cmd = f"python -m bench.mix --records {args.records}"
    lines = [
        f"command: `{cmd}`"
        + (f" (lean jobs: median of {args.repeat} runs)" if args.repeat > 1 else ""),
        f"machine: nproc {len(os.sched_getaffinity(0))}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM",
        "files: " + ", ".join(f"{FILES[k]} {v / gb:.2f} GB" for k, v in sizes.items()),
        "",
        "| job | this: wall s | peak RSS GB | RSS / mix1M | straightforward: wall s | RSS GB |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, lean: list[str], naive: str | None) -> None:
        walls = sum(reports[k]["wall"] for k in lean)
        peak = max(_peak(reports[k]) for k in lean)
        other = (
            f"{reports[naive]['wall']:.1f} | {_peak(reports[naive]) / gb:.2f}"
            if naive in reports
            else "| "
        )
        lines.append(
            f"| {label} | {walls:.1f} | {peak / gb:.2f} | {peak / sizes['mix']:.2f} | {other} |"
        )

    row("split (both indexes, the comparisons)", ["split"], None)
    row("recipe mix1m", ["mix1m"], None)
    row("**mix1M from the files: split + recipe**", ["split", "mix1m"], "naive")
    row("recipe 665k (ShareGPT4V's 665K file)", ["665k"], "naive-665k")
    lines += [
        "",
        "wall: the job's subprocess, from start to exit. peak RSS: the job's process plus the "
        "largest of its helper processes (an upper bound of their sum at any time). Each "
        "recipe writes its training file and one file per part; the straightforward jobs "
        "json.load, place records with Python, and json.dump the same files.",
    ]
    for kind, reps in runs.items():
        rep = reports[kind]
        lines.append(
            f"{kind}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in rep["times"].items())
            + f"; CPU {rep['cpu']:.1f} s; load average before {rep['load_before']:.2f}; "
            f"other processes used {rep['others_cpu']:.1f} CPU s during the run"
            + (
                "; all walls: " + ", ".join(f"{r['wall']:.1f}" for r in reps)
                if len(reps) > 1
                else ""
            )
        )
    for recipe, ok in same.items():
        lines.append(f"{recipe}: both outputs hold the same records in canonical form: {ok}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
