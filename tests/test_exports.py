"""Every export of every built recipe, read back by the library its users use: webdataset
and wids, datasets (also streaming), LLaMA-Factory's dataset_info conventions; and two
builds give the same bytes."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import sys
import tarfile
import types
from pathlib import Path

import datasets
import orjson
import pytest
import webdataset
import yaml

from llava_data.exports import ROLES, Record, arrow_schema, write_webdataset
from tests.dvcrepo import run

RECIPES = ("mix1m", "llava_v1_5_665k", "sharegpt4v_665k", "mix1m_no_allava_llava_half")


@pytest.fixture(scope="module")
def built(first_build):
    return first_build


def parts_of(repo: Path, recipe: str) -> list[tuple[str, list[dict]]]:
    """The recipe's parts and their records, in the order of its data YAML."""
    spec = yaml.safe_load((repo / f"data/recipes/{recipe}.yaml").read_text(encoding="utf-8"))
    out = []
    for dataset in spec["datasets"]:
        path = repo / dataset["json_path"]
        out.append((path.stem, json.loads(path.read_text(encoding="utf-8"))))
    return out


def records_of(repo: Path, recipe: str) -> list[dict]:
    return [r for _, recs in parts_of(repo, recipe) for r in recs]


def images_of(record: dict) -> list[str]:
    image = record.get("image")
    return [] if image is None else [image] if isinstance(image, str) else list(image)


def image_bytes(repo: Path, record: dict) -> list[bytes]:
    return [(repo / "data" / rel).read_bytes() for rel in images_of(record)]


@pytest.mark.parametrize("recipe", RECIPES)
def test_webdataset_streams_every_record_with_its_images(built, recipe):
    folder = built / f"exports/{recipe}/webdataset"
    shards = sorted(str(p) for p in folder.glob(f"{recipe}-*.tar"))
    samples = list(webdataset.WebDataset(shards, shardshuffle=False))
    records = records_of(built, recipe)
    assert len(samples) == len(records)
    for sample, record in zip(samples, records, strict=True):
        assert "." not in sample["__key__"] and "/" not in sample["__key__"]
        assert orjson.loads(sample["json"]) == record
        got = [
            sample[k] for k in sorted(k for k in sample if not k.startswith("__") and k != "json")
        ]
        assert got == image_bytes(built, record)


def load_wids():
    """wids' own index and indexed-tar readers. Its package __init__ imports torch for its
    Dataset classes, which the environment does not carry: the two modules are loaded on
    their own, as they are."""
    spec = importlib.util.find_spec("webdataset")
    root = Path(spec.origin).parent.parent / "wids"
    package = types.ModuleType("wids")
    package.__path__ = [str(root)]
    saved = {k: v for k, v in sys.modules.items() if k == "wids" or k.startswith("wids.")}
    sys.modules["wids"] = package
    try:
        return importlib.import_module("wids.wids_specs"), importlib.import_module(
            "wids.wids_mmtar"
        )
    finally:
        for k in [k for k in sys.modules if k == "wids" or k.startswith("wids.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.mark.parametrize("recipe", ["llava_v1_5_665k", "mix1m_no_allava_llava_half"])
def test_the_wids_index_names_every_shard_and_its_samples(built, recipe):
    specs, mmtar = load_wids()
    folder = built / f"exports/{recipe}/webdataset"
    index = folder / f"{recipe}.wids.json"
    desc = specs.load_dsdesc_and_resolve(str(index), base=str(folder) + "/")
    samples = []
    for shard in desc["shardlist"]:
        assert Path(shard["url"]).stat().st_size == shard["filesize"]
        tar = mmtar.MMIndexedTar(shard["url"])
        keys: dict[str, dict] = {}
        for name, data in tar:
            key, ext = name.split(".", 1)
            keys.setdefault(key, {})[ext] = bytes(data)
        tar.close()
        assert len(keys) == shard["nsamples"]
        samples += keys.values()
    assert [orjson.loads(s["json"]) for s in samples] == records_of(built, recipe)


def rows_equal(repo: Path, row: dict, record: dict, part: str) -> None:
    assert row["id"] == record["id"] and row["data_source"] == part
    assert row["conversations"] == [
        {"from": t["from"], "value": t["value"]} for t in record["conversations"]
    ]
    images = [row["image"]] if row["image"] is not None else list(row["images"])
    assert [i["bytes"] for i in images] == image_bytes(repo, record)
    assert [i["path"] for i in images] == images_of(record)


@pytest.mark.parametrize("recipe", RECIPES)
def test_parquet_loads_per_part_with_datasets_offline_and_streams(built, recipe, tmp_path):
    folder = built / f"exports/{recipe}/parquet"
    parts = parts_of(built, recipe)
    for part, records in parts:
        files = sorted(str(p) for p in (folder / part).glob("*.parquet"))
        ds = datasets.load_dataset(
            "parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache")
        ).cast_column("image", datasets.Image(decode=False))
        ds = ds.cast_column("images", [datasets.Image(decode=False)])
        assert len(ds) == len(records)
        for row, record in zip(ds, records, strict=True):
            rows_equal(built, row, record, part)
    # the dataset card's configs, as the Hub (or load_dataset of the folder) reads them
    part, records = parts[0]
    ds = datasets.load_dataset(str(folder), part, split="train", cache_dir=str(tmp_path / "c2"))
    assert [r["id"] for r in ds] == [r["id"] for r in records]
    everything = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c3"))
    assert len(everything) == sum(len(r) for _, r in parts)
    streamed = datasets.load_dataset(
        "parquet", data_files=sorted(str(p) for p in (folder / part).glob("*.parquet")),
        split="train", streaming=True,
    )  # fmt: skip
    streamed = streamed.cast_column("image", datasets.Image(decode=False))
    streamed = streamed.cast_column("images", [datasets.Image(decode=False)])
    got = list(streamed)
    assert len(got) == len(records)
    for row, record in zip(got, records, strict=True):
        rows_equal(built, row, record, part)
    first = next(r for r in ds if r["image"] is not None)  # decoded by the Image feature
    assert first["image"].size[0] > 0


@pytest.mark.parametrize("recipe", RECIPES)
def test_llamafactory_export_follows_its_dataset_info_conventions(built, recipe):
    folder = built / f"exports/{recipe}/llamafactory"
    info = json.loads((folder / "dataset_info.json").read_text())
    entry = info[recipe]
    assert entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    tags = entry["tags"]
    rows = json.loads((folder / entry["file_name"]).read_text(encoding="utf-8"))
    records = records_of(built, recipe)
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        messages = row[entry["columns"]["messages"]]
        assert [m[tags["role_tag"]] for m in messages] == [
            (tags["user_tag"], tags["assistant_tag"])[i % 2] for i in range(len(messages))
        ]
        assert [m[tags["content_tag"]] for m in messages] == [
            t["value"] for t in record["conversations"]
        ]
        images = row[entry["columns"]["images"]]
        text = "".join(m[tags["content_tag"]] for m in messages)
        assert text.count("<image>") == len(images)
        assert images == images_of(record)
        assert all((built / "data" / i).is_file() for i in images)  # media_dir: data
    assert set(ROLES.values()) == {tags["user_tag"], tags["assistant_tag"]}


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("fmt", ["webdataset", "parquet", "llamafactory"])
def test_a_second_export_has_the_same_bytes(built, tmp_path, fmt):
    recipe = "sharegpt4v_665k"
    out = tmp_path / fmt
    run(
        [
            "python", "-m", "stages.export", "--recipe", recipe, "--format", fmt,
            "--params", "params.yaml", "--yaml", f"data/recipes/{recipe}.yaml",
            "--data-root", "data", "--out", str(out),
        ],
        built,
    )  # fmt: skip
    assert digest_tree(out) == digest_tree(built / f"exports/{recipe}/{fmt}")
    assert digest_tree(out)


def test_webdataset_shards_close_at_the_size_and_members_have_fixed_metadata(tmp_path):
    (tmp_path / "data").mkdir()
    for i in range(5):
        (tmp_path / "data" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(900))
    records = [
        Record({"id": f"a.b/{i}", "image": f"{i}.jpg", "conversations": []}, "p") for i in range(5)
    ]
    records.append(Record({"id": "t", "image": ["0.jpg", "1.jpg"], "conversations": []}, "q"))
    records.append(Record({"id": "text", "conversations": []}, "q"))
    out, one = tmp_path / "out", tmp_path / "one"
    out.mkdir()
    one.mkdir()
    counts = write_webdataset(records, tmp_path / "data", out, "r", shard_bytes=4096)
    assert write_webdataset(records, tmp_path / "data", one, "r", 4096, workers=1) == counts
    assert digest_tree(one) == digest_tree(out)  # two processes or one: the same bytes
    index = json.loads((out / "r.wids.json").read_text())
    assert counts == {"samples": 7, "shards": len(index["shardlist"])} and counts["shards"] > 1
    assert sum(s["nsamples"] for s in index["shardlist"]) == 7
    names = []
    for shard in index["shardlist"]:
        with tarfile.open(out / shard["url"]) as tar:
            for m in tar.getmembers():
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
                names.append(m.name)
    assert "000000000_a_b_0.json" in names
    assert {"000000005_t.0.jpg", "000000005_t.1.jpg"} <= set(names)
    assert [n for n in names if n.startswith("000000006_")] == ["000000006_text.json"]


def test_the_parquet_schema_is_the_one_datasets_makes_of_its_features():
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "conversations": [
                {"from": datasets.Value("string"), "value": datasets.Value("string")}
            ],
            "data_source": datasets.Value("string"),
            "images": [datasets.Image()],
        }
    )
    expected = features.arrow_schema
    assert arrow_schema().equals(expected, check_metadata=True)
    assert datasets.Features.from_arrow_schema(arrow_schema()) == features


def test_a_shard_is_byte_for_byte_what_tarfile_writes_for_its_members(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(700))
    records = [Record({"id": "x", "image": "a.png", "conversations": []}, "p")]
    out = tmp_path / "out"
    out.mkdir()
    write_webdataset(records, tmp_path / "data", out, "r", shard_bytes=1 << 20)
    with tarfile.open(tmp_path / "ref.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (
            ("000000000_x.json", orjson.dumps(records[0].record)),
            ("000000000_x.png", (tmp_path / "data/a.png").read_bytes()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
            tar.addfile(info, io.BytesIO(data))
    assert (out / "r-000000.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()


def test_records_whose_images_are_missing_are_left_out_and_counted(tmp_path):
    from llava_data.exports import with_images_present

    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff")
    records = [
        Record({"id": "1", "image": "a.jpg"}, "p"),
        Record({"id": "2", "image": "gone.jpg"}, "p"),
        Record({"id": "3", "image": ["a.jpg", "gone.jpg"]}, "p"),
        Record({"id": "4"}, "q"),
    ]
    skipped: list = []
    kept = [r.record["id"] for r in with_images_present(records, tmp_path, skipped)]
    assert kept == ["1", "4"] and [r.record["id"] for r in skipped] == ["2", "3"]
