"""The whole pipeline, run by the real `dvc` CLI on the embedded miniature in fresh copies."""

from __future__ import annotations

import shutil

import pytest

from tests.dvcrepo import dvc, run, tree_digest

# Every folder of the Open-LLaVA-NeXT data document's tree, plus the LLaVA-1.5 files.
SEED_FOLDERS = [
    "llava/llava_pretrain/images",
    "coco/train2017",
    "sam/images",
    "gqa/images",
    "ocr_vqa/images",
    "textvqa/train_images",
    "vg/VG_100K",
    "vg/VG_100K_2",
    "web-celebrity/images",
    "web-landmark/images",
    "wikiart/images",
    "allava_vflan/images/images_191task_1k",
    "share_textvqa/images",
    "ai2d/images",
    "chatqa/train/png",
    "docvqa/train/documents",
    "dvqa/images",
    "geoqa+/images",
    "synthdog-en/images",
]
SEED_FILES = ["open-llava-next/open-llava-next_instruct_mix1M.json"]
LLAVA_FILES = [
    "llava/llava_pretrain/blip_laion_cc_sbu_558k.json",
    "llava/cc3m_595k/chat.json",
    "llava/llava_instruct/llava_v1_5_mix665k.json",
    "llava/llava_instruct/llava_instruct_150k.json",
    "sharegpt4v/sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json",
]
UP_TO_DATE = "Data and pipelines are up to date."


@pytest.fixture(scope="module")
def built(built_copy):
    return built_copy


def test_build_lays_out_every_seed_folder(built):
    data = built / "data"
    for folder in SEED_FOLDERS:
        images = [p for p in (data / folder).iterdir() if p.name != ".extracted.json"]
        assert images, f"data/{folder} is empty"
    for rel in SEED_FILES + LLAVA_FILES:
        assert (data / rel).is_file(), rel


def test_committed_lock_is_what_a_fresh_build_produces(built):
    assert run(["git", "status", "--porcelain", "dvc.lock"], built).stdout == ""


def test_status_and_second_repro_do_nothing(built):
    assert UP_TO_DATE in dvc("status", cwd=built).stdout
    out = dvc("repro", cwd=built).stdout
    assert "Running stage" not in out and UP_TO_DATE in out


def test_deleted_tree_is_named_by_status_and_rebuilt_by_repro(built):
    before = tree_digest(built / "data/coco/train2017")
    shutil.rmtree(built / "data/coco/train2017")
    status = dvc("status", cwd=built).stdout
    assert "extract@coco_train2017" in status
    assert "data/coco/train2017/.extracted.json" in status
    out = dvc("repro", cwd=built).stdout
    assert "Running stage 'extract@coco_train2017'" in out
    assert out.count("Running stage") == 1
    assert tree_digest(built / "data/coco/train2017") == before
    assert UP_TO_DATE in dvc("status", cwd=built).stdout


def test_damaged_tree_is_named_by_verify_and_repaired(built):
    victim = sorted((built / "data/gqa/images").glob("*.jpg"))[0]
    victim.unlink()
    verify = [
        "python",
        "-m",
        "llava_data.verify",
        "--registry",
        "sources.yaml",
        "--manifests",
        "manifests",
        "--data-root",
        "data",
    ]
    proc = run(verify, built, check=False)
    assert proc.returncode == 1
    assert (
        f"DAMAGED gqa_images: data/gqa/images: 1 missing (e.g. gqa/images/{victim.name})"
        in proc.stdout
    )
    assert "dvc repro --force --single-item extract@gqa_images" in proc.stdout
    repaired = run([*verify, "--quick", "--repair"], built)
    assert "DAMAGED gqa_images" in repaired.stdout and "ok      coco_train2017" in repaired.stdout
    out = dvc("repro", cwd=built).stdout
    assert "Running stage 'extract@gqa_images'" in out
    assert out.count("Running stage 'extract@") == 1
    assert victim.is_file()
    assert run(verify, built).returncode == 0
