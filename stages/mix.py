"""Build one recipe: choose its records, check every one, write the training files.

Reads `recipes.<name>` and its weights section (`mix` for mix1M, `mixtures.<name>` for
the others) and the split indexes in `--splits`; chooses each part's records by its
weight or sampling strategy (`llava_data.recipes`), leaves out the records whose image is
in an evaluation set the recipe's `decontaminate` lists (`--dedup`, the duplicate tables),
checks each chosen record's structure and images, applies `validate.policy`, counts the
duplicate images and evaluation overlap of what it keeps (`llava_data.audit`; listed in
`--duplicates`), and writes the training file (`recipes.<name>.out`:
ids as strings, one record per line), the same records part by part (`--parts`: one file
per part) with a LLaVA-NeXT data YAML naming them (`--yaml`, every part `sampling_strategy:
all`), a report of every record with a problem, metrics and the composition plot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from llava_data import audit, dedup, jsonscan, recipes, splitting
from llava_data.common import (
    StageError,
    atomic_path,
    load_params,
    run_main,
    write_json,
    write_report,
)
from llava_data.validate import ValidationParams, count_reasons, enforce, record_problems


def data_yaml(recipe: recipes.Recipe, part_files: dict[str, Path]) -> str:
    """The LLaVA-NeXT / OneVision data YAML of the recipe's part files (paths as given)."""
    lines = [
        f"# {recipe.name}: every part file holds exactly the records the recipe chose",
        f"# (`dvc repro mix@{recipe.name}`); paths are relative to the repository root and",
        "# images to data/ (--image_folder data).",
        "datasets:",
    ]
    for part in recipe.parts:
        lines += [
            f"  - json_path: {part_files[part.name].as_posix()}",
            "    sampling_strategy: all",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--splits", required=True, type=Path, help="folder of the split indexes")
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--parts", required=True, type=Path, help="folder of the per-part files")
    ap.add_argument("--yaml", required=True, type=Path)
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path)
    ap.add_argument("--plot", required=True, type=Path)
    ap.add_argument("--dedup", required=True, type=Path, help="folder of the duplicate tables")
    ap.add_argument("--duplicates", required=True, type=Path, help="report of duplicate records")
    args = ap.parse_args(argv)

    # every parameter is checked before any file is read
    specs = splitting.parse_splits(load_params(args.params, "splits"))
    recipe = recipes.Recipe.parse(
        args.recipe, load_params(args.params, f"recipes.{args.recipe}"), specs
    )
    names = [p.name for p in recipe.parts]
    amounts = recipes.Amounts.parse(recipe.weights, load_params(args.params, recipe.weights), names)
    vparams = ValidationParams.parse(load_params(args.params, "validate"))

    indexes = {}
    for split in recipe.splits:
        indexes[split] = splitting.load_index(args.splits / f"{split}.npz")
        if indexes[split].parts != specs[split].parts:
            raise StageError(
                f"{args.splits / split}.npz holds parts {indexes[split].parts}, params.yaml "
                f"names {specs[split].parts}: run `dvc repro` (it splits the file again)"
            )
    dups = dedup.read_tables(args.dedup)
    audit.check_sets(recipe.name, recipe.decontaminate, dups.evals)
    mult, rows_of = recipes.multiplicities(recipe, amounts, indexes)
    after_weights = {p.name: int(mult[p.split][rows_of[p.name]].sum()) for p in recipe.parts}
    labels = recipes.part_labels(recipe, indexes, rows_of)

    images = audit.RecipeImages.of(recipe.splits, indexes, mult, labels, names, dups.items)
    removed, decon_parts, decon_sets = audit.decontaminate(images.attached, recipe.decontaminate)
    images.leave_out(removed, mult)
    after_decon = {p.name: int(mult[p.split][rows_of[p.name]].sum()) for p in recipe.parts}

    rows, dropped, problems_all = [], 0, {}
    for split, index in ((s, indexes[s].index) for s in recipe.splits):
        selected = np.flatnonzero(mult[split] > 0)
        problems = record_problems(
            jsonscan.iter_records(index, selected), "", args.data_root, vparams
        )
        drop = enforce(f"recipe {recipe.name}, {index.path}", problems, index.ids, vparams.policy)
        mult[split][sorted(drop)] = 0
        dropped += len(drop)
        rows += [
            (
                index.ids[n],
                names[labels[split][n]],
                path,
                reason,
                "dropped" if n in drop else "kept",
            )
            for n, (reason, path) in sorted(problems.items())
        ]
        for reason, count in count_reasons(problems).items():
            problems_all[reason] = problems_all.get(reason, 0) + count

    kept = images.kept(mult)
    dup_counts, dup_records = audit.duplicates(kept, dups.near)
    overlap = audit.overlap(kept, dups.evals)
    listed = audit.report_rows(dup_records, kept, dups.items, images.record_id)

    out = Path(recipe.out)
    part_files = recipes.write_recipe(recipe, indexes, mult, labels, out, args.parts)
    with atomic_path(args.yaml) as tmp:
        tmp.write_text(data_yaml(recipe, part_files), encoding="utf-8")
    write_report(args.report, rows, ("id", "part", "image", "reason", "action"))
    write_report(args.duplicates, listed, audit.REPORT_HEADER)
    by_part = {
        p.name: {
            "published": int(rows_of[p.name].size),
            "after_weights": after_weights[p.name],
            "after_decontamination": after_decon[p.name],
            "after_validation": int(mult[p.split][rows_of[p.name]].sum()),
        }
        for p in recipe.parts
    }
    steps = ("published", "after_weights", "after_decontamination", "after_validation")
    write_json(
        args.metrics,
        {
            "records": {step: sum(v[step] for v in by_part.values()) for step in steps},
            "parts": by_part,
            "problems": problems_all,
            "dropped": dropped,
            "decontaminated": {
                "records": sum(decon_parts.values()),
                "parts": decon_parts,
                "by_set": decon_sets,
            },
            "duplicates": dup_counts,
            "overlap": overlap,
        },
    )
    with atomic_path(args.plot) as tmp:
        lines = ["part,published,mixed"] + [
            f"{name},{v['published']},{v['after_validation']}" for name, v in by_part.items()
        ]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(run_main(main))
