"""The embedded miniature: reproducible from its generator, and carrying the upstream quirks."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from llava_data.layout import tree_specs
from llava_data.origins import Origin
from miniature.generate import (
    MINI_PREFIX,
    WEBDATA_SOURCES,
    build_files,
    content_counts,
    revision_files,
    tree_members,
)

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = yaml.safe_load((ROOT / "sources.yaml").read_text(encoding="utf-8"))
SOURCES = REGISTRY["sources"]
TREES = REGISTRY["layout"]["trees"]
SPECS = tree_specs(REGISTRY["layout"])
FACTS = ("size", "sha256", "md5", "shown_size", "sha256_prefix", "records", "files")
ALLAVA_INDEX = "hf-revisions.json"


def mini_path(name: str) -> Path:
    return ROOT / SOURCES[name]["mini"]["local"]


def records(name: str) -> list[dict]:
    return json.loads(mini_path(name).read_text(encoding="utf-8"))


def members(name: str) -> dict[str, bytes]:
    with zipfile.ZipFile(mini_path(name)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def test_generator_reproduces_the_committed_files_byte_for_byte():
    files = build_files(REGISTRY["layout"])
    assert sorted(files) == sorted(SOURCES)
    for name, data in files.items():
        if isinstance(data, dict):  # a source of parts: a folder of them (and maybe others)
            folder = {p.name: p for p in mini_path(name).iterdir()}
            assert {n: folder[n].read_bytes() for n in data if n in folder} == data, name
        else:
            assert mini_path(name).read_bytes() == data, name
    extra = revision_files(files["allava_vflan_json"])
    for path, data in extra.items():
        assert (ROOT / MINI_PREFIX / path).read_bytes() == data, path


def test_nothing_stale_lies_in_the_miniature():
    committed = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / MINI_PREFIX).rglob("*") if p.is_file()
    }
    written = {s["mini"]["local"] for s in SOURCES.values() if "parts" not in s["mini"]}
    written |= {
        f"{s['mini']['local']}/{part}"
        for name, s in SOURCES.items()
        if "parts" in s["mini"]
        for part in build_files(REGISTRY["layout"])[name]
    }
    allava = build_files(REGISTRY["layout"])["allava_vflan_json"]
    written |= {MINI_PREFIX + path for path in revision_files(allava)}
    assert committed == written


def test_registry_holds_each_mini_file_records_and_tree_file_counts():
    files = build_files(REGISTRY["layout"])
    counts = content_counts(files, REGISTRY["layout"])
    for name, source in SOURCES.items():
        held = {key: source["mini"][key] for key in ("records", "files") if key in source["mini"]}
        assert held == counts.get(name, {}), name
        assert "known" not in source["mini"], name


def test_every_tree_finds_its_members_in_the_miniature_as_extract_chooses_them():
    taken, problems = tree_members(REGISTRY["layout"], build_files(REGISTRY["layout"]))
    assert problems == []
    assert sorted(taken) == sorted([*TREES, *REGISTRY["layout"]["pools"]])
    assert all(found for tree in taken.values() for found in tree.values())


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_registry_holds_each_mini_file_size_and_checksum(name):
    path = mini_path(name)
    if path.is_dir():  # a source of parts: their total, and the sha256 of `sha256sum`'s listing
        origin = Origin.parse(name, SOURCES[name], "mini")
        names = list(origin.listed(sorted(p.name for p in path.iterdir())).parts)
        data = "".join(
            f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}\n" for n in names
        ).encode()
        assert SOURCES[name]["mini"]["size"] == sum((path / n).stat().st_size for n in names)
    else:
        data = path.read_bytes()
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
    assert {n.split("/")[0] for n in heads} == {"images"}  # the pre-zipped archive's top folder
    jpg_named = {n: h for n, h in heads.items() if n.endswith(".jpg")}
    assert any(h.startswith(b"GIF8") for h in jpg_named.values())
    assert any(h == b"\x89PNG" for h in jpg_named.values())
    assert any(n.endswith(".gif") for n in heads) and any(n.endswith(".png") for n in heads)
    assert all(
        r["image"].endswith(".jpg")
        for r in records("llava_v1_5_mix665k")
        if r.get("image", "").startswith("ocr_vqa/")
    )
    referenced = {
        r["image"].rsplit("/", 1)[1]
        for r in records("llava_v1_5_mix665k")
        if r.get("image", "").startswith("ocr_vqa/")
    }
    stems = {n.rsplit("/", 1)[1].rsplit(".", 1)[0] + ".jpg" for n in heads}
    assert referenced - stems  # a referenced image the archive lacks (a dead URL)
    truncated = [d for d in members("ocr_vqa_images").values() if d[:3] == b"\xff\xd8\xff"]
    assert any(not d.endswith(b"\xff\xd9") for d in truncated)


def test_vision_flan_names_are_escaped_in_the_zip_and_unicode_in_allava():
    names = members("vision_flan_images")
    escaped = [n for n in names if "#U" in n]
    assert len(escaped) >= 2 and all(n.isascii() for n in names)
    unicode_images = [r["image"] for r in records("allava_vflan_json") if not r["image"].isascii()]
    assert len(unicode_images) >= 2


def test_webdata_is_four_zips_each_its_own_drive_file_holding_data_folder_images():
    assert {SOURCES[name]["file"] for name in WEBDATA_SOURCES} == {
        "wikiart.zip",
        "web-landmark.zip",  # as the mirrors name it; one script's web-landmakr.zip is taken
        "web-celebrity.zip",
        "share_textvqa.zip",
    }
    assert SOURCES["webdata_web_landmark"]["old_names"] == ["web-landmakr.zip"]
    ids = set()
    for name, folder in WEBDATA_SOURCES.items():
        drive_id = SOURCES[name]["full"]["gdrive"]["id"]
        ids.add(drive_id)
        assert mini_path(name).parent.name == drive_id  # the miniature is filed by Drive id
        names = members(name)
        assert names and all(n.startswith(f"data/{folder}/images/") for n in names), name
    assert len(ids) == 4
    assert "data/web-landmark/images/Eiffel_Tower.jpg" in members("webdata_web_landmark")
    assert "webdata" not in SOURCES


def test_webdata_lacks_some_referenced_images():
    referenced = {r.get("image", "") for r in records("sharegpt4v_mix665k")}
    for name, folder in WEBDATA_SOURCES.items():
        present = {n.removeprefix("data/") for n in members(name)}
        in_folder = {i for i in referenced if i.startswith(f"{folder}/")}
        assert in_folder & present and in_folder - present, name
    present = {n.removeprefix("data/") for n in members("webdata_web_celebrity")}
    assert "web-celebrity/images/Choi_Min-sik.jpg" in referenced - present


def test_sam_zip_has_its_drive_name_one_wrapper_folder_and_lacks_a_referenced_image():
    assert SOURCES["sam_images"]["file"] == "sam_images_share-sft.zip"
    names = members("sam_images")
    tops = {n.split("/")[0] for n in names}
    assert len(tops) == 1 and all(n.count("/") == 1 for n in names)
    pool = REGISTRY["layout"]["pools"]["sam_images"]
    assert tops != {"images"} and pool["inputs"][0]["from"] == ["*/", ""]
    taken, _ = tree_members({"pools": {"sam_images": pool}}, build_files(REGISTRY["layout"]))
    assert sorted(m.target for m in taken["sam_images"]["sam_images"]) == sorted(
        n.split("/", 1)[1] for n in names
    )
    referenced = {
        r["image"].removeprefix("sam/images/")
        for r in records("sharegpt4v_mix665k")
        if r.get("image", "").startswith("sam/images/")
    }
    assert referenced - {n.split("/", 1)[1] for n in names}


def test_pretrain_zip_holds_five_digit_folders_at_its_root():
    names = members("llava_pretrain_images")
    assert all(re.fullmatch(r"\d{5}/\d{9}\.jpg", n) for n in names)
    assert {r["image"] for r in records("llava_pretrain_558k")} == set(names)


def test_later_allava_revisions_rename_drop_and_change_records():
    first = {r["image"]: r for r in records("allava_vflan_json")}
    index = json.loads((ROOT / MINI_PREFIX / ALLAVA_INDEX).read_text(encoding="utf-8"))
    index = index["FreedomIntelligence/ALLaVA-4V"]
    versions = {v["short"]: v for v in index["versions"]}
    assert versions["58347d8"]["revision"] == SOURCES["allava_vflan_json"]["full"]["hf"]["revision"]
    assert versions["58347d8"]["file"] == SOURCES["allava_vflan_json"]["mini"]["local"]
    for v in index["versions"]:
        data = (ROOT / v["file"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (v["size"], v["sha256"])
        assert len(json.loads(data)) == v["records"]
    latest = versions["03b71db"]
    assert latest["file"] == (
        "miniature/upstream/hf-revisions/FreedomIntelligence/ALLaVA-4V/"
        "03b71db47762d166038531bc428db17e7523c0ab/allava_vflan/ALLaVA-Instruct-VFLAN-4V.json"
    )
    later = {r["image"]: r for r in json.loads((ROOT / latest["file"]).read_text("utf-8"))}
    dropped = [first[i]["id"] for i in first.keys() - later.keys()]
    renamed = {
        first[i]["id"]: later[i]["id"]
        for i in first
        if i in later and later[i]["id"] != first[i]["id"]
    }
    changed = [
        first[i]["id"]
        for i in first
        if i in later and later[i]["conversations"] != first[i]["conversations"]
    ]
    assert dropped and renamed and changed
    assert sorted(dropped) == sorted(latest["dropped"])
    assert renamed == latest["renamed"] and changed == latest["changed"]
    assert later.keys() <= first.keys()  # nothing new: the differences are these three kinds
    # hf-revisions/<owner>/<repo>/<commit>/<path in the repo>, and nothing else in there
    base = ROOT / MINI_PREFIX / "hf-revisions"
    laid = [p.relative_to(base).parts for p in base.rglob("*") if p.is_file()]
    assert laid == [
        (
            "FreedomIntelligence",
            "ALLaVA-4V",
            latest["revision"],
            "allava_vflan",
            "ALLaVA-Instruct-VFLAN-4V.json",
        )
    ]
    assert SOURCES["allava_vflan_json"]["full"]["sha256"] != latest["sha256"]


# ---- the full profile: every fact pinned, and how surely it is known ----------------------
def pinned_facts(origin: dict) -> set[str]:
    facts = {key for key in FACTS if origin.get(key) not in (None, {})}
    if isinstance(origin.get("hf"), dict) and origin["hf"].get("revision") is not None:
        facts.add("revision")
    return facts


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_full_origin_has_a_size_or_a_shown_size(name):
    full = SOURCES[name]["full"]
    assert full.get("size") is not None or full.get("shown_size") is not None


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_pinned_full_fact_says_how_surely_it_is_known(name):
    full = SOURCES[name]["full"]
    known = full.get("known") or {}
    assert set(known) == pinned_facts(full)
    assert set(known.values()) <= {"published", "mirror", "assumed"}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_hugging_face_revision_given_is_a_full_commit(name):
    for profile in ("full", "mini"):
        hf = SOURCES[name][profile].get("hf")
        if isinstance(hf, dict) and hf.get("revision") is not None:
            assert re.fullmatch(r"[0-9a-f]{40}", hf["revision"]), (name, profile)


def test_expected_tree_counts_name_trees_of_that_archive():
    for name, source in SOURCES.items():
        for profile in ("full", "mini"):
            for tree in source[profile].get("files") or {}:
                assert name in SPECS[tree].archives, (name, profile, tree)


# The audit of the registry against public records (DATA-FACTS, "Audit of the registry"):
# source -> {fact: (value, how surely it is known)}.
AUDIT = {
    "gqa_images": {"size": (21_817_965_542, "mirror"), "sha256_prefix": ("02ce5c49c793", "mirror")},
    "textvqa_train_val_images": {
        "size": (7_072_297_970, "mirror"),
        "sha256_prefix": ("ecf35005", "mirror"),
    },
    "vg_part1": {"size": (9_731_705_982, "mirror")},
    "vg_part2": {"size": (5_471_658_058, "mirror")},
    "sam_images": {"size": (8_869_030_186, "mirror"), "sha256_prefix": ("07c7feb230f7", "mirror")},
    "webdata_web_celebrity": {
        "size": (103_216_303, "mirror"),
        "sha256_prefix": ("cac22138", "mirror"),
    },
    "webdata_web_landmark": {
        "size": (227_426_263, "mirror"),
        "sha256_prefix": ("0fa9f218", "mirror"),
    },
    "webdata_wikiart": {"size": (185_443_242, "mirror"), "sha256_prefix": ("132b7393", "mirror")},
    "webdata_share_textvqa": {
        "size": (126_417_739, "mirror"),
        "sha256_prefix": ("6967fddc", "mirror"),
    },
    "vqa_collection": {"size": (None, None), "shown_size": ("30.2 GB", "published")},
    "allava_vflan_json": {
        "revision": ("58347d859e4011b11ad2f5def21c6204ab45bebf", "published"),
        "size": (237_998_828, "published"),
        "sha256": ("9647fa04dd35f23cd1bbaed2053951d292ea57b5ccf1a75d72e3994de0669d2b", "published"),
    },
    "llava_conversation_58k": {"size": (126_088_572, "mirror")},
    "llava_complex_reasoning_77k": {"size": (79_619_894, "mirror")},
    "coco_train2017": {"sha256_prefix": ("69a8bb58ea5f8f99", "assumed")},
    "llava_instruct_150k": {"records": (157_712, "mirror")},
    "llava_pretrain_images": {"files": ({"llava_pretrain_images": 558_128}, "mirror")},
}
DRIVE_IDS = {
    "webdata_share_textvqa": "1f4v_3e1OJtyYqam1CEp6RenCNTU5_mG2",
    "webdata_web_celebrity": "1-SB71C3j1mVg0kDDXwj2IWGEoBoRUD-J",
    "webdata_web_landmark": "1JpJkN7ZMA50xAhMx9O-rVb5yLhfGm3_o",
    "webdata_wikiart": "1FxB2Nw-vWUcTUSI_dBpPIykb-uGYoEqV",
}


@pytest.mark.parametrize("name", sorted(AUDIT))
def test_every_fact_of_the_audit_is_pinned_with_its_confidence(name):
    full = SOURCES[name]["full"]
    for fact, (value, how) in AUDIT[name].items():
        held = full["hf"]["revision"] if fact == "revision" else full.get(fact)
        assert held == value, (name, fact)
        assert (full.get("known") or {}).get(fact) == how, (name, fact)


def test_webdata_comes_from_its_drive_ids_and_the_licences_are_the_cards():
    for name, drive_id in DRIVE_IDS.items():
        assert SOURCES[name]["full"]["gdrive"] == {"id": drive_id}
    assert SOURCES["allava_vflan_json"]["licence"].startswith("CC-BY-NC-4.0")
    assert "each task's own licence" in SOURCES["vision_flan_images"]["licence"]


def test_every_shown_size_says_its_unit():
    for name, source in SOURCES.items():
        shown = source["full"].get("shown_size")
        if shown is not None:
            assert re.fullmatch(r"\d+(\.\d+)? (MB|GB|MiB|GiB)", shown), name
            assert source["full"].get("size") is None, name  # exact, or as shown


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
