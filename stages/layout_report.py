"""Count every extracted tree against what is expected of it, and what its gaps cost.

Reads the manifests (file counts, the candidate prefix the archive had, known damage per
file), the expected counts of the registry (`sources.<archive>.<profile>.files.<tree>`,
with their confidence) and the validation reports (`<reports>/*.problems.tsv`: records
whose image is missing). Writes a metrics file, per tree: files found, expected, the
difference, damaged files by kind, referenced images that are missing or will not load, and the
records each report lost to them; and a TSV listing every damaged file. On a full build this is
what no upstream publishes: each folder's real count and the records its gaps cost.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

from llava_data.common import atomic_path, load_params, run_main, write_json
from llava_data.layout import tree_specs
from llava_data.origins import Origin
from llava_data.verify import read_manifest

MISSING = ("image_missing", "image_name_unicode_form")
UNREADABLE = ("image_unreadable", "image_truncated", "image_undecodable")
REPORT_SUFFIX = ".problems.tsv"


def manifest_prefix(path: Path) -> str | None:
    """The member prefix a manifest's header line records (None for an older manifest)."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    if not first.startswith("# ") or " under " not in first:
        return None
    return ast.literal_eval(first.rstrip("\n").rsplit(" under ", 1)[1])


def read_report(path: Path) -> list[dict[str, str]]:
    """The rows of a validation report (tab-separated, one header line)."""
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"), strict=False)) for line in fh]


def tree_of(image: str, dests: list[tuple[str, str]]) -> str | None:
    """The tree whose folder holds `image` (longest folder first), or None."""
    return next((tree for dest, tree in dests if image.startswith(dest + "/")), None)


def count_trees(
    trees: dict[str, dict],
    rows: dict[str, list[tuple]],
    prefixes: dict[str, str | None],
    expected: dict[str, tuple[int | None, str]],
    reports: dict[str, list[dict[str, str]]],
) -> tuple[dict, list[tuple[str, str, str]]]:
    """The per-tree metrics and the damaged files (pure: everything read is passed in)."""
    dests = sorted(((t["dest"], name) for name, t in trees.items()), key=lambda d: -len(d[0]))
    missing: dict[str, set[str]] = {name: set() for name in trees}
    unreadable: dict[str, set[str]] = {name: set() for name in trees}
    lost: dict[str, Counter] = {name: Counter() for name in trees}
    for report, entries in sorted(reports.items()):
        for entry in entries:
            reason = entry.get("reason")
            if reason not in MISSING and reason not in UNREADABLE:
                continue
            tree = tree_of(entry.get("image", ""), dests)
            if tree is not None:
                (missing if reason in MISSING else unreadable)[tree].add(entry["image"])
                lost[tree][report] += 1
    out, damaged = {}, []
    for name in sorted(trees):
        files = rows.get(name)
        count, known = expected.get(name, (None, ""))
        kinds = Counter()
        for path, _, _, damage in files or []:
            if damage:
                kinds[damage if damage in ("empty", "unrecognised") else "format_mismatch"] += 1
                damaged.append((name, path, damage))
        found = None if files is None else len(files)
        out[name] = {
            "dest": trees[name]["dest"],
            "from": prefixes.get(name),
            "files": found,
            "expected": count,
            "expected_known": known if count is not None else None,
            "difference": None if found is None or count is None else found - count,
            "damaged": {k: kinds[k] for k in ("empty", "unrecognised", "format_mismatch")},
            "referenced_missing": len(missing[name]),
            "referenced_unreadable": len(unreadable[name]),
            "records_lost": dict(sorted(lost[name].items())),
        }
    return out, sorted(damaged)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, type=Path)
    ap.add_argument("--params", required=True, type=Path)
    ap.add_argument("--manifests", required=True, type=Path)
    ap.add_argument("--reports", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path)
    ap.add_argument("--damage", required=True, type=Path)
    args = ap.parse_args(argv)

    profile = load_params(args.params, "profile")
    specs = tree_specs(load_params(args.registry, "layout"))
    trees = {name: {"dest": spec.dest} for name, spec in specs.items()}
    sources = load_params(args.registry, "sources")
    expected = {}
    for name, spec in specs.items():
        # a pool's count is its one used input's (two inputs may hold the same files)
        origins = [Origin.parse(a, sources[a], profile) for a in spec.archives]
        used = [o for o in origins if o.use]
        count = dict(used[0].files).get(name) if len(used) == 1 else None
        expected[name] = (count, used[0].confidence("files") if len(used) == 1 else "published")
    rows, prefixes = {}, {}
    for name in trees:
        manifest = args.manifests / f"{name}.tsv"
        if manifest.is_file():
            rows[name] = read_manifest(manifest, with_damage=True)
            prefixes[name] = manifest_prefix(manifest)
    reports = {
        path.name[: -len(REPORT_SUFFIX)]: read_report(path)
        for path in sorted(args.reports.glob(f"*{REPORT_SUFFIX}"))
    }
    per_tree, damaged = count_trees(trees, rows, prefixes, expected, reports)
    write_json(args.metrics, {"profile": profile, "trees": per_tree})
    with atomic_path(args.damage) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("tree\tfile\tdamage\n")
        fh.writelines(f"{tree}\t{path}\t{damage}\n" for tree, path, damage in damaged)


if __name__ == "__main__":
    sys.exit(run_main(main))
