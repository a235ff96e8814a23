"""Check every parameter before any stage runs, so a bad value stops the build at once.

Reads params.yaml (`profile`, `extract`, `validate`, `splits`, `recipes`, `mix`, `mixtures`,
`exports`) and the registry (`sources`, `layout`) and checks each value with the same
parser the stage that uses it runs. Every fetch stage depends on this stage's output, so DVC runs it
first: a typo in any parameter stops `dvc repro` and `dvc exp run` here, before DVC has
touched a single output, with one line per problem. Writes `--out`, whose content only
names what was checked (it never changes with the values, so nothing downstream re-runs
because of it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from llava_data.common import StageError, run_main, write_json
from llava_data.dedup import DedupParams
from llava_data.exports import ExportParams
from llava_data.imageindex import IndexParams
from llava_data.layout import TreeSpec, parse_max_ratio, unsafe_parts
from llava_data.origins import Origin
from llava_data.recipes import Amounts, Recipe
from llava_data.splitting import parse_splits
from llava_data.validate import ValidationParams

PARAMS = (
    "profile",
    "extract",
    "validate",
    "index",
    "dedup",
    "splits",
    "recipes",
    "mix",
    "mixtures",
    "exports",
)
REGISTRY = ("sources", "layout")


def profiles(sources: dict) -> list[str]:
    """The profiles every source defines (an origin is a mapping under the profile's name)."""
    sets = [
        {key for key, value in entry.items() if isinstance(value, dict)}
        for entry in sources.values()
        if isinstance(entry, dict)
    ]
    return sorted(set.intersection(*sets)) if sets else []


def check_profile(profile: object, sources: dict) -> str:
    allowed = profiles(sources)
    if profile not in allowed:
        raise StageError(
            f"params.yaml: profile is {profile!r}; allowed values: {', '.join(allowed)} "
            f"(the origins every entry of sources.yaml defines)"
        )
    return profile


def check_layout(layout: object, sources: dict) -> list[str]:
    """Problems of `layout.trees`, `layout.pools`, `layout.annotations` and `layout.copies`."""
    if not isinstance(layout, dict):
        return ["sources.yaml: `layout` must be a mapping of trees, annotations and copies"]
    problems = []
    parsers = (("trees", TreeSpec.parse), ("pools", TreeSpec.parse_pool))
    for section, parse in parsers:
        for name, raw in sorted((layout.get(section) or {}).items()):
            try:
                spec = parse(name, raw)
            except StageError as err:
                problems.append(str(err))
                continue
            for archive in spec.archives:
                if archive not in sources:
                    problems.append(f"layout.{section}.{name}: archive {archive!r} is not a source")
    dests = {}
    for section in ("trees", "pools"):
        for name, raw in sorted((layout.get(section) or {}).items()):
            dest = raw.get("dest") if isinstance(raw, dict) else None
            if dest in dests:
                problems.append(
                    f"layout.{section}.{name}: dest {dest!r} is also {dests[dest]}'s; one tree "
                    f"per folder (a folder several archives fill is a pool, layout.pools)"
                )
            elif isinstance(dest, str):
                dests[dest] = name
    for name, raw in sorted((layout.get("annotations") or {}).items()):
        where = f"layout.annotations.{name}"
        if name not in sources:
            problems.append(f"{where}: {name!r} is not a source")
        if not isinstance(raw, dict) or not isinstance(raw.get("dest"), str):
            problems.append(f"{where}: needs `dest` (a file under data/) and `images`")
            continue
        images = raw.get("images")
        if not isinstance(images, str) or (images and not images.endswith("/")):
            problems.append(f"{where}.images: a folder under data/ ending with '/', or \"\"")
        if not raw["dest"] or unsafe_parts(raw["dest"]):
            problems.append(f"{where}.dest: a relative path inside data/, got {raw['dest']!r}")
    evals = layout.get("evals") or {}
    if not isinstance(evals, dict):
        problems.append("layout.evals: a mapping of evaluation set -> {source: <a source>}")
        evals = {}
    for name, raw in sorted(evals.items()):
        if not isinstance(raw, dict) or raw.get("source") not in sources:
            problems.append(f"layout.evals.{name}: `source` must name a source, got {raw!r}")
    for name, dest in sorted((layout.get("copies") or {}).items()):
        if name not in sources:
            problems.append(f"layout.copies.{name}: {name!r} is not a source")
        if not isinstance(dest, str) or not dest or unsafe_parts(dest):
            problems.append(f"layout.copies.{name}: a relative path inside data/, got {dest!r}")
    return problems


def problems_of(params: dict, registry: dict) -> list[str]:
    """Every problem of the parameters, each naming its key (empty: all good)."""
    problems: list[str] = []

    def attempt(check: Callable[[], object]) -> object:
        try:
            return check()
        except StageError as err:
            problems.append(str(err))
            return None

    sources = registry.get("sources")
    if not isinstance(sources, dict) or not sources:
        return ["sources.yaml: `sources` must be a mapping of source entries"]
    profile = attempt(lambda: check_profile(params.get("profile"), sources))
    if profile is not None:
        for name, entry in sorted(sources.items()):
            attempt(lambda name=name, entry=entry: Origin.parse(name, entry, profile))
    problems.extend(check_layout(registry.get("layout"), sources))
    attempt(lambda: parse_max_ratio(params.get("extract")))
    attempt(lambda: ValidationParams.parse(params.get("validate")))
    attempt(lambda: IndexParams.parse(params.get("index")))
    attempt(lambda: DedupParams.parse(params.get("dedup")))
    layout = registry.get("layout")
    evals = set((layout.get("evals") or {}) if isinstance(layout, dict) else {})
    splits = attempt(lambda: parse_splits(params.get("splits")))
    raw_recipes = params.get("recipes")
    if not isinstance(raw_recipes, dict) or not raw_recipes:
        problems.append("params.yaml: `recipes` must map recipe names to their parts")
    elif splits is not None:
        for name, raw in raw_recipes.items():  # each recipe on its own: every problem listed
            recipe = attempt(lambda n=name, r=raw: Recipe.parse(str(n), r, splits))
            if recipe is None:
                continue
            unknown = sorted(set(recipe.decontaminate) - evals)
            if unknown:
                problems.append(
                    f"params.yaml: recipes.{name}.decontaminate: {', '.join(unknown)} "
                    f"is not an evaluation set (sources.yaml layout.evals: "
                    f"{', '.join(sorted(evals)) or 'none'})"
                )
            section = recipe.weights.split(".")
            amounts = params.get(section[0])
            if len(section) > 1:
                amounts = amounts.get(section[1]) if isinstance(amounts, dict) else None
            names = [p.name for p in recipe.parts]
            attempt(lambda r=recipe, a=amounts, n=names: Amounts.parse(r.weights, a, n))
        names = sorted(str(n) for n in raw_recipes)
        attempt(lambda: ExportParams.parse(params.get("exports"), names))
    return problems


def read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise StageError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a mapping at the top")
    return data


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True, type=Path)
    ap.add_argument("--registry", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)

    problems = problems_of(read_yaml(args.params), read_yaml(args.registry))
    if problems:
        raise StageError(
            f"{len(problems)} bad parameter value(s); nothing was run and no output was "
            f"touched. Fix them (or undo the `-S` of `dvc exp run`) and run again:\n  "
            + "\n  ".join(p.replace("\n", "\n  ") for p in problems)
        )
    write_json(args.out, {"checked": {"params.yaml": list(PARAMS), "sources.yaml": list(REGISTRY)}})


if __name__ == "__main__":
    sys.exit(run_main(main))
