"""The fetch stage: registry validation, verification, and never losing downloaded bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from stages.common import StageError
from stages.fetch import Origin, fetch, local_copy_for, main

PAYLOAD = b"llava" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def entry(tmp_path: Path, **origin) -> dict:
    src = tmp_path / "upstream" / "train2017.zip"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(PAYLOAD)
    base = {"local": str(src), "size": len(PAYLOAD), "sha256": SHA}
    base.update(origin)
    return {"file": "train2017.zip", "mini": {k: v for k, v in base.items() if v is not None}}


def do_fetch(tmp_path: Path, raw: dict, local: Path | None = None) -> Path:
    origin = Origin.parse("coco", raw, "mini")
    return fetch(origin, tmp_path / "downloads/coco", tmp_path / "downloads/.partial", local)


def test_verified_file_lands_alone_in_its_folder(tmp_path):
    final = do_fetch(tmp_path, entry(tmp_path))
    assert final.read_bytes() == PAYLOAD
    assert os.listdir(final.parent) == ["train2017.zip"]
    assert not (tmp_path / "downloads/.partial/coco").exists()


def test_md5_is_verified_when_that_is_what_upstream_publishes(tmp_path):
    final = do_fetch(tmp_path, entry(tmp_path, sha256=None, md5=MD5))
    assert final.read_bytes() == PAYLOAD
    with pytest.raises(StageError, match="md5"):
        do_fetch(tmp_path / "again", entry(tmp_path / "again", sha256=None, md5="0" * 32))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"size": len(PAYLOAD) + 1}, r"has 5,000 bytes, the registry says 5,001"),
        ({"sha256": "0" * 64}, r"has sha256 " + SHA + ", the registry says 0{64}"),
    ],
)
def test_mismatch_stops_names_source_and_keeps_bytes_aside(tmp_path, override, match):
    raw = entry(tmp_path, **override)
    with pytest.raises(StageError, match=match) as err:
        do_fetch(tmp_path, raw)
    msg = str(err.value)
    assert "source 'coco'" in msg and "train2017.zip" in msg
    assert "dvc repro fetch@coco" in msg
    assert not (tmp_path / "downloads/coco").exists(), "no output that looks valid"
    kept = tmp_path / "downloads/.partial/rejected/coco/train2017.zip.part"
    assert kept.read_bytes() == PAYLOAD, "the fetched bytes are kept, not deleted"
    assert (tmp_path / "upstream/train2017.zip").read_bytes() == PAYLOAD


def test_missing_checksum_is_reported_loudly_with_what_was_seen(tmp_path, capsys):
    do_fetch(tmp_path, entry(tmp_path, sha256=None, size=None))
    err = capsys.readouterr().err
    assert "WARNING" in err and SHA in err and "by hand as sources.coco.mini" in err


def test_first_download_records_size_and_checksum_in_the_registry(tmp_path, capsys):
    raw = entry(tmp_path, sha256=None, size=None)
    registry = tmp_path / "sources.yaml"
    registry.write_text(
        "sources:\n"
        "  # the COCO images\n"
        "  coco:\n"
        "    file: train2017.zip\n"
        f"    mini: {{local: {raw['mini']['local']}, size: null, sha256: null}}\n"
        "  other:\n"
        "    file: x.zip\n"
        "    mini: {local: x, size: null, sha256: null}\n"
    )
    before = registry.read_text()
    origin = Origin.parse("coco", raw, "mini")
    fetch(origin, tmp_path / "dl/coco", tmp_path / "dl/.partial", None, registry)
    after = registry.read_text()
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        (
            f"    mini: {{local: {raw['mini']['local']}, size: null, sha256: null}}",
            f"    mini: {{local: {raw['mini']['local']}, size: {len(PAYLOAD)}, sha256: {SHA}}}",
        )
    ]
    assert f"Recorded in {registry}" in capsys.readouterr().err
    # the next run is held to what was recorded
    pinned = yaml.safe_load(after)["sources"]["coco"]
    (tmp_path / "dl/coco/train2017.zip").write_bytes(b"tampered")
    (tmp_path / "upstream/train2017.zip").write_bytes(b"tampered")
    with pytest.raises(StageError, match="registry says"):
        fetch(
            Origin.parse("coco", pinned, "mini"),
            tmp_path / "dl/coco",
            tmp_path / "dl/.partial",
            None,
            registry,
        )


def test_a_kept_download_that_still_verifies_is_not_fetched_again(tmp_path):
    raw = entry(tmp_path)
    final = do_fetch(tmp_path, raw)
    inode = final.stat().st_ino
    (tmp_path / "upstream/train2017.zip").unlink()  # the upstream is gone
    again = do_fetch(tmp_path, raw)
    assert again.stat().st_ino == inode


def test_existing_copy_on_disk_is_linked_not_copied(tmp_path):
    raw = entry(tmp_path)
    existing = tmp_path / "lab-share" / "train2017.zip"
    existing.parent.mkdir()
    existing.write_bytes(PAYLOAD)
    table = tmp_path / "sources.local.yaml"
    table.write_text(f"coco: {existing}\n")
    local = local_copy_for("coco", table)
    final = do_fetch(tmp_path, raw, local)
    assert final.stat().st_ino == existing.stat().st_ino
    assert local_copy_for("gqa", table) is None


def test_existing_copy_with_wrong_bytes_is_refused_and_left_alone(tmp_path):
    raw = entry(tmp_path)
    existing = tmp_path / "train2017.zip"
    existing.write_bytes(b"not coco")
    with pytest.raises(StageError, match="registry says 5,000"):
        do_fetch(tmp_path, raw, existing)
    assert existing.read_bytes() == b"not coco"


def test_manual_source_says_what_to_do_and_the_checksum_it_is_held_to(tmp_path):
    raw = {
        "file": "WebData.zip",
        "mini": {"manual": {"instructions": "Download the folder X"}, "sha256": SHA},
    }
    with pytest.raises(StageError) as err:
        do_fetch(tmp_path, raw)
    msg = str(err.value)
    assert "Download the folder X" in msg and SHA in msg and "sources.local.yaml" in msg


@pytest.mark.parametrize(
    ("mini", "match"),
    [
        ({"local": "a", "url": "http://x/a"}, "exactly one of"),
        ({"url": "ftp://x/a"}, "http"),
        ({"local": "a", "sha256": "ABC"}, "lowercase hex"),
        ({"local": "a", "size": -1}, "whole number"),
        ({"local": "a", "size": "big"}, "whole number"),
        ({"local": "a", "mirror": "b"}, "unknown keys"),
        ({"hf": {"repo": "x"}}, "repo and path"),
    ],
)
def test_bad_registry_entries_are_refused_before_io(mini, match):
    with pytest.raises(StageError, match=match):
        Origin.parse("s", {"file": "a.zip", "mini": mini}, "mini")


def test_profile_without_origin_is_refused():
    with pytest.raises(StageError, match="no origin for profile 'full'"):
        Origin.parse("s", {"file": "a.zip", "mini": {"local": "a"}}, "full")


def test_cli_reads_the_registry_entry_of_the_active_profile(tmp_path, monkeypatch):
    raw = entry(tmp_path)
    registry = tmp_path / "sources.yaml"
    registry.write_text(
        yaml.safe_dump({"sources": {"coco": {**raw, "full": {"url": "http://0/"}}}})
    )
    main(
        [
            "--registry",
            str(registry),
            "--source",
            "coco",
            "--profile",
            "mini",
            "--out",
            str(tmp_path / "out"),
            "--partial",
            str(tmp_path / "partial"),
        ]
    )
    assert (tmp_path / "out/train2017.zip").read_bytes() == PAYLOAD
