"""The recipes, built by the real `dvc` CLI: every built-in split against the miniature's own
truth, ablation of one part, seeded sampling, and the data YAML read as LLaVA-NeXT does."""

from __future__ import annotations

import csv
import json
import math
import random
from hashlib import blake2b

import orjson
import pytest
import xxhash
import yaml

from miniature import generate
from tests.dvcrepo import dvc

RECIPES = ("mix1m", "llava_v1_5_665k", "sharegpt4v_665k", "mix1m_no_allava_llava_half")
OUT = {
    "mix1m": "data/open-llava-next/open-llava-next_instruct_mix1M.json",
    **{r: f"data/recipes/{r}.json" for r in RECIPES[1:]},
}


@pytest.fixture(scope="module")
def built(built_copy):
    return built_copy


def load(path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def key(record: dict) -> str:
    return json.dumps({**record, "id": str(record["id"])}, sort_keys=True)


def dropped(repo, recipe: str) -> set[tuple[str, str]]:
    with open(repo / f"reports/recipes/{recipe}.problems.tsv", encoding="utf-8") as fh:
        return {
            (r["id"], r["image"]) for r in csv.DictReader(fh, delimiter="\t")
            if r["action"] == "dropped"
        }  # fmt: skip


def kept(records, gone) -> list[str]:
    return sorted(key(r) for r in records if (str(r["id"]), r.get("image", "")) not in gone)


def source_of(generator_key: str) -> str:
    """The part of a miniature 665K record, from the key the generator made it under."""
    head = generator_key.split("/")[0]
    return {
        "coco-ap": "coco_ap",
        "web-celebrity": "div",
        "web-landmark": "div",
        "wikiart": "div",
        "share_textvqa": "div",
    }.get(head, head)


def truth() -> dict[str, dict[str, list[dict]]]:
    """Per 665K split, per part: the records the miniature generator made for that source."""
    subsets = generate.llava_instruct_subsets()
    llava = {k: r for subset in subsets.values() for k, r in subset.items()}
    mix665k = generate.llava_mix665k_records(llava)
    sharegpt4v = generate.sharegpt4v_records(mix665k)
    out: dict[str, dict[str, list[dict]]] = {"llava_v1_5_665k": {}, "sharegpt4v_665k": {}}
    for k, rec in mix665k.items():
        out["llava_v1_5_665k"].setdefault(source_of(k), []).append(rec)
    for k, rec in sharegpt4v.items():
        # ShareGPT4V replaced LLaVA's detail captions by its own COCO captions
        part = "coco_ap" if k.startswith("llava/detail/") else source_of(k)
        out["sharegpt4v_665k"].setdefault(part, []).append(rec)
    return out


@pytest.mark.parametrize("split", ["llava_v1_5_665k", "sharegpt4v_665k"])
def test_each_665k_part_holds_exactly_the_records_of_its_source(built, split):
    gone = dropped(built, split)
    expected = truth()[split]
    parts = {p.stem for p in (built / f"data/recipes/{split}").glob("*.json")}
    assert parts == set(expected)
    for part, records in expected.items():
        got = sorted(key(r) for r in load(built / f"data/recipes/{split}/{part}.json"))
        assert got == kept(records, gone), part
    metrics = json.loads((built / f"metrics/splits/{split}.json").read_text())
    assert metrics["exact"] is True
    assert metrics["parts"] == {p: len(r) for p, r in sorted(expected.items())}


def test_the_replacement_report_names_each_replaced_record_and_its_successor(built):
    metrics = json.loads((built / "metrics/splits/sharegpt4v_665k.json").read_text())
    versus = metrics["versus_llava_v1_5_665k"]
    details = generate.llava_instruct_subsets()["llava_detail_23k"]
    assert versus["replaced"] == {"llava": len(details)}
    assert versus["replaced_by"] == {"llava -> coco_ap": len(details)}
    with open(built / "reports/sharegpt4v_665k.replaced.tsv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert sorted((r["llava_v1_5_665k_id"], r["sharegpt4v_665k_id"]) for r in rows) == sorted(
        (r["id"], r["id"]) for r in details.values()
    )


def test_every_recipe_is_its_part_files_and_its_yaml_read_as_llava_next_reads_it(built):
    for recipe in RECIPES:
        training = sorted(key(r) for r in load(built / OUT[recipe]))
        spec = yaml.safe_load((built / f"data/recipes/{recipe}.yaml").read_text())
        assert [d["sampling_strategy"] for d in spec["datasets"]] == ["all"] * len(spec["datasets"])
        assert sorted(key(r) for r in llava_next_records(built, spec)) == training, recipe


def llava_next_records(repo, spec: dict) -> list[dict]:
    """What LLaVA-NeXT's train.py (LazySupervisedDataset) reads from a data YAML: each
    `datasets` entry's json_path, cut by its sampling_strategy, concatenated."""
    out = []
    for dataset in spec["datasets"]:
        records = json.loads((repo / dataset["json_path"]).read_text(encoding="utf-8"))
        strategy, number = dataset.get("sampling_strategy", "all"), None
        if ":" in strategy:
            strategy, number = strategy.split(":")
            if "%" in number:
                number = math.ceil(int(number.split("%")[0]) * len(records) / 100)
            else:
                number = int(number)
        if strategy == "first" and number is not None:
            records = records[:number]
        elif strategy == "end" and number is not None:
            records = records[-number:]
        elif strategy == "random" and number is not None:
            random.shuffle(records)
            records = records[:number]
        out.extend(records)
    return out


def test_a_recipe_of_ones_own_mixes_files_across_families(built):
    records = load(built / OUT["mix1m_no_allava_llava_half"])
    assert not [r for r in records if r.get("image", "").startswith("allava_vflan/")]
    llava = load(built / "data/recipes/llava_v1_5_665k/llava.json")
    half = load(built / "data/recipes/mix1m_no_allava_llava_half/llava_instruct.json")
    assert half == llava[: math.ceil(len(llava) / 2)]  # first:50%, in file order
    mix1m = load(built / OUT["mix1m"])
    mix1m = [r for r in mix1m if not r.get("image", "").startswith("allava_vflan/")]
    assert records == mix1m + half  # one pass: mix1M's file first, then the 665K's


def changed_metrics(repo) -> set[tuple[str, str]]:
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    return {
        (path, name)
        for path, entries in diff.items()
        for name, value in entries.items()
        if value.get("diff") not in (0, None) or value.get("old") != value.get("new")
    }


def test_dropping_vqav2_drops_exactly_the_vqav2_records_and_nothing_else(built):
    before = {r: (built / OUT[r]).read_bytes() for r in RECIPES}
    records = load(built / OUT["llava_v1_5_665k"])
    vqav2 = {key(r) for r in load(built / "data/recipes/llava_v1_5_665k/vqav2.json")}
    run = dvc("exp", "run", "-S", "mixtures.llava_v1_5_665k.vqav2=0", cwd=built)
    assert "Running stage 'mix@llava_v1_5_665k'" in run.stdout
    assert "Running stage 'mix@mix1m'" not in run.stdout
    after = load(built / OUT["llava_v1_5_665k"])
    assert after == [r for r in records if key(r) not in vqav2] and len(vqav2) == 4
    assert all((built / OUT[r]).read_bytes() == before[r] for r in RECIPES if r != RECIPES[1])
    changed = changed_metrics(built)
    assert {path for path, _ in changed} == {"metrics/recipes/llava_v1_5_665k.json"}
    steps = ("after_weights", "after_decontamination", "after_validation")
    audit = ("duplicates.", "overlap.")
    assert {k for _, k in changed if not k.startswith(audit)} == {
        f"{w}.{s}" for w in ("parts.vqav2", "records") for s in steps
    }
    # VQAv2's records showed images with copies elsewhere (VG's resized COCO image) and
    # evaluation images: their duplicate pairs and that overlap went with them
    pairs = {k for _, k in changed if k.startswith("duplicates.parts.")}
    assert pairs and all("vqav2" in k for k in pairs)
    assert load(built / "data/recipes/llava_v1_5_665k/vqav2.json") == []


def draw(record: dict, seed: int) -> float:
    """The draw of a record as the README documents it, computed here from first principles."""
    digest = xxhash.xxh3_128_digest(orjson.dumps({**record, "id": str(record["id"])}))
    hashed = blake2b(seed.to_bytes(8, "little") + digest, digest_size=8).digest()
    return (int.from_bytes(hashed, "little") >> 11) * 2.0**-53


def test_random_sampling_is_seeded_documented_and_nested(built):
    part = load(built / "data/recipes/llava_v1_5_665k/ocr_vqa.json")
    gone = dropped(built, "llava_v1_5_665k")
    records = truth()["llava_v1_5_665k"]["ocr_vqa"]
    by_draw = sorted(records, key=lambda r: draw(r, 0))
    picked = {}
    for share in (50, 30):
        setting = f"mixtures.llava_v1_5_665k.ocr_vqa=random:{share}%"
        dvc("exp", "run", "-S", setting, "mix@llava_v1_5_665k", cwd=built)
        picked[share] = {key(r) for r in load(built / "data/recipes/llava_v1_5_665k/ocr_vqa.json")}
        chosen = by_draw[: math.ceil(share * len(records) / 100)]
        assert picked[share] == set(kept(chosen, gone)), share
    assert picked[30] <= picked[50] and len(part) == len(kept(records, gone))
