"""Mix the components of mix1M with weights, check every record, write the training file.

Reads the mix1M file and the split stage's index; applies `mix.<component>`
weights with `mix.seed` (a weight's whole part repeats a component, its
fraction keeps that share of its records, chosen by a stable hash of seed and
record), checks each selected record's structure and image, applies
`validate.policy`, and writes the training file (ids as strings, one record per
line), a link to it where Open-LLaVA-NeXT's script looks, a report of every
record with a problem, metrics and the composition plot.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava_data import jsonscan, mixcore
from llava_data.common import (
    StageError,
    atomic_path,
    load_params,
    only_file,
    run_main,
    write_json,
    write_report,
)
from llava_data.jsonscan import iter_records
from llava_data.validate import ValidationParams, count_reasons, enforce, record_problems
from stages.split import SplitParams, load_index


@dataclass(frozen=True)
class MixParams:
    """`mix.*`: one weight per component and the seed, checked before any I/O."""

    weights: dict[str, float]
    seed: int

    @classmethod
    def parse(cls, raw: object, components: list[str]) -> MixParams:
        if not isinstance(raw, dict):
            raise StageError("params.yaml: `mix` must be a mapping of component weights")
        weights = mixcore.validate_weights(
            {k: v for k, v in raw.items() if k != "seed"}, components
        )
        seed = raw.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise StageError(f"params.yaml: mix.seed must be a whole number >= 0, got {seed!r}")
        return cls(weights, seed)


def composition(codes: np.ndarray, names: list[str], after_weights, final) -> dict:
    """Records per component: as published, after weights, after validation."""
    return {
        "published": per_component(codes, np.ones(len(codes), dtype=np.int64), names),
        "after_weights": per_component(codes, after_weights, names),
        "after_validation": per_component(codes, final, names),
    }


def per_component(codes: np.ndarray, counts: np.ndarray, names: list[str]) -> dict[str, int]:
    """Sum of `counts` per component code, every component listed."""
    return {name: int(counts[codes == k].sum()) for k, name in enumerate(names)}


def link(alias: Path, target: Path) -> None:
    """Make `alias` a relative symlink to `target`."""
    alias.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(alias) as tmp:
        tmp.symlink_to(os.path.relpath(target, alias.parent))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mix", required=True, type=Path, help="fetch output folder of mix1M")
    ap.add_argument("--index", required=True, type=Path, help="the split stage's index")
    ap.add_argument("--params", required=True)
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--alias", required=True, type=Path, help="symlink to --out")
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path)
    ap.add_argument("--plot", required=True, type=Path)
    args = ap.parse_args(argv)

    names = SplitParams.parse(load_params(args.params, "split")).components
    mparams = MixParams.parse(load_params(args.params, "mix"), names)
    vparams = ValidationParams.parse(load_params(args.params, "validate"))

    index, codes, index_names = load_index(args.index, only_file(args.mix))
    if index_names != names:
        raise StageError(
            f"{args.index} holds components {index_names}, params.yaml names {names}: "
            f"run `dvc repro split`"
        )

    assigned = [names[c] for c in codes]
    mult = mixcore.multiplicity(assigned, index.digests, mparams.weights, mparams.seed)
    after_weights = mult.copy()

    selected = np.flatnonzero(mult > 0)
    problems = record_problems(iter_records(index, selected), "", args.data_root, vparams)
    drop = enforce(f"mix of {index.path}", problems, index.ids, vparams.policy)
    mult[sorted(drop)] = 0

    order = mixcore.emission_order(mult)
    jsonscan.write_array(index, order, args.out)
    link(args.alias, args.out)
    write_report(
        args.report,
        [
            (index.ids[n], names[codes[n]], path, reason, "dropped" if n in drop else "kept")
            for n, (reason, path) in sorted(problems.items())
        ],
        ("id", "component", "image", "reason", "action"),
    )
    by_step = composition(codes, names, after_weights, mult)
    write_json(
        args.metrics,
        {
            "records": {step: sum(counts.values()) for step, counts in by_step.items()},
            "components": {name: {step: by_step[step][name] for step in by_step} for name in names},
            "problems": count_reasons(problems),
            "dropped": len(drop),
        },
    )
    with atomic_path(args.plot) as tmp:
        rows = ["component,published,mixed"] + [
            f"{name},{by_step['published'][name]},{by_step['after_validation'][name]}"
            for name in names
        ]
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(run_main(main))
