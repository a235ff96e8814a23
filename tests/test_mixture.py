"""The mixture, built by the real `dvc` CLI: weights, ablations, validation reports, metrics."""

from __future__ import annotations

import csv
import json

import pytest

from tests.dvcrepo import dvc, run

MIX = "data/open-llava-next/open-llava-next_instruct_mix1M.json"
PUBLISHED = (
    "miniature/upstream/hf/Lin-Chen/Open-LLaVA-NeXT-mix1M/open-llava-next_instruct_mix1M.json"
)


@pytest.fixture(scope="module")
def built(built_copy):
    return built_copy


def load(repo, rel=MIX) -> list[dict]:
    return json.loads((repo / rel).read_text(encoding="utf-8"))


def published(repo) -> list[dict]:
    """The published mix1M-mini with ids as strings, the only normalisation."""
    return [{**r, "id": str(r["id"])} for r in load(repo, PUBLISHED)]


def dropped(repo) -> list[dict]:
    with open(repo / "reports/recipes/mix1m.problems.tsv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def component(record: dict) -> str:
    image = record.get("image", "")
    return "allava" if image.startswith("allava_vflan/") else image.split("/")[0]


def exp(repo, *assignments: str, target: str | None = "mix@mix1m") -> None:
    """`dvc exp run -S ...`, of the mix1M recipe's stage (and what it depends on) unless
    `target` is None: the weight semantics need no export."""
    args = [a for kv in assignments for a in ("-S", kv)]
    dvc("exp", "run", *args, *([target] if target else []), cwd=repo)


@pytest.fixture
def restore(built):
    """After the test, the committed params and lock, and their outputs from the cache (what
    an `exp run` back to every weight 1 would rebuild, without running a stage)."""
    yield built
    run(["git", "checkout", "--", "."], built)
    dvc("checkout", "--force", cwd=built)
    assert "Data and pipelines are up to date." in dvc("status", cwd=built).stdout


def test_all_weights_one_is_mix1m_minus_exactly_the_reported_records(built):
    out = load(built)
    report = dropped(built)
    gone = {(r["id"], r["image"]) for r in report}
    expected = [r for r in published(built) if (r["id"], r.get("image", "")) not in gone]
    assert out == expected
    assert len(report) == 8 and {r["action"] for r in report} == {"dropped"}
    assert {r["reason"] for r in report} == {"image_missing", "image_unreadable", "image_truncated"}
    assert ("Choi_Min-sik", "web-celebrity/images/Choi_Min-sik.jpg") in gone


def test_policy_keep_reproduces_mix1m_record_for_record(restore):
    exp(restore, "validate.policy=keep")
    assert load(restore) == published(restore)
    assert {r["action"] for r in dropped(restore)} == {"kept"}


def test_allava_zero_drops_only_allava_records(restore):
    before = load(restore)
    exp(restore, "mix.allava=0", target=None)  # as the README types it
    after = load(restore)
    assert after == [r for r in before if component(r) != "allava"]
    assert len(before) - len(after) == 8
    diff = dvc("metrics", "diff", "--json", cwd=restore).stdout
    changed = {
        (path, key)
        for path, entries in json.loads(diff).items()
        for key, value in entries.items()
        if value.get("diff") not in (0, None)
    }
    steps = ("after_weights", "after_decontamination", "after_validation")
    counts = {key for _, key in changed if not key.startswith("duplicates.")}
    assert {path for path, _ in changed} == {"metrics/recipes/mix1m.json"}
    assert counts == {f"{w}.{s}" for w in ("parts.allava", "records") for s in steps}
    # the duplicates that went are ALLaVA's (its VQA-E image is a copy of a COCO image the
    # sharegpt4v part shows), and the totals
    duplicates = {key for _, key in changed if key.startswith("duplicates.")}
    assert duplicates and all("allava" in k or k.count(".") == 1 for k in duplicates)


def test_half_weight_keeps_a_stable_nested_share(restore):
    dvqa = [r for r in load(restore) if component(r) == "dvqa"]
    exp(restore, "mix.dvqa=0.5")
    half = [r for r in load(restore) if component(r) == "dvqa"]
    exp(restore, "mix.dvqa=0.3")
    third = [r for r in load(restore) if component(r) == "dvqa"]
    exp(restore, "mix.dvqa=0.5")
    assert [r for r in load(restore) if component(r) == "dvqa"] == half, "stable"
    assert set(map(json.dumps, third)) <= set(map(json.dumps, half)) <= set(map(json.dumps, dvqa))
    assert 0 < len(half) < len(dvqa)


def test_repeat_weight_emits_the_component_again_after_the_published_order(restore):
    before = load(restore)
    exp(restore, "mix.dvqa=2")
    after = load(restore)
    dvqa = [r for r in before if component(r) == "dvqa"]
    assert after == before + dvqa


def test_bad_weight_is_refused_before_anything_runs(restore):
    proc = dvc("exp", "run", "-S", "mix.allava=-1", cwd=restore, check=False)
    assert proc.returncode != 0
    assert "mix.allava" in proc.stdout + proc.stderr


def test_output_loads_with_datasets_as_a_string_id_column(built):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(built / MIX), split="train")
    assert ds.features["id"].dtype == "string"
    assert len(ds) == len(load(built))


def test_llava_next_path_reaches_the_same_file(built):
    alias = built / "data/llava-next/open-llava-next_instruct_mix1M.json"
    assert alias.is_symlink() and alias.read_bytes() == (built / MIX).read_bytes()


def test_add_path_file_has_every_558k_image_under_data(built):
    plain = load(built, "data/llava/llava_pretrain/blip_laion_cc_sbu_558k.json")
    added = load(built, "data/llava/llava_pretrain/blip_laion_cc_sbu_558k_add-path.json")
    assert [r["image"] for r in added] == [
        "llava/llava_pretrain/images/" + r["image"] for r in plain
    ]
    assert all((built / "data" / r["image"]).is_file() for r in added)


def test_split_metrics_count_components_and_upstream_differences(built):
    split = json.loads((built / "metrics/splits/mix1m.json").read_text())
    assert split["parts"]["allava"] == 8
    assert split["compared_with_upstream"] == {
        "allava": {"identical": 7, "only_in_mix": 1, "only_in_upstream": 3},
        "sharegpt4v": {"identical": 69, "only_in_mix": 1, "only_in_upstream": 2},
    }


def test_composition_plot_renders(built):
    out = dvc("plots", "show", "--json", cwd=built).stdout
    assert "metrics/recipes/mix1m.composition.csv" in out and "sharegpt4v" in out


def test_unknown_prefix_stops_the_split_with_examples(built, tmp_path):
    records = [
        {"id": 1, "image": "coco/train2017/a.jpg", "conversations": []},
        {"id": "x7", "image": "mystery/set/b.jpg", "conversations": []},
    ]
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix/mix.json").write_text(json.dumps(records))
    proc = run(
        [
            "python",
            "-m",
            "stages.split",
            "--split",
            "mix1m",
            "--file",
            str(tmp_path / "mix"),
            "--params",
            "params.yaml",
            "--profile",
            "mini",
            "--index",
            str(tmp_path / "index.npz"),
            "--metrics",
            str(tmp_path / "m.json"),
        ],
        built,
        check=False,
    )
    assert proc.returncode == 1
    assert "mystery/" in proc.stderr and "x7" in proc.stderr and "mystery/set/b.jpg" in proc.stderr
    assert not (tmp_path / "index.npz").exists()
