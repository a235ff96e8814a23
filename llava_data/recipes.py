"""Mixtures as recipes: which parts, how much of each, in what order (no I/O but reading).

`recipes.<name>` of the params says what a recipe is made of:
- `parts`: part name -> `<split>/<part>` (a part of a split's index), or the name of a
  split alone, meaning every part of that split under its own name;
- `weights`: the params section holding the recipe's `seed` and, per part, its amount:
  mix1M's is `mix` (so `dvc exp run -S mix.allava=0` ablates it); the others' are
  `mixtures.<name>`.
- `out`: the training JSON it writes (under data/);
- `decontaminate` (optional): evaluation sets (`layout.evals` of the registry) whose
  images the recipe must not hold: a record with an image that has a copy (exact or near,
  `llava_data.dedup`) in one of them is left out, and counted.

An amount is a weight w >= 0 (its whole part repeats the part, its fraction keeps a stable
seeded share, `mixcore.multiplicity`) or a LLaVA-NeXT sampling strategy (`all`,
`first:N`, `end:N`, `random:N`, N a count or P%, `mixcore.sample`, random seeded).

Records are emitted in passes (`mixcore.emission_order`): pass p lists, split by split in
the order the recipe first names them and in file order within one, the records chosen
more than p times. A recipe of one split's parts with weights (mix1M) thus keeps that
file's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava_data import jsonscan, mixcore
from llava_data.common import StageError, remove_path
from llava_data.splitting import SplitIndex, SplitSpec

RECIPE_KEYS = ("parts", "weights", "out")
OPTIONAL_KEYS = ("decontaminate",)


@dataclass(frozen=True)
class Part:
    name: str
    split: str
    source: str  # the part's name in the split


@dataclass(frozen=True)
class Recipe:
    """`recipes.<name>`: its parts (in order), its weights section and its output."""

    name: str
    parts: tuple[Part, ...]
    weights: str
    out: str
    decontaminate: tuple[str, ...] = ()

    @classmethod
    def parse(cls, name: str, raw: object, splits: Mapping[str, SplitSpec]) -> Recipe:
        where = f"params.yaml: recipes.{name}"
        if not isinstance(raw, dict):
            raise StageError(f"{where}: expected a mapping with {', '.join(RECIPE_KEYS)}")
        unknown = sorted(set(raw) - set(RECIPE_KEYS) - set(OPTIONAL_KEYS), key=str)
        missing = [k for k in RECIPE_KEYS if k not in raw]
        if unknown or missing:
            raise StageError(
                f"{where}: unknown key(s) {unknown}, missing {missing}; a recipe holds "
                f"{', '.join(RECIPE_KEYS)} and optionally {', '.join(OPTIONAL_KEYS)}"
            )
        weights = raw["weights"]
        if weights != "mix" and weights != f"mixtures.{name}":
            raise StageError(
                f"{where}.weights: `mixtures.{name}` (or `mix`, mix1M's), got {weights!r}"
            )
        out = raw["out"]
        if not isinstance(out, str) or not out.startswith("data/") or ".." in out.split("/"):
            raise StageError(f"{where}.out: a .json path under data/, got {out!r}")
        parts_raw = raw["parts"]
        if isinstance(parts_raw, str):
            if parts_raw not in splits:
                raise StageError(f"{where}.parts: {parts_raw!r} is not a split ({sorted(splits)})")
            parts_raw = {p: f"{parts_raw}/{p}" for p in splits[parts_raw].parts}
        if not isinstance(parts_raw, dict) or not parts_raw:
            raise StageError(f"{where}.parts: a split's name, or part -> <split>/<part>")
        parts, taken = [], {}
        for part, ref in parts_raw.items():
            split, slash, source = str(ref).partition("/")
            if (
                not isinstance(part, str)
                or not part
                or "." in part
                or part == "seed"
                or not slash
                or split not in splits
                or source not in splits[split].parts
            ):
                raise StageError(
                    f"{where}.parts.{part}: {ref!r} is not <split>/<part> of a split "
                    f"(splits: {', '.join(sorted(splits))}; a part name holds no '.')"
                )
            if ref in taken:
                raise StageError(f"{where}.parts: {part} and {taken[ref]} both take {ref}")
            taken[ref] = part
            parts.append(Part(part, split, source))
        sets = raw.get("decontaminate") or []
        if not isinstance(sets, list) or not all(isinstance(s, str) and s for s in sets):
            raise StageError(
                f"{where}.decontaminate: a list of evaluation sets, e.g. [pope, textvqa_val], "
                f"got {sets!r}"
            )
        if len(set(sets)) != len(sets):
            raise StageError(f"{where}.decontaminate: {sets} names a set twice")
        return cls(name, tuple(parts), weights, out, tuple(sets))

    @property
    def splits(self) -> list[str]:
        """The splits the recipe reads, in the order it first names them."""
        return list(dict.fromkeys(p.split for p in self.parts))


@dataclass(frozen=True)
class Amounts:
    """A recipe's weights section: the seed and each part's weight or sampling strategy."""

    seed: int
    of: dict[str, float | str]

    @classmethod
    def parse(cls, section: str, raw: object, parts: list[str]) -> Amounts:
        if not isinstance(raw, dict):
            raise StageError(f"params.yaml: `{section}` must be a mapping of part amounts")
        seed = raw.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 1 << 64:
            raise StageError(
                f"params.yaml: {section}.seed must be a whole number >= 0, got {seed!r}"
            )
        amounts = {k: v for k, v in raw.items() if k != "seed"}
        numbers = {k: v for k, v in amounts.items() if not isinstance(v, str)}
        problems = []
        for name, value in sorted(amounts.items(), key=lambda kv: str(kv[0])):
            if isinstance(value, str):
                if name not in parts:
                    problems.append(f"{section}.{name}: unknown part (known: {', '.join(parts)})")
                else:
                    try:
                        mixcore.parse_strategy(value, f"{section}.{name}")
                    except StageError as err:
                        problems.append(str(err))
        try:
            mixcore.validate_weights(
                numbers, [p for p in parts if not isinstance(amounts.get(p), str)], section
            )
        except StageError as err:
            problems.extend(str(err).splitlines()[1:])
        if problems:
            raise StageError(
                "invalid mixture amounts in params (a weight >= 0 or all, first:N, end:N, "
                "random:N):\n  " + "\n  ".join(p.strip() for p in problems)
            )
        return cls(
            seed,
            {p: amounts[p] if isinstance(amounts[p], str) else float(amounts[p]) for p in parts},
        )


def multiplicities(
    recipe: Recipe, amounts: Amounts, indexes: Mapping[str, SplitIndex]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(per split: how many times each of its records is emitted, per part: its rows).

    A weight's draws and a `random:N`'s both hash (seed, record digest): a larger fraction
    or N keeps a superset, on every machine.
    """
    mult = {s: np.zeros(len(indexes[s].index), dtype=np.int64) for s in recipe.splits}
    rows_of = {}
    for part in recipe.parts:
        split = indexes[part.split]
        rows = split.rows_of(part.source)
        rows_of[part.name] = rows
        value = amounts.of[part.name]
        if isinstance(value, str):
            digests = split.index.digests[rows]
            chosen = mixcore.sample(value, digests, amounts.seed, f"{recipe.weights}.{part.name}")
            mult[part.split][rows[chosen]] = 1
        elif value == int(value):  # a whole weight repeats the part: no draws needed
            mult[part.split][rows] = int(value)
        else:
            digests = split.index.digests[rows]
            mult[part.split][rows] = mixcore.multiplicity(
                [part.name] * rows.size, digests, {part.name: value}, amounts.seed
            )
    return mult, rows_of


def emission_segments(
    recipe: Recipe, mult: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray]]:
    """(split, record numbers) in emission order: pass by pass, split by split."""
    if len(recipe.splits) == 1:  # the same order, as one segment
        only = recipe.splits[0]
        return [(only, mixcore.emission_order(mult[only]))]
    top = max((int(m.max()) for m in mult.values() if m.size), default=0)
    return [(s, np.flatnonzero(mult[s] > p)) for p in range(top) for s in recipe.splits]


def part_labels(
    recipe: Recipe, indexes: Mapping[str, SplitIndex], rows_of: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per split: the recipe's part number of each record (-1: in no part)."""
    labels = {s: np.full(len(indexes[s].index), -1, dtype=np.int64) for s in recipe.splits}
    for k, part in enumerate(recipe.parts):
        labels[part.split][rows_of[part.name]] = k
    return labels


def write_recipe(
    recipe: Recipe,
    indexes: Mapping[str, SplitIndex],
    mult: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    out: Path,
    folder: Path,
    workers: int = 2,
) -> dict[str, Path]:
    """The training file `out` (records in emission order) and, written in the same pass,
    one file per part in `folder` (`<part>.json`, its records in the same order); files of
    parts no longer in the recipe are removed. Returns part name -> its file."""
    segments = emission_segments(recipe, mult)
    folder.mkdir(parents=True, exist_ok=True)
    files = {p.name: folder / f"{p.name}.json" for p in recipe.parts}
    codes = [labels[s][order] for s, order in segments]
    jsonscan.write_segments(
        [(indexes[s].index, order) for s, order in segments],
        out,
        workers=workers,
        parts=(np.concatenate(codes) if codes else np.zeros(0, np.int64), list(files.values())),
    )
    for stray in sorted(folder.glob("*.json")):
        if stray.stem not in files:
            remove_path(stray)
    return files
