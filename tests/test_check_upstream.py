"""`llava_data.check_upstream` against loopback stand-ins: every status, the exit code, no body.

The Hub stand-in is reached through HF_ENDPOINT, HTTP and Drive through the real URLs
rewritten by a mirrors file (as a lab behind a proxy would), except where a test points
a source at a stand-in directly. Retries are made instant; nothing sleeps to race.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llava_data import check_upstream, parts, transports
from llava_data.check_upstream import Probe, Row, judge, table
from llava_data.origins import Origin
from tests.servers import SAMPLE, DriveServer, FileServer, service_account

DATA = SAMPLE  # 102,403 bytes, the file the `files` and `hub` stand-ins serve
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
OTHER_SHA = hashlib.sha256(b"some other file").hexdigest()
TOKEN = "hf_not_a_real_token_0123456789"
SAM_ID = "1dKumdOKSXtV7lIXdrG7jsIK_z2vZv2gs"
REPO = "Lin-Chen/Open-LLaVA-NeXT-mix1M"


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(transports, "BACKOFF_S", 0.01)
    monkeypatch.setattr(transports, "MAX_BACKOFF_S", 0.05)
    monkeypatch.setattr(transports, "RETRIES", 2)
    monkeypatch.setattr(check_upstream, "PROBE_TIMEOUT_S", 10)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv(transports.GDRIVE_CREDENTIALS_ENV, raising=False)
    yield
    transports.use_mirrors(None)


@pytest.fixture
def drive():
    with DriveServer() as server:
        server.public_base = "https://drive.usercontent.google.com"
        yield server


@pytest.fixture
def closed_port() -> str:
    with FileServer(Path(".")) as server:
        url = server.url
    return url  # nothing listens there any more


def mirrors(tmp_path: Path, files=None, drive=None) -> Path:
    """The mirrors file a lab would write: the real hosts mapped onto the stand-ins."""
    table_ = {}
    if files is not None:
        table_["http://images.cocodataset.org/"] = f"{files.url}/"
    if drive is not None:
        for host in ("drive.google.com", "drive.usercontent.google.com", "www.googleapis.com"):
            table_[f"https://{host}/"] = f"{drive.url}/"
        table_["https://oauth2.googleapis.com/"] = f"{drive.url}/"
    path = tmp_path / "mirrors.local.yaml"
    path.write_text(yaml.safe_dump(table_))
    transports.use_mirrors(path)
    return path


def registry(tmp_path: Path, entries: dict) -> Path:
    """A registry of `file: origin` entries in profile `full`."""
    sources = {name: {"file": file, "full": full} for name, (file, full) in entries.items()}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


def rows_of(tmp_path, entries, local_copies: dict | None = None) -> dict[str, Row]:
    copies = None
    if local_copies is not None:
        copies = tmp_path / "sources.local.yaml"
        copies.write_text(yaml.safe_dump(local_copies))
    rows = check_upstream.check(registry(tmp_path, entries), "full", copies)
    return {r.source: r for r in rows}


COCO_URL = "http://images.cocodataset.org/zips/train2017.zip"


def hf(path="mix1M.json", revision=None, repo=REPO) -> dict:
    return {"repo": repo, "path": path, "revision": revision}


# ---- HTTP -------------------------------------------------------------------------------


def test_http_ok_through_the_mirror_asks_one_head_and_no_body(tmp_path, files):
    (files.root / "zips").rename(files.root / "zips-real")
    (files.root / "zips").mkdir()
    (files.root / "zips/train2017.zip").write_bytes(DATA)
    mirrors(tmp_path, files=files)
    rows = rows_of(tmp_path, {"coco": ("train2017.zip", {"url": COCO_URL, "size": len(DATA)})})
    row = rows["coco"]
    assert (row.status, row.kind) == ("ok", "url")
    assert row.todo.startswith("nothing to do (102,403 bytes as pinned;")
    assert "ETag" in row.todo
    assert [(s.method, s.path) for s in files.seen] == [("HEAD", "/zips/train2017.zip")]


def test_http_changed_size_says_both_values_and_how_to_update_the_pin(tmp_path, files):
    url = f"{files.url}/zips/train2017.zip"
    entry = {"url": url, "size": len(DATA) + 1, "md5": MD5, "known": {"size": "mirror"}}
    row = rows_of(tmp_path, {"coco": ("train2017.zip", entry)})["coco"]
    assert row.status == "changed"
    assert f"{url} has 102,403 bytes; sources.yaml pins 102,404 bytes" in row.todo
    assert "The pinned size comes from a mirror" in row.todo
    assert "the real file's size is what the upstream now says, 102,403 bytes" in row.todo
    assert "set `size: 102403`, `md5: null` in sources.coco.full" in row.todo


def test_http_head_refused_falls_back_to_a_one_byte_get(tmp_path, files):
    files.refuse_head = True
    url = f"{files.url}/zips/train2017.zip"
    rows = rows_of(
        tmp_path,
        {
            "same": ("train2017.zip", {"url": url, "size": len(DATA)}),
            "other": ("train2017.zip", {"url": url, "size": 7}),
        },
    )
    assert rows["same"].status == "ok" and rows["other"].status == "changed"
    gets = [s for s in files.seen if s.method == "GET"]
    assert [s.headers.get("range") for s in gets] == ["bytes=0-0", "bytes=0-0"]


def test_http_404_is_gone_and_a_closed_port_is_unreachable(tmp_path, files, closed_port):
    rows = rows_of(
        tmp_path,
        {
            "gone": ("a.zip", {"url": f"{files.url}/zips/missing.zip"}),
            "down": ("a.zip", {"url": f"{closed_port}/zips/train2017.zip"}),
            "down_too": ("b.zip", {"url": f"{closed_port}/zips/other.zip"}),
        },
    )
    assert rows["gone"].status == "gone"
    assert "answered HTTP 404" in rows["gone"].todo and "sources.gone.full.url" in rows["gone"].todo
    host = closed_port.removeprefix("http://")
    # a refused connection is reported once for the host, for both of its sources
    for name in ("down", "down_too"):
        assert rows[name].status == "unreachable"
        assert rows[name].todo.startswith(
            f"{host} refused the connection; not asked: check the network"
        )


def test_http_retries_a_503_as_the_transports_do(tmp_path, files):
    files.fail_next(503, 503)
    url = f"{files.url}/zips/train2017.zip"
    row = rows_of(tmp_path, {"coco": ("train2017.zip", {"url": url, "size": len(DATA)})})["coco"]
    assert row.status == "ok"
    assert [s.method for s in files.seen] == ["HEAD", "HEAD", "HEAD"]


def test_http_403_is_gated(tmp_path, files):
    files.fail_next(403, 403)
    url = f"{files.url}/zips/train2017.zip"
    row = rows_of(tmp_path, {"coco": ("train2017.zip", {"url": url})})["coco"]
    assert row.status == "gated" and "access refused" in row.todo


# ---- Hugging Face ---------------------------------------------------------------------------


def test_hub_ok_changed_size_and_changed_sha256(tmp_path, hub):
    commit = hub.publish(REPO, {"mix1M.json": DATA})
    rows = rows_of(
        tmp_path,
        {
            "ok": ("mix1M.json", {"hf": hf(revision=commit), "size": len(DATA), "sha256": SHA}),
            "size": ("mix1M.json", {"hf": hf(revision=commit), "size": 10}),
            "sha": (
                "mix1M.json",
                {"hf": hf(revision=commit), "sha256": OTHER_SHA, "known": {"sha256": "assumed"}},
            ),
        },
    )
    assert rows["ok"].status == "ok"
    assert rows["ok"].todo.startswith(f"nothing to do (102,403 bytes and sha256 {SHA} as pinned")
    assert rows["size"].status == "changed" and "pins 10 bytes" in rows["size"].todo
    assert rows["sha"].status == "changed"
    assert f"has sha256 {SHA}; sources.yaml pins sha256 {OTHER_SHA}" in rows["sha"].todo
    assert "The pinned sha256 is assumed" in rows["sha"].todo
    resolves = [s.method for s in hub.seen if s.path.startswith("/datasets/")]
    assert set(resolves) == {"HEAD"} and hub.cdn.seen == []  # metadata only, no bytes


def test_hub_unpinned_revision_is_resolved_by_content(tmp_path, hub):
    old = hub.publish(REPO, {"mix1M.json": DATA}, title="v1")
    hub.publish(REPO, {"mix1M.json": DATA[::-1]}, title="v2")
    hub.publish(REPO, {"mix1M.json": DATA[1:]}, title="v3")
    wanted = hashlib.sha256(DATA[::-1]).hexdigest()
    rows = rows_of(
        tmp_path,
        {
            "found": ("mix1M.json", {"hf": hf(), "sha256": SHA}),
            "second": ("mix1M.json", {"hf": hf(), "sha256": wanted}),
            "none": ("mix1M.json", {"hf": hf(), "sha256": OTHER_SHA}),
        },
    )
    assert rows["found"].status == "ok"
    assert f"the fetch pins hf.revision: {old}" in rows["found"].todo
    assert rows["second"].status == "ok"
    assert rows["none"].status == "changed"
    assert f"pinned sha256 {OTHER_SHA}" in rows["none"].todo
    assert rows["none"].todo.count("(sha256 ") == 3  # the three commits tried


def test_hub_gated_repo_missing_file_and_revision(tmp_path, hub):
    hub.publish(REPO, {"mix1M.json": DATA})
    hub.publish("liuhaotian/LLaVA-Pretrain", {"images.zip": DATA})
    hub.gate("liuhaotian/LLaVA-Pretrain", "hf_someone_who_accepted")
    rows = rows_of(
        tmp_path,
        {
            "gated": ("images.zip", {"hf": hf("images.zip", repo="liuhaotian/LLaVA-Pretrain")}),
            "no_file": ("x.json", {"hf": hf("x.json")}),
            "no_rev": ("mix1M.json", {"hf": hf(revision="v9")}),
            "no_repo": ("mix1M.json", {"hf": hf(repo="Lin-Chen/nope")}),
        },
    )
    assert rows["gated"].status == "gated" and "accept its terms" in rows["gated"].todo
    assert rows["no_file"].status == "gone" and "no such file" in rows["no_file"].todo
    assert rows["no_rev"].status == "gone" and "no such revision" in rows["no_rev"].todo
    assert rows["no_repo"].status == "gone"
    assert all(TOKEN not in r.todo for r in rows.values())


def test_hub_unreachable(tmp_path, monkeypatch, closed_port):
    monkeypatch.setenv("HF_ENDPOINT", closed_port)
    row = rows_of(tmp_path, {"mix1m": ("mix1M.json", {"hf": hf()})})["mix1m"]
    host = closed_port.removeprefix("http://")
    assert row.status == "unreachable"
    assert row.todo.startswith(f"{host} refused the connection; not asked: check the network")
    assert "HF_ENDPOINT can point at a Hub mirror" in row.todo


def test_hub_5xx_is_retried_as_the_transports_do(tmp_path, hub):
    commit = hub.publish(REPO, {"mix1M.json": DATA})
    entry = {"hf": hf(revision=commit), "size": len(DATA), "sha256": SHA}
    assert rows_of(tmp_path, {"mix1m": ("mix1M.json", entry)})["mix1m"].status == "ok"
    hub.seen.clear()  # huggingface_hub's own first calls are behind it
    hub.fail_next(503, 502)
    row = rows_of(tmp_path, {"mix1m": ("mix1M.json", entry)})["mix1m"]
    assert row.status == "ok", row.todo
    assert [(s.method, s.path.split("/")[1]) for s in hub.seen] == [("HEAD", "datasets")] * 3


POPE = "lmms-lab/POPE"
SHARDS = [f"test-{n:05d}-of-00003.parquet" for n in range(3)]


def shards() -> dict[str, bytes]:
    return {f"data/{name}": DATA[n:] for n, name in enumerate(SHARDS)}


def hf_parts(file: str, parts_, revision=None, **pins) -> tuple[str, dict]:
    full = {"hf": hf(f"data/{file}", revision, POPE), "parts": parts_, **pins}
    return file, full


def test_hub_parts_by_pattern_are_each_asked_and_held_to_their_total_and_listing(tmp_path, hub):
    commit = hub.publish(POPE, {**shards(), "data/README.md": b"x"})
    total = sum(len(data) for data in shards().values())
    rows = ((n, None, hashlib.sha256(DATA[k:]).hexdigest()) for k, n in enumerate(SHARDS))
    digest = parts.upstream_facts(rows)["sha256"]
    pattern = "test-{:05d}-of-00003.parquet"
    rows = rows_of(
        tmp_path,
        {
            "ok": hf_parts(pattern, [0, 2], commit, size=total, sha256=digest),
            "size": hf_parts(pattern, [0, 2], commit, size=10),
            "gone": hf_parts("test-{:05d}-of-00004.parquet", [0, 3], commit),
        },
    )
    assert rows["ok"].status == "ok"
    assert rows["ok"].todo.startswith(
        f"nothing to do (3 files; {total:,} bytes and sha256 {digest}"
    )
    assert rows["size"].status == "changed"
    assert f"has {total:,} bytes; sources.yaml pins 10 bytes" in rows["size"].todo
    assert rows["gone"].status == "gone"
    assert "lacks 4 of the 4 parts" in rows["gone"].todo
    assert (
        f"That folder holds 3 files that look like parts: {', '.join(SHARDS)}" in rows["gone"].todo
    )
    heads = [s.path for s in hub.seen if s.method == "HEAD" and "-of-00003" in s.path]
    asked = [f"/datasets/{POPE}/resolve/{commit}/data/{n}" for n in SHARDS] * 2
    assert sorted(heads) == sorted(asked)  # each part of "ok" and of "size", once
    trees = [s.path for s in hub.seen if "/tree/" in s.path]
    assert trees == [f"/api/datasets/{POPE}/tree/{commit}/data"], "only for the missing parts"
    assert hub.cdn.seen == []  # metadata only, no bytes


def test_hub_parts_by_glob_are_one_listing_and_the_commit_the_fetch_pins(tmp_path, hub):
    commit = hub.publish(POPE, {**shards(), "data/validation-0.parquet": b"v"})
    total = sum(len(data) for data in shards().values())
    rows = rows_of(
        tmp_path,
        {
            "glob": hf_parts("test-*.parquet", "glob", size=total),
            "none": hf_parts("val-*.parquet", "glob", commit),
        },
    )
    assert rows["glob"].status == "ok", rows["glob"].todo
    assert f"3 files; {total:,} bytes as pinned" in rows["glob"].todo
    assert f"the fetch pins hf.revision: {commit}" in rows["glob"].todo
    assert rows["none"].status == "gone"
    assert "folder data matches 'val-*.parquet' at commit" in rows["none"].todo
    assert "validation-0.parquet" in rows["none"].todo
    trees = [s.path for s in hub.seen if "/tree/" in s.path]
    assert sorted(trees) == [f"/api/datasets/{POPE}/tree/{r}/data" for r in (commit, "main")]
    heads = [s.path for s in hub.seen if s.method == "HEAD"]
    assert heads == [f"/datasets/{POPE}/resolve/main/data/{SHARDS[0]}"], "the first part's commit"


@pytest.fixture
def silent():
    """A host that takes connections and never answers a request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_run_has_a_deadline_and_names_every_source_it_left(tmp_path, files, silent):
    entries = {
        "a_slow": ("a.zip", {"url": f"{silent}/a.zip"}),
        "b_fine": ("train2017.zip", {"url": f"{files.url}/zips/train2017.zip", "size": len(DATA)}),
        "c_slow": ("b.zip", {"url": f"{silent}/b.zip"}),
    }
    start = time.monotonic()
    rows = check_upstream.check(registry(tmp_path, entries), "full", None, deadline=1.0)
    took = time.monotonic() - start
    assert 1.0 <= took < 5, took  # the probe timeout (10 s here) is not waited for
    assert [r.source for r in rows] == ["a_slow", "b_fine", "c_slow"]
    assert rows[1].status == "ok"
    for row in (rows[0], rows[2]):
        assert row.status == "unreachable"
        assert row.todo.startswith("no answer within the run's 1 s deadline (127.0.0.1)")
        assert "make check-upstream ARGS='--deadline 120'" in row.todo
    assert check_upstream.exit_code(rows) == 2


def test_sources_are_asked_concurrently_and_reported_in_registry_order(tmp_path, silent):
    """Three sources on a silent host and jobs=3: all three wait at once, so the run takes
    one deadline, not three probe timeouts; with jobs=1 the next ones are never started."""
    entries = {f"s{n}": (f"{n}.zip", {"url": f"{silent}/{n}.zip"}) for n in range(3)}
    reg = registry(tmp_path, entries)
    streamed = []
    rows = check_upstream.check(reg, "full", None, jobs=3, deadline=0.5, on_row=streamed.append)
    assert streamed == rows and [r.source for r in rows] == ["s0", "s1", "s2"]


# ---- Google Drive --------------------------------------------------------------------------


def sam(**pins) -> dict:
    return {"sam": ("sam_images_9k.zip", {"gdrive": {"id": SAM_ID}, **pins})}


def test_drive_public_confirm_page_is_ok_and_its_download_asked_for_one_byte(tmp_path, drive):
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="confirm")
    mirrors(tmp_path, drive=drive)
    row = rows_of(tmp_path, sam(size=len(DATA)))["sam"]
    assert row.status == "ok" and "102,403 bytes as pinned" in row.todo
    assert [(s.path, s.headers.get("range")) for s in drive.seen] == [
        ("/uc", "bytes=0-0"),
        ("/download", "bytes=0-0"),
    ]
    drive.seen.clear()
    assert rows_of(tmp_path, sam(size=5))["sam"].status == "changed"


def test_drive_quota_page_needs_a_manual_step_and_a_missing_id_is_gone(tmp_path, drive):
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="quota")
    mirrors(tmp_path, drive=drive)
    row = rows_of(tmp_path, sam())["sam"]
    assert row.status == "needs a manual step"
    assert "quota is exceeded" in row.todo
    assert f"https://drive.google.com/file/d/{SAM_ID}/view" in row.todo
    assert "sources.local.yaml as `sam: downloads/manual/sam_images_9k.zip`" in row.todo
    drive.files.clear()
    assert rows_of(tmp_path, sam())["sam"].status == "gone"


def test_drive_api_metadata_with_credentials(tmp_path, drive, monkeypatch):
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="quota")  # the public route is shut
    key_json, _ = service_account(drive)
    key = json.loads(key_json)
    del key["token_uri"]  # Google's own token URL, reached through the mirrors
    monkeypatch.setenv(transports.GDRIVE_CREDENTIALS_ENV, json.dumps(key))
    mirrors(tmp_path, drive=drive)
    rows = rows_of(
        tmp_path,
        {
            "ok": ("sam_images_9k.zip", {"gdrive": {"id": SAM_ID}, "size": len(DATA), "md5": MD5}),
            "md5": ("sam_images_9k.zip", {"gdrive": {"id": SAM_ID}, "md5": "0" * 32}),
            "gone": ("x.zip", {"gdrive": {"id": "nope"}}),
        },
    )
    assert rows["ok"].status == "ok" and f"md5 {MD5} as pinned" in rows["ok"].todo
    assert rows["md5"].status == "changed" and f"has md5 {MD5}" in rows["md5"].todo
    assert rows["gone"].status == "gone"
    api = [s for s in drive.seen if s.path.startswith("/drive/")]
    assert {s.query["fields"] for s in api} == {"id,name,size,md5Checksum"}
    assert not any("alt" in s.query for s in api)
    said = json.dumps([r.todo for r in rows.values()])
    assert not any(token in said for token in drive.issued)

    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="private")
    assert rows_of(tmp_path, sam())["sam"].status == "gated"
    drive.accounts.clear()  # the key is no longer valid
    row = rows_of(tmp_path, sam())["sam"]
    assert row.status == "gated" and "no access token could be obtained" in row.todo


# ---- manual and local sources ---------------------------------------------------------------


def test_manual_source_missing_then_listed(tmp_path):
    (tmp_path / "WebData.zip").write_bytes(DATA)
    entry = {"webdata": ("WebData.zip", {"manual": {"instructions": "Download the folder X"}})}
    row = rows_of(tmp_path, entry)["webdata"]
    assert row.status == "needs a manual step"
    assert row.todo.startswith("not listed in sources.local.yaml: Download the folder X.")
    listed = rows_of(tmp_path, entry, {"webdata": str(tmp_path / "WebData.zip")})["webdata"]
    assert listed.status == "ok" and "the upstream was not asked" in listed.todo
    wrong = rows_of(tmp_path, entry, {"webdata": str(tmp_path / "nope.zip")})["webdata"]
    assert wrong.status == "needs a manual step" and "which is not a file" in wrong.todo


def test_local_files_and_local_copies(tmp_path, files):
    (tmp_path / "here.zip").write_bytes(DATA)
    url = f"{files.url}/zips/train2017.zip"
    rows = rows_of(
        tmp_path,
        {
            "here": ("here.zip", {"local": str(tmp_path / "here.zip"), "size": len(DATA)}),
            "gone": ("gone.zip", {"local": str(tmp_path / "gone.zip")}),
            "copy": ("train2017.zip", {"url": url, "size": len(DATA) + 1}),
        },
        {"copy": str(tmp_path / "here.zip")},
    )
    assert rows["here"].status == "ok" and rows["gone"].status == "gone"
    assert (
        rows["copy"].status == "changed" and "Replace it with the pinned file" in rows["copy"].todo
    )
    assert files.seen == []  # a listed copy replaces the upstream


# ---- the pure core and the command ----------------------------------------------------------


def origin(**full) -> Origin:
    return Origin.parse("coco", {"file": "train2017.zip", "full": full}, "full")


@pytest.mark.parametrize(
    ("probe", "status"),
    [
        (Probe("found", "u", {"size": 3}), "ok"),
        (Probe("found", "u", {"size": 4}), "changed"),
        (Probe("found", "u", {"sha256": OTHER_SHA}), "changed"),
        (Probe("found", "u", {}), "ok"),
        (Probe("missing", "u", reason="u answered HTTP 404"), "gone"),
        (Probe("denied", "u", reason="u answered HTTP 403"), "gated"),
        (Probe("manual", "u", reason="a quota page"), "needs a manual step"),
        (Probe("unreachable", "u", reason="timed out"), "unreachable"),
        (Probe("no-content", "u", advice="no commit has it"), "changed"),
    ],
)
def test_judge_maps_every_probe_to_a_status(probe, status):
    row = judge(origin(url="http://x/a.zip", size=3, sha256=SHA), probe)
    assert row.status == status and row.todo
    assert status in check_upstream.STATUSES


def test_table_and_exit_code():
    rows = [
        Row("coco", "url", "ok", "nothing"),
        Row("webdata", "manual", "needs a manual step", "x"),
    ]
    assert table(rows).splitlines() == [
        "source   kind    status               what to do",
        "coco     url     ok                   nothing",
        "webdata  manual  needs a manual step  x",
    ]
    assert check_upstream.exit_code(rows) == 1 and check_upstream.exit_code(rows[:1]) == 0


def run_cli(tmp_path: Path, reg: Path, copies: Path, mirrors_file: Path, env: dict):
    argv = ["--registry", reg, "--profile", "full", "--local-copies", copies]
    argv += ["--mirrors", mirrors_file]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), **env}
    return subprocess.run(
        [sys.executable, "-m", "llava_data.check_upstream", *map(str, argv)],
        env={k: str(v) for k, v in env.items()},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_cli_prints_one_table_and_exits_non_zero_when_a_build_would_stop(
    tmp_path, files, hub, drive
):
    commit = hub.publish(REPO, {"mix1M.json": DATA})
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="confirm")
    (tmp_path / "WebData.zip").write_bytes(DATA)
    copies = tmp_path / "sources.local.yaml"
    copies.write_text(yaml.safe_dump({"webdata": str(tmp_path / "WebData.zip")}))
    mirrors_file = mirrors(tmp_path, files=files, drive=drive)
    entries = {
        "coco_train2017": ("train2017.zip", {"url": COCO_URL, "size": len(DATA), "md5": MD5}),
        "mix1m_json": ("mix1M.json", {"hf": hf(), "sha256": SHA}),
        "sam_images": ("sam_images_9k.zip", {"gdrive": {"id": SAM_ID}, "size": len(DATA)}),
        "webdata": ("WebData.zip", {"manual": {"instructions": "Download the folder"}}),
    }
    reg = registry(tmp_path, entries)
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": tmp_path / "hf"}
    done = run_cli(tmp_path, reg, copies, mirrors_file, env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["source", "kind", "status", "what", "to", "do"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["coco_train2017", "url", "ok"],
        ["mix1m_json", "hf", "ok"],
        ["sam_images", "gdrive", "ok"],
        ["webdata", "manual", "ok"],
    ]
    assert f"hf.revision: {commit}" in done.stdout and "all 4 sources are ok" in done.stderr

    (files.root / "zips/train2017.zip").write_bytes(DATA + b"!")  # the upstream changed
    hub.gate(REPO, "hf_someone_who_accepted")
    done = run_cli(tmp_path, reg, copies, mirrors_file, env)
    assert done.returncode == 1
    status = {line.split()[0]: line.split()[2] for line in done.stdout.splitlines()[1:]}
    assert status == {
        "coco_train2017": "changed",
        "mix1m_json": "gated",
        "sam_images": "ok",
        "webdata": "ok",
    }
    assert "2 of 4 sources would stop a build: coco_train2017, mix1m_json" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert not [s for s in files.seen if s.method == "GET"]


def test_a_malformed_mirrors_file_stops_the_check_naming_it(tmp_path):
    reg = registry(tmp_path, {"coco": ("train2017.zip", {"url": COCO_URL})})
    bad = tmp_path / "mirrors.local.yaml"
    bad.write_text("- not a mapping\n")
    done = run_cli(tmp_path, reg, tmp_path / "none.yaml", bad, {})
    assert done.returncode == 1 and f"error: mirrors file {bad}" in done.stderr
