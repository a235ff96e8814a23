"""The embedded miniature: reproducible from its generator, and carrying the upstream quirks."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from miniature.generate import build_files

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = yaml.safe_load((ROOT / "sources.yaml").read_text(encoding="utf-8"))
SOURCES = REGISTRY["sources"]


def mini_path(name: str) -> Path:
    return ROOT / SOURCES[name]["mini"]["local"]


def records(name: str) -> list[dict]:
    return json.loads(mini_path(name).read_text(encoding="utf-8"))


def members(name: str) -> dict[str, bytes]:
    with zipfile.ZipFile(mini_path(name)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def test_generator_reproduces_the_committed_files_byte_for_byte():
    files = build_files()
    assert sorted(files) == sorted(SOURCES)
    for name, data in files.items():
        assert mini_path(name).read_bytes() == data, name


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_registry_holds_each_mini_file_size_and_checksum(name):
    data = mini_path(name).read_bytes()
    assert SOURCES[name]["mini"]["size"] == len(data)
    assert SOURCES[name]["mini"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_mix1m_ids_mix_strings_and_integers_and_some_records_are_text_only():
    recs = records("mix1m_json")
    kinds = {type(r["id"]) for r in recs}
    assert kinds == {str, int}
    text_only = [r for r in recs if "image" not in r]
    assert text_only and all(
        "<image>" not in t["value"] for r in text_only for t in r["conversations"]
    )


def test_image_token_opens_instructions_and_closes_pretraining_captions():
    for rec in records("llava_v1_5_mix665k"):
        if "image" in rec:
            assert rec["conversations"][0]["value"].startswith("<image>\n")
    for rec in records("llava_pretrain_558k") + records("cc3m_595k_chat"):
        assert rec["conversations"][0]["value"].endswith("\n<image>")


def test_ocr_vqa_holds_gif_and_png_content_behind_jpg_names():
    heads = {name: data[:4] for name, data in members("ocr_vqa_images").items()}
    jpg_named = {n: h for n, h in heads.items() if n.endswith(".jpg")}
    assert any(h.startswith(b"GIF8") for h in jpg_named.values())
    assert any(h == b"\x89PNG" for h in jpg_named.values())
    assert any(n.endswith(".gif") for n in heads) and any(n.endswith(".png") for n in heads)
    assert all(
        r["image"].endswith(".jpg")
        for r in records("llava_v1_5_mix665k")
        if r.get("image", "").startswith("ocr_vqa/")
    )


def test_vision_flan_names_are_escaped_in_the_zip_and_unicode_in_allava():
    names = members("vision_flan_images")
    escaped = [n for n in names if "#U" in n]
    assert len(escaped) >= 2 and all(n.isascii() for n in names)
    unicode_images = [r["image"] for r in records("allava_vflan_json") if not r["image"].isascii()]
    assert len(unicode_images) >= 2


def test_webdata_lacks_some_referenced_images():
    present = {"web-celebrity/images/" + n.split("/")[-1] for n in members("webdata")}
    referenced = {
        r["image"]
        for r in records("sharegpt4v_mix665k")
        if r.get("image", "").startswith("web-celebrity/")
    }
    assert "web-celebrity/images/Choi_Min-sik.jpg" in referenced - present


def test_vqa_collection_holds_six_subtrees_and_vg_is_split_over_two_zips():
    tops = {"/".join(n.split("/")[:2]) for n in members("vqa_collection")}
    assert tops == {
        "ai2d/images",
        "chartqa/train",
        "docvqa/train",
        "dvqa/images",
        "geoqa+/images",
        "synthdog-en/images",
    }
    assert {n.split("/")[0] for n in members("vg_part1")} == {"VG_100K"}
    assert {n.split("/")[0] for n in members("vg_part2")} == {"VG_100K_2"}


def test_zips_carry_no_timestamps_that_vary():
    for name, source in SOURCES.items():
        if source["file"].endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(mini_path(name).read_bytes())) as zf:
                assert {i.date_time for i in zf.infolist()} == {(2020, 1, 1, 0, 0, 0)}, name
