"""The fetch stage: registry validation, verification, and never losing downloaded bytes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from llava_data.common import StageError
from llava_data.origins import Origin, local_copy_for
from stages.fetch import content_kind, fetch, main, needs_wholeness_check
from tests.zips import corrupt_member_data, parquet_of, stored_zip, zip_bytes

PAYLOAD = b"llava" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
# What an unpinned first download must be to be pinned: a whole zip
ZIP = stored_zip({"train2017/000000000009.jpg": b"\xff\xd8jpeg" * 200})
ZIP_SHA = hashlib.sha256(ZIP).hexdigest()


def entry(tmp_path: Path, payload: bytes = PAYLOAD, **origin) -> dict:
    src = tmp_path / "upstream" / "train2017.zip"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    base = {"local": str(src), "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
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
    do_fetch(tmp_path, entry(tmp_path, ZIP, sha256=None, size=None))
    err = capsys.readouterr().err
    assert "WARNING" in err and ZIP_SHA in err and "by hand as sources.coco.mini" in err


def test_first_download_records_size_and_checksum_in_the_registry(tmp_path, capsys):
    raw = entry(tmp_path, ZIP, sha256=None, size=None)
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
            f"    mini: {{local: {raw['mini']['local']}, size: {len(ZIP)}, sha256: {ZIP_SHA}}}",
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


# ---- a first download is pinned only when it is whole ---------------------------------

RECORDS = [
    {
        "id": f"{i:012d}",
        "image": f"coco/train2017/{i:012d}.jpg",
        "conversations": [
            {"from": "human", "value": f"<image>\nWhat is in picture {i}?"},
            {"from": "gpt", "value": f"A picture numbered {i}, with a cat on a sofa."},
        ],
    }
    for i in range(30)
]
WHOLE_JSON = json.dumps(RECORDS, indent=1).encode()
JSON_FILE = "llava_instruct_150k.json"
IMG = b"\xff\xd8jpeg bytes " * 300
GOOD_ZIP = stored_zip({"train2017/a.jpg": IMG, "train2017/b.jpg": IMG[::-1]})


def unpinned(tmp_path: Path, name: str, file: str, data: bytes) -> tuple[Path, Path]:
    """An upstream file and a registry (one-line entries) that pins nothing for it."""
    src = tmp_path / "upstream" / file
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    registry = tmp_path / "sources.yaml"
    registry.write_text(
        "sources:\n"
        f"  {name}:\n"
        f"    file: {file}\n"
        f"    mini: {{local: {src}, size: null, sha256: null}}\n"
        "  other:\n"
        "    file: x.zip\n"
        "    mini: {local: x, size: null, sha256: null}\n"
    )
    return src, registry


def fetch_from(tmp_path: Path, registry: Path, name: str, local: Path | None = None) -> Path:
    """The fetch stage as `dvc repro fetch@<name>` runs it, from the registry file's entry."""
    origin = Origin.parse(name, yaml.safe_load(registry.read_text())["sources"][name], "mini")
    dl = tmp_path / "downloads"
    return fetch(origin, dl / name, dl / ".partial", local, registry)


def assert_refused(tmp_path, registry, name, file, data, err, *reasons) -> None:
    """Nothing pinned, nothing placed, the bytes kept aside, and a message that says so."""
    msg = str(err.value)
    assert f"source {name!r}" in msg and file in msg
    assert f"dvc repro fetch@{name}" in msg
    assert all(reason in msg for reason in reasons), msg
    kept = tmp_path / f"downloads/.partial/rejected/{name}/{file}.part"
    assert kept.read_bytes() == data, "the downloaded bytes are kept aside, not deleted"
    assert str(kept) in msg
    assert not (tmp_path / f"downloads/{name}").exists(), "no output that looks valid"


def test_truncated_json_first_download_is_refused_and_not_pinned(tmp_path, capsys):
    truncated = WHOLE_JSON[: len(WHOLE_JSON) * 6 // 10]
    _, registry = unpinned(tmp_path, "instruct", JSON_FILE, truncated)
    before = registry.read_bytes()
    with pytest.raises(StageError) as err:
        fetch_from(tmp_path, registry, "instruct")
    assert registry.read_bytes() == before, "nothing is pinned"
    assert_refused(tmp_path, registry, "instruct", JSON_FILE, truncated, err, "truncated")
    assert "Nothing was pinned" in str(err.value)
    assert "WARNING" not in capsys.readouterr().err


def test_whole_json_first_download_is_pinned(tmp_path, capsys):
    src, registry = unpinned(tmp_path, "instruct", JSON_FILE, WHOLE_JSON)
    final = fetch_from(tmp_path, registry, "instruct")
    assert final.read_bytes() == WHOLE_JSON
    sha = hashlib.sha256(WHOLE_JSON).hexdigest()
    line = f"    mini: {{local: {src}, size: {len(WHOLE_JSON)}, sha256: {sha}}}"
    assert line in registry.read_text().splitlines()
    assert f"Recorded in {registry}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda z: z[: len(z) * 6 // 10], "central directory cannot be read"),
        (lambda z: corrupt_member_data(z, IMG), "zip member 'train2017/a.jpg'"),
    ],
    ids=["truncated", "bad-crc"],
)
def test_damaged_zip_first_download_is_refused_and_not_pinned(tmp_path, damage, reason):
    data = damage(GOOD_ZIP)
    _, registry = unpinned(tmp_path, "coco", "train2017.zip", data)
    before = registry.read_bytes()
    with pytest.raises(StageError) as err:
        fetch_from(tmp_path, registry, "coco")
    assert registry.read_bytes() == before
    assert_refused(tmp_path, registry, "coco", "train2017.zip", data, err, reason)


def test_deflated_zip_with_damaged_data_is_refused(tmp_path):
    text = b"a caption that compresses well " * 400
    data = bytearray(zip_bytes({"a.txt": text}))
    data[60] ^= 0xFF  # inside the deflate stream
    _, registry = unpinned(tmp_path, "coco", "train2017.zip", bytes(data))
    with pytest.raises(StageError, match="zip member 'a.txt'"):
        fetch_from(tmp_path, registry, "coco")


def test_valid_zip_first_download_is_pinned(tmp_path):
    src, registry = unpinned(tmp_path, "coco", "train2017.zip", GOOD_ZIP)
    assert fetch_from(tmp_path, registry, "coco").read_bytes() == GOOD_ZIP
    sha = hashlib.sha256(GOOD_ZIP).hexdigest()
    line = f"    mini: {{local: {src}, size: {len(GOOD_ZIP)}, sha256: {sha}}}"
    assert line in registry.read_text().splitlines()


def test_damaged_copy_from_sources_local_yaml_is_refused_and_left_alone(tmp_path):
    _, registry = unpinned(tmp_path, "coco", "train2017.zip", GOOD_ZIP)
    copy = tmp_path / "lab-share/train2017.zip"
    copy.parent.mkdir()
    copy.write_bytes(GOOD_ZIP[:-100])
    with pytest.raises(StageError) as err:
        fetch_from(tmp_path, registry, "coco", copy)
    msg = str(err.value)
    assert f"The copy {copy} listed in sources.local.yaml" in msg
    assert "dvc repro fetch@coco" in msg
    assert copy.read_bytes() == GOOD_ZIP[:-100]
    assert "null, sha256: null" in registry.read_text().splitlines()[3]


def test_verification_failure_says_how_to_undo_a_wrong_pin_and_that_advice_works(tmp_path):
    src, registry = unpinned(tmp_path, "coco", "train2017.zip", GOOD_ZIP)
    # an earlier first download pinned bytes that upstream no longer serves
    text = registry.read_text().replace("size: null, sha256: null", f"size: 9, sha256: {SHA}", 1)
    registry.write_text(text)
    with pytest.raises(StageError) as err:
        fetch_from(tmp_path, registry, "coco")
    msg = str(err.value)
    assert "the registry says 9" in msg and "dvc repro fetch@coco" in msg
    assert "set `sources.coco.mini.size` and `sources.coco.mini.sha256` back to null" in msg
    assert f"git log -p {registry}" in msg
    # following it: the next run fetches and pins what it gets
    registry.write_text(text.replace(f"size: 9, sha256: {SHA}", "size: null, sha256: null"))
    assert fetch_from(tmp_path, registry, "coco").read_bytes() == GOOD_ZIP
    assert f"sha256: {hashlib.sha256(GOOD_ZIP).hexdigest()}" in registry.read_text()


def test_upstream_announced_mismatch_does_not_suggest_undoing_a_pin(tmp_path):
    from stages.fetch import Mismatch, mismatch_message

    origin = Origin.parse("coco", entry(tmp_path), "mini")
    err = Mismatch("source 'coco': x has sha256 a, the upstream announced b", "sha256", "upstream")
    msg = mismatch_message(err, origin, tmp_path / "kept", None, None)
    assert "dvc repro fetch@coco" in msg and "null" not in msg


def test_unpinned_kept_file_whose_local_origin_changed_warns_and_keeps_old_bytes(tmp_path, capsys):
    raw = entry(tmp_path, GOOD_ZIP, sha256=None, size=None)
    final = do_fetch(tmp_path, raw)  # no registry to pin in: the origin stays unpinned
    capsys.readouterr()
    newer = stored_zip({"train2017/a.jpg": IMG + b"more"})
    (tmp_path / "upstream/train2017.zip").write_bytes(newer)
    assert do_fetch(tmp_path, raw).read_bytes() == GOOD_ZIP, "the kept bytes are used"
    err = capsys.readouterr().err
    old_sha, new_sha = hashlib.sha256(GOOD_ZIP).hexdigest(), hashlib.sha256(newer).hexdigest()
    assert "changed since it was fetched" in err
    assert old_sha in err and new_sha in err
    assert f"{final} ({len(GOOD_ZIP):,} bytes, sha256 {old_sha})" in err
    assert f"delete {final}" in err and "dvc repro fetch@coco" in err


def test_unpinned_kept_file_of_the_same_size_but_other_bytes_is_noticed(tmp_path, capsys):
    raw = entry(tmp_path, GOOD_ZIP, sha256=None, size=None)
    do_fetch(tmp_path, raw)
    same_size = stored_zip({"train2017/a.jpg": IMG[::-1], "train2017/b.jpg": IMG})
    assert len(same_size) == len(GOOD_ZIP)
    (tmp_path / "upstream/train2017.zip").write_bytes(same_size)
    capsys.readouterr()
    assert do_fetch(tmp_path, raw).read_bytes() == GOOD_ZIP
    err = capsys.readouterr().err
    assert "changed since it was fetched" in err
    assert hashlib.sha256(same_size).hexdigest() in err


def test_unpinned_kept_file_is_announced_and_pinned_from_its_bytes(tmp_path, capsys):
    src, registry = unpinned(tmp_path, "coco", "train2017.zip", GOOD_ZIP)
    final = tmp_path / "downloads/coco/train2017.zip"  # e.g. from `dvc pull`, before the pin
    final.parent.mkdir(parents=True)
    final.write_bytes(GOOD_ZIP)
    assert fetch_from(tmp_path, registry, "coco") == final
    err = capsys.readouterr().err
    sha = hashlib.sha256(GOOD_ZIP).hexdigest()
    assert f"{final} ({len(GOOD_ZIP):,} bytes, sha256 {sha})" in err
    assert "changed since" not in err, "the local origin holds the same bytes"
    assert f"Recorded in {registry}" in err
    assert (
        f"delete {final}, set `sources.coco.mini.size` and `sources.coco.mini.sha256` back "
        f"to null in {registry} and run `dvc repro fetch@coco`" in err
    )
    line = f"    mini: {{local: {src}, size: {len(GOOD_ZIP)}, sha256: {sha}}}"
    assert line in registry.read_text().splitlines()
    # pinned now: the next run is quiet
    assert fetch_from(tmp_path, registry, "coco") == final
    assert capsys.readouterr().err == ""


def test_unpinned_kept_file_that_is_not_whole_is_set_aside_and_fetched_again(tmp_path, capsys):
    truncated = WHOLE_JSON[: len(WHOLE_JSON) // 2]
    _, registry = unpinned(tmp_path, "instruct", JSON_FILE, WHOLE_JSON)
    final = tmp_path / f"downloads/instruct/{JSON_FILE}"  # pinned-less bad bytes of old code
    final.parent.mkdir(parents=True)
    final.write_bytes(truncated)
    assert fetch_from(tmp_path, registry, "instruct").read_bytes() == WHOLE_JSON
    kept = tmp_path / f"downloads/.partial/rejected/instruct/{JSON_FILE}"
    assert kept.read_bytes() == truncated
    assert f"moved it to {kept} and fetching again" in capsys.readouterr().err
    assert hashlib.sha256(WHOLE_JSON).hexdigest() in registry.read_text()


def test_pinned_kept_file_that_fails_is_set_aside_beside_the_other_rejected_files(tmp_path):
    raw = entry(tmp_path)
    final = do_fetch(tmp_path, raw)
    final.write_bytes(b"tampered")
    assert do_fetch(tmp_path, raw).read_bytes() == PAYLOAD
    kept = tmp_path / "downloads/.partial/rejected/coco/train2017.zip"
    assert kept.read_bytes() == b"tampered"


@pytest.mark.parametrize(
    ("file", "head", "kind"),
    [
        ("chat.json", b"[{", "json"),
        ("Chat.JSON", b"PK\x03\x04", "json"),
        ("images.zip", b"", "zip"),
        ("images.bin", b"PK\x03\x04", "zip"),
        ("images.tar", b"ustar", None),
        ("test-00000-of-00003.parquet", b"PAR1", "parquet"),
    ],
)
def test_content_kind_by_name_and_for_zip_by_content(file, head, kind):
    assert content_kind(file, head) == kind


def test_truncated_parquet_first_download_is_refused_and_not_pinned(tmp_path):
    whole = parquet_of([{"question_id": n, "question": f"Is there a dog? {n}"} for n in range(50)])
    _, registry = unpinned(tmp_path, "pope", "test.parquet", whole[:-40])
    before = registry.read_bytes()
    with pytest.raises(StageError) as err:
        fetch_from(tmp_path, registry, "pope")
    assert registry.read_bytes() == before
    assert_refused(tmp_path, registry, "pope", "test.parquet", whole[:-40], err, "PAR1")
    _, registry = unpinned(tmp_path / "whole", "pope", "test.parquet", whole)
    assert fetch_from(tmp_path / "whole", registry, "pope").read_bytes() == whole


def test_wholeness_is_checked_only_for_bytes_no_checksum_held(tmp_path):
    unheld = Origin.parse("coco", entry(tmp_path, sha256=None, size=None), "mini")
    sized = Origin.parse("coco", entry(tmp_path, sha256=None), "mini")
    pinned = Origin.parse("coco", entry(tmp_path), "mini")
    learned = {"size": 1, "sha256": SHA}
    assert needs_wholeness_check(unheld, learned, {})
    assert needs_wholeness_check(sized, {"sha256": SHA}, {})
    assert not needs_wholeness_check(unheld, learned, {"sha256": SHA})  # the Hub's LFS sha256
    assert not needs_wholeness_check(pinned, {}, {})
    assert not needs_wholeness_check(pinned, {"revision": "c" * 40}, {"revision": "c" * 40})


def test_a_mismatch_with_a_fact_known_only_from_a_mirror_says_so(tmp_path):
    raw = entry(tmp_path, sha256="0" * 64)
    raw["mini"]["known"] = {"sha256": "mirror"}
    with pytest.raises(StageError) as err:
        do_fetch(tmp_path, raw)
    msg = str(err.value)
    assert "known only from a mirror" in msg and "sources.coco.mini.known.sha256: mirror" in msg
    assert f"has sha256 {SHA}" in msg and "the real file may well differ" in msg


def test_a_sha256_prefix_is_checked_and_a_mismatch_warns_naming_its_confidence(tmp_path, capsys):
    raw = entry(tmp_path, sha256_prefix=SHA[:12], known={"sha256_prefix": "mirror"})
    assert do_fetch(tmp_path, raw).read_bytes() == PAYLOAD
    assert "WARNING" not in capsys.readouterr().err
    other = tmp_path / "other"
    raw = entry(other, md5=MD5, sha256=None, sha256_prefix="0123abcd")
    raw["mini"]["known"] = {"sha256_prefix": "assumed"}
    assert do_fetch(other, raw).read_bytes() == PAYLOAD  # its md5 holds it: it is used
    err = capsys.readouterr().err
    assert f"has sha256 {SHA}, which does not begin with 0123abcd" in err
    assert "sources.coco.mini.sha256_prefix, from a third-party note (inferred)" in err
    assert "set sources.coco.mini.sha256_prefix to null" in err


def test_a_download_kept_under_an_old_name_is_taken_not_fetched_again(tmp_path, capsys):
    raw = entry(tmp_path) | {"old_names": ["train2O17.zip"]}
    kept = tmp_path / "downloads/coco/train2O17.zip"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(PAYLOAD)
    (tmp_path / "upstream/train2017.zip").unlink()  # nothing to fetch it from
    final = do_fetch(tmp_path, raw)
    assert final.name == "train2017.zip" and final.read_bytes() == PAYLOAD
    assert os.listdir(final.parent) == ["train2017.zip"]
    assert "is the file under its old name; renamed it to train2017.zip" in capsys.readouterr().err


@pytest.mark.parametrize("old", ["a/b.zip", "", [1]])
def test_old_names_must_be_plain_file_names(tmp_path, old):
    with pytest.raises(StageError, match="old_names must be a list of plain file names"):
        Origin.parse("coco", entry(tmp_path) | {"old_names": [old] if old != [1] else old}, "mini")
