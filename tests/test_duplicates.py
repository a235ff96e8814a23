"""The miniature ships known duplicates (miniature.generate.COPIES) and evaluation images
that sit in its training pool (miniature.evalsets): the metrics of a real build find
exactly those, per recipe, and `dvc exp run -S recipes.<r>.decontaminate=[...]` leaves out
exactly the records that show one of them.

What is expected is derived here from the generator's declarations alone, by a model of
each image as (the picture it shows, its bytes, its pixels), not by the pipeline's code."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations

import pytest

from miniature import evalsets
from miniature.generate import COPIES
from tests.dvcrepo import dvc, run

KINDS = ("exact", "pixels", "near")


def identity(path: str) -> tuple[str, str, str]:
    """(picture, bytes, pixels) of a layout path or an evaluation row's key: a copy keeps
    the picture; an exact copy the bytes and pixels; a pixels copy the pixels."""
    if path not in COPIES:
        return path, path, path
    original, how = COPIES[path]
    picture, data, pixels = identity(original)
    if how == "exact":
        return picture, data, pixels
    if how == "pixels":
        return picture, path, pixels
    return picture, path, path


def link(a: tuple, b: tuple) -> str | None:
    if a[0] != b[0]:
        return None
    return "exact" if a[1] == b[1] else "pixels" if a[2] == b[2] else "near"


def eval_identities() -> dict[str, list[tuple]]:
    """Per evaluation set, the identity of each of its images."""
    out = {}
    for name, (_, files) in evalsets.EVAL_SETS.items():
        ids = set()
        for rows in files.values():
            for key in rows:
                if key is None:
                    continue
                if key.startswith(evalsets.OWN + ":"):
                    ids.add((f"{name}/{key}",) * 3)
                    continue
                how = evalsets.EVAL_COPIES.get((name, key), "exact")
                picture, data, pixels = identity(key)
                copy = f"{name}:{key}"  # re-encoded by the publisher: its own bytes and pixels
                ids.add((picture, data, pixels) if how == "exact" else (picture, copy, copy))
        out[name] = sorted(ids)
    return out


def records(repo, recipe: str) -> list[tuple[str, str, str]]:
    """(record, part, image) of every record of a recipe's part files that has one image;
    a record is named `<part>#<n>`, its place in its part file (ids repeat: LLaVA's records
    about one COCO image all carry its id)."""
    spec = (repo / f"data/recipes/{recipe}.yaml").read_text(encoding="utf-8")
    out = []
    for line in spec.splitlines():
        if "json_path:" in line:
            path = repo / line.split("json_path:")[1].strip()
            for n, rec in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                if isinstance(rec.get("image"), str):
                    out.append((f"{path.stem}#{n}", path.stem, rec["image"]))
    return out


def by_content(recs) -> Counter:
    """The records as (part, image) with their counts: what a decontamination can remove
    (a record's place in its file moves when others before it go)."""
    return Counter((part, image) for _, part, image in recs)


def expected_duplicates(recs) -> dict:
    images = {image for _, _, image in recs}
    best: dict[tuple, int] = {}
    pairs: dict[str, dict[str, set]] = {}
    for rid, part, image in recs:
        for _, other_part, other in recs:
            kind = link(identity(image), identity(other)) if other != image else None
            if kind:
                key = (rid, part)
                best[key] = min(best.get(key, 9), KINDS.index(kind))
                pairs.setdefault(part, {}).setdefault(other_part, set()).add(rid)
    counts = {k: sum(1 for v in best.values() if v == i) for i, k in enumerate(KINDS)}
    by_file: dict[str, set] = {}
    for rid, _, image in recs:
        by_file.setdefault(image, set()).add(rid)
    same_file = {r for ids in by_file.values() if len(ids) > 1 for r in ids}
    return {
        "records": len(best),
        **counts,
        "same_file": len(same_file),
        "parts": {
            a: {b: len(ids) for b, ids in sorted(v.items())} for a, v in sorted(pairs.items())
        },
        "_images": images,
    }


def expected_overlap(recs) -> dict:
    out = {}
    for name, ids in eval_identities().items():
        exact, near, images = set(), set(), set()
        for rid, _, image in recs:
            kinds = {link(identity(image), e) for e in ids} - {None}
            if kinds & {"exact", "pixels"}:
                exact.add(rid)
            elif kinds:
                near.add(rid)
            if kinds:
                images.add(image)
        out[name] = {"records_exact": len(exact), "records_near": len(near), "images": len(images)}
    return out


def metrics(repo, recipe: str) -> dict:
    return json.loads((repo / f"metrics/recipes/{recipe}.json").read_text(encoding="utf-8"))


RECIPES = ("mix1m", "llava_v1_5_665k", "sharegpt4v_665k", "sharegpt4v_pt")


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_counts_exactly_its_known_duplicates(first_build, recipe):
    recs = records(first_build, recipe)
    expected = expected_duplicates(recs)
    expected.pop("_images")
    assert metrics(first_build, recipe)["duplicates"] == expected
    assert expected["records"] > 0


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_counts_exactly_its_known_evaluation_overlap(first_build, recipe):
    got = metrics(first_build, recipe)["overlap"]
    assert got == expected_overlap(records(first_build, recipe))


def test_every_known_copy_and_evaluation_match_is_found_and_nothing_else(first_build):
    got = json.loads((first_build / "metrics/dedup.json").read_text(encoding="utf-8"))
    declared = {k: identity(k) for k in COPIES} | {v[0]: identity(v[0]) for v in COPIES.values()}
    exact = {i[1] for i in declared.values()}
    groups = [[k for k, i in declared.items() if i[1] == b] for b in exact]  # images sharing bytes
    assert got["exact"] == {
        "groups": sum(len(g) > 1 for g in groups),
        "images": sum(len(g) for g in groups if len(g) > 1),
    }
    pictures = {i[0] for i in declared.values()}
    assert got["clusters"]["count"] == len(pictures)
    assert got["clusters"]["images"] == len(declared)
    copied = {
        key
        for _, files in evalsets.EVAL_SETS.values()
        for rows in files.values()
        for key in rows
        if key and not key.startswith(evalsets.OWN)
    }
    pool = declared | {k: identity(k) for k in copied}
    for name, ids in eval_identities().items():
        training = {
            path: kinds
            for path, ident in pool.items()
            if (kinds := {link(ident, e) for e in ids} - {None})
        }
        strong = sum(1 for k in training.values() if k & {"exact", "pixels"})
        assert got["evals"][name] == {
            "images": len({i[1] for i in ids}),
            "training_images_exact": strong,
            "training_images_near": len(training) - strong,
        }, name
    # the cluster report lists exactly the declared copies and the training images an
    # evaluation set copies
    report = (first_build / "reports/dedup/clusters.tsv").read_text(encoding="utf-8")
    listed = {line.split("\t")[2] for line in report.splitlines()[1:]}
    assert {p for p in listed if "#" not in p} == set(declared) | copied


def test_decontamination_leaves_out_exactly_the_records_showing_those_sets(built_copy):
    repo = built_copy
    before = records(repo, "mix1m")
    sets = ["pope", "refcoco_testa"]
    dvc("exp", "run", "-S", f"recipes.mix1m.decontaminate=[{','.join(sets)}]", cwd=repo)
    after = records(repo, "mix1m")
    ids = eval_identities()
    matched = [r for r in before if any(link(identity(r[2]), e) for s in sets for e in ids[s])]
    assert matched and by_content(before) - by_content(after) == by_content(matched)
    assert not by_content(after) - by_content(before)
    m = metrics(repo, "mix1m")
    assert m["decontaminated"]["records"] == len(matched)
    assert m["decontaminated"]["by_set"] == {
        s: sum(any(link(identity(r[2]), e) for e in ids[s]) for r in before) for s in sets
    }
    assert (
        m["overlap"]["pope"]
        == m["overlap"]["refcoco_testa"]
        == {
            "records_exact": 0,
            "records_near": 0,
            "images": 0,
        }
    )
    per_part = {}
    for _, part, _ in matched:
        per_part[part] = per_part.get(part, 0) + 1
    assert m["decontaminated"]["parts"] == per_part
    published = m["records"]["after_weights"]
    assert m["records"]["after_decontamination"] == published - len(matched)
    # the other recipes did not run again: their metrics are the committed ones
    assert run(["git", "diff", "--stat", "metrics/recipes/llava_v1_5_665k.json"], repo).stdout == ""


def test_a_set_that_is_not_an_evaluation_set_is_refused_before_anything_runs(built_copy):
    proc = dvc(
        "exp", "run", "-S", "recipes.mix1m.decontaminate=[popes]", cwd=built_copy, check=False
    )
    assert proc.returncode != 0
    assert "recipes.mix1m.decontaminate: popes is not an evaluation set" in proc.stderr + (
        proc.stdout
    )


def test_pairs_of_parts_are_symmetric_in_the_miniature(first_build):
    for recipe in RECIPES:
        parts = metrics(first_build, recipe)["duplicates"]["parts"]
        for a, b in combinations(sorted(parts), 2):
            assert (b in parts.get(a, {})) == (a in parts.get(b, {}))
