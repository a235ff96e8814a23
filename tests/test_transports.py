"""The transports against real loopback servers: resume, retries, refusals, Hub, Drive.

Every test goes through `Origin.parse` and `fetch`, as the stage does; the
servers are in tests/servers.py. huggingface_hub's own code resolves Hub files
(HF_ENDPOINT points at the stand-in).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llava_data import transports
from llava_data.common import StageError
from llava_data.origins import Origin
from stages.fetch import fetch
from tests.servers import SAMPLE, DriveServer, HubServer, service_account
from tests.zips import stored_zip

DATA = SAMPLE  # 102,403 bytes, the file the `files` and `hub` stand-ins serve
SHA = hashlib.sha256(DATA).hexdigest()
CUT = 40_000
TOKEN = "hf_not_a_real_token_0123456789"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(transports, "BACKOFF_S", 0.01)
    monkeypatch.setattr(transports, "MAX_BACKOFF_S", 0.05)
    monkeypatch.setattr(transports, "TIMEOUT_S", 10)
    monkeypatch.delenv("HF_HUB_ENABLE_HF_TRANSFER", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield
    transports.use_mirrors(None)


@pytest.fixture
def drive(monkeypatch):
    with DriveServer() as server:
        monkeypatch.setattr(transports, "GDRIVE_UC_URL", f"{server.url}/uc")
        monkeypatch.setattr(transports, "GDRIVE_API_URL", f"{server.url}/drive/v3/files")
        monkeypatch.delenv(transports.GDRIVE_CREDENTIALS_ENV, raising=False)
        yield server


def run(tmp_path: Path, name: str, file: str, **origin) -> Path:
    """The fetch stage for one registry entry in profile `full`."""
    entry = {"file": file, "full": {k: v for k, v in origin.items() if v is not None}}
    parsed = Origin.parse(name, entry, "full")
    return fetch(parsed, tmp_path / "downloads" / name, tmp_path / "downloads/.partial", None)


def part_of(tmp_path: Path, name: str, file: str) -> Path:
    return tmp_path / "downloads/.partial" / name / f"{file}.part"


def coco(tmp_path, server, **over) -> Path:
    url = f"{server.url}/zips/train2017.zip"
    return run(tmp_path, "coco", "train2017.zip", **{"url": url, "sha256": SHA, **over})


# ---- HTTP ---------------------------------------------------------------------------


def test_transfer_cut_halfway_is_resumed_by_the_next_fetch(tmp_path, files, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 0)
    files.cut(CUT)
    with pytest.raises(StageError, match=r"40,000 bytes received are kept .*fetch@coco") as err:
        coco(tmp_path, files)
    assert "source 'coco'" in str(err.value)
    assert part_of(tmp_path, "coco", "train2017.zip").stat().st_size == CUT

    final = coco(tmp_path, files)
    assert final.read_bytes() == DATA
    assert files.range_starts() == [None, CUT]
    assert not (tmp_path / "downloads/.partial/coco").exists()


def test_errors_and_a_dropped_connection_are_retried_within_one_fetch(tmp_path, files, capsys):
    files.fail_next(503, 429, 500)
    files.cut(CUT)
    assert coco(tmp_path, files).read_bytes() == DATA
    assert files.range_starts() == [None, None, None, None, CUT]
    err = capsys.readouterr().err
    assert "HTTP 503; retrying" in err and "HTTP 429; retrying" in err


def test_retries_stop_after_the_limit_naming_the_source(tmp_path, files, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 2)
    files.fail_next(503, 503, 503)
    with pytest.raises(StageError, match=r"failed 3 times in a row \(last: HTTP 503\)"):
        coco(tmp_path, files)


def test_404_stops_at_once_naming_the_source_and_the_url(tmp_path, files):
    url = f"{files.url}/zips/missing.zip"
    with pytest.raises(StageError) as err:
        coco(tmp_path, files, url=url)
    msg = str(err.value)
    assert "source 'coco'" in msg and url in msg and "HTTP 404" in msg and "sources.yaml" in msg
    assert len(files.seen) == 1


def test_wrong_bytes_are_refused_by_checksum_and_kept_aside(tmp_path, files):
    files.wrong_bytes = True
    with pytest.raises(StageError, match=r"source 'coco'.*has sha256 .*the registry says " + SHA):
        coco(tmp_path, files)
    kept = tmp_path / "downloads/.partial/rejected/coco/train2017.zip.part"
    assert kept.stat().st_size == len(DATA) and kept.read_bytes() != DATA
    assert not (tmp_path / "downloads/coco").exists()


def test_server_ignoring_range_still_yields_the_right_bytes(tmp_path, files, monkeypatch, capsys):
    monkeypatch.setattr(transports, "RETRIES", 0)
    files.cut(CUT)
    with pytest.raises(StageError):
        coco(tmp_path, files)
    files.ignore_range = True
    assert coco(tmp_path, files).read_bytes() == DATA
    assert files.range_starts() == [None, CUT]
    assert "answered the whole file to a resume request" in capsys.readouterr().err


def test_range_answered_from_the_wrong_offset_restarts_cleanly(tmp_path, files, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 0)
    files.cut(CUT)
    with pytest.raises(StageError):
        coco(tmp_path, files)
    monkeypatch.setattr(transports, "RETRIES", 1)
    files.range_shift = -100  # the 206 starts 100 bytes before what was asked
    assert coco(tmp_path, files).read_bytes() == DATA
    assert files.range_starts() == [None, CUT, None]


def test_complete_partial_of_unknown_size_is_finished_by_a_416(tmp_path, files):
    part = part_of(tmp_path, "coco", "train2017.zip")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA)
    assert coco(tmp_path, files).read_bytes() == DATA
    assert files.range_starts() == [len(DATA)]


def test_file_changed_upstream_is_downloaded_again_not_spliced(tmp_path, files, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 0)
    # unpinned, so the download must also be a whole zip before it is kept
    (files.root / "zips/train2017.zip").write_bytes(stored_zip({"a.bin": DATA}))
    files.cut(CUT)
    with pytest.raises(StageError):
        coco(tmp_path, files, sha256=None)
    changed = stored_zip({"a.bin": DATA[::-1]})
    (files.root / "zips/train2017.zip").write_bytes(changed)
    assert coco(tmp_path, files, sha256=None).read_bytes() == changed
    assert files.seen[-1].range_start == CUT and "if-range" in files.seen[-1].headers


def test_partial_longer_than_the_registry_size_goes_to_rejected(tmp_path, files):
    part = part_of(tmp_path, "coco", "train2017.zip")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA + b"junk")
    with pytest.raises(StageError, match="the registry says 102,403"):
        coco(tmp_path, files, size=len(DATA))
    assert (tmp_path / "downloads/.partial/rejected/coco/train2017.zip.part").stat().st_size == (
        len(DATA) + 4
    )
    assert files.seen == []
    assert coco(tmp_path, files, size=len(DATA)).read_bytes() == DATA


# ---- Hugging Face -----------------------------------------------------------------------


def mix1m(tmp_path, revision=None, **over) -> Path:
    hf = {"repo": "Lin-Chen/Open-LLaVA-NeXT-mix1M", "path": "mix1M.json", "revision": revision}
    return run(tmp_path, "mix1m", "mix1M.json", hf=hf, **over)


def test_hf_unpinned_revision_warns_with_the_commit_it_resolved(tmp_path, hub, capsys):
    commit = hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA})
    assert mix1m(tmp_path).read_bytes() == DATA
    err = capsys.readouterr().err
    assert f"hf.revision: {commit}" in err and "sources.mix1m.full" in err
    assert [s.path for s in hub.seen if s.method == "HEAD"] == [
        "/datasets/Lin-Chen/Open-LLaVA-NeXT-mix1M/resolve/main/mix1M.json"
    ]
    # The token goes to the Hub only, never to the CDN, and is never printed.
    resolves = [s for s in hub.seen if s.path.startswith("/datasets/")]
    assert [s.method for s in resolves] == ["HEAD", "GET"]
    assert all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in resolves)
    assert all("authorization" not in s.headers for s in hub.cdn.seen)
    assert TOKEN not in err


def test_hf_pinned_revision_is_the_one_downloaded(tmp_path, hub, capsys):
    old = hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA}, lfs=False)
    hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": b"newer"}, lfs=False)
    assert mix1m(tmp_path, revision=old, sha256=SHA).read_bytes() == DATA
    assert {s.path for s in hub.seen} == {
        f"/datasets/Lin-Chen/Open-LLaVA-NeXT-mix1M/resolve/{old}/mix1M.json"
    }
    assert "revision" not in capsys.readouterr().err


def test_hf_interrupted_download_resumes_on_the_next_fetch(tmp_path, hub, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 0)
    hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA})
    hub.cdn.cut(CUT)
    with pytest.raises(StageError, match=r"40,000 bytes received are kept .*fetch@mix1m"):
        mix1m(tmp_path)
    assert mix1m(tmp_path).read_bytes() == DATA
    assert hub.cdn.range_starts() == [None, CUT]


def test_hf_partial_of_an_older_version_is_set_aside_not_spliced(tmp_path, hub, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 0)
    hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA})
    hub.cdn.cut(CUT)
    with pytest.raises(StageError):
        mix1m(tmp_path)
    newer = DATA[::-1]
    hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": newer})
    assert mix1m(tmp_path).read_bytes() == newer
    kept = tmp_path / "downloads/.partial/rejected/mix1m/mix1M.json.part"
    assert kept.read_bytes() == DATA[:CUT]


def test_hf_corrupt_transfer_is_caught_by_the_lfs_sha256_without_a_registry_checksum(tmp_path, hub):
    hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA})
    hub.cdn.wrong_bytes = True
    with pytest.raises(StageError, match=f"the upstream announced {SHA}"):
        mix1m(tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"gated": True},
            r"is gated \(HTTP 403\).*accept its terms.*huggingface-cli login.*HF_TOKEN",
        ),
        ({"path": "nope.json"}, r"no such file .*sources\.mix1m\.full\.hf\.path"),
        ({"revision": "v9"}, r"no such revision; check sources\.mix1m\.full\.hf\.revision"),
        ({"repo": "Lin-Chen/nope"}, r"does not exist, or it is private or gated.*\.hf\.repo"),
    ],
)
def test_hf_refusals_say_what_to_fix(tmp_path, hub, change, match):
    hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA})
    if change.pop("gated", False):  # our token is valid but its terms were not accepted
        hub.gate("Lin-Chen/Open-LLaVA-NeXT-mix1M", "hf_someone_who_accepted")
    hf = {"repo": "Lin-Chen/Open-LLaVA-NeXT-mix1M", "path": "mix1M.json", **change}
    with pytest.raises(StageError, match=match) as err:
        run(tmp_path, "mix1m", "mix1M.json", hf=hf)
    assert "source 'mix1m'" in str(err.value) and TOKEN not in str(err.value)


def test_hf_unreachable_hub_says_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 1)
    with HubServer() as gone:
        url = gone.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(StageError, match=r"cannot reach .*`dvc repro fetch@mix1m`, which resumes"):
        mix1m(tmp_path)


def test_hub_stand_in_serves_the_real_hf_hub_download(tmp_path, hub):
    from huggingface_hub import hf_hub_download

    commit = hub.publish("org/ds", {"big.zip": DATA})
    hub.publish("org/ds", {"small.json": b"{}"}, lfs=False)
    for name, data, revision in [("big.zip", DATA, commit), ("small.json", b"{}", None)]:
        got = hf_hub_download(
            "org/ds",
            name,
            repo_type="dataset",
            revision=revision,
            local_dir=tmp_path / "hf",
            endpoint=hub.url,
        )
        assert Path(got).read_bytes() == data


def test_hub_stand_in_lists_a_folder_as_hf_api_asks_page_by_page(tmp_path, hub):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    files = {f"data/test-{n}.parquet": bytes([n]) * (n + 1) for n in range(5)}
    commit = hub.publish("org/ds", {**files, "data/extra/notes.txt": b"x", "README.md": b"#"})
    hub.publish("org/ds", {"data/small.json": b"{}"}, lfs=False)
    hub.tree_per_page = 2
    api = HfApi(endpoint=hub.url)
    listed = list(api.list_repo_tree("org/ds", "data", revision=commit, repo_type="dataset"))
    assert sorted(e.path for e in listed if isinstance(e, RepoFile)) == sorted(files)
    assert [e.path for e in listed if isinstance(e, RepoFolder)] == ["data/extra"]
    entry = next(e for e in listed if e.path == "data/test-3.parquet")
    assert entry.size == 4 and entry.lfs.sha256 == hashlib.sha256(b"\3" * 4).hexdigest()
    trees = [s.target for s in hub.seen if "/tree/" in s.path]
    assert trees[0] == f"/api/datasets/org/ds/tree/{commit}/data?recursive=false&expand=false"
    assert len(trees) == 3 and trees[-1].endswith("&cursor=4")  # the Link header's pages
    for path in ("nope", "data/small.json"):  # no such folder; a file's path (as on the Hub)
        with pytest.raises(RemoteEntryNotFoundError):
            list(api.list_repo_tree("org/ds", path, repo_type="dataset"))
    everything = api.list_repo_tree("org/ds", recursive=True, repo_type="dataset")
    assert "data/extra/notes.txt" in {e.path for e in everything}


# ---- Google Drive -----------------------------------------------------------------------

SAM_ID = "1dKumdOKSXtV7lIXdrG7jsIK_z2vZv2gs"


def sam(tmp_path) -> Path:
    return run(tmp_path, "sam_images", "sam_images_9k.zip", gdrive={"id": SAM_ID}, sha256=SHA)


def test_gdrive_confirm_page_is_passed_and_the_download_resumes(tmp_path, drive, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 0)
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="confirm")
    drive.cut(CUT)
    with pytest.raises(StageError, match="bytes received are kept"):
        sam(tmp_path)
    assert sam(tmp_path).read_bytes() == DATA
    steps = [(s.path, s.query.get("confirm"), s.range_start) for s in drive.seen]
    assert steps == [
        ("/uc", None, None),
        ("/download", "t", None),
        ("/uc", None, CUT),
        ("/download", "t", CUT),
    ]


def test_gdrive_quota_page_stops_with_the_manual_instruction(tmp_path, drive):
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="quota")
    with pytest.raises(StageError) as err:
        sam(tmp_path)
    msg = str(err.value)
    assert "source 'sam_images'" in msg and "quota is exceeded" in msg
    assert f"https://drive.google.com/file/d/{SAM_ID}/view" in msg
    assert "save it as downloads/manual/sam_images_9k.zip" in msg
    assert "sources.local.yaml as `sam_images: downloads/manual/sam_images_9k.zip`" in msg
    assert f"sha256 {SHA}" in msg
    assert not part_of(tmp_path, "sam_images", "sam_images_9k.zip").exists()


def files_under(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file()]


def test_gdrive_api_with_a_service_account_resumes_and_keeps_the_token_secret(
    tmp_path, drive, monkeypatch, capfd
):
    monkeypatch.setattr(transports, "RETRIES", 0)
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="quota")  # the public route is shut
    key_json, pem = service_account(drive)
    monkeypatch.setenv(transports.GDRIVE_CREDENTIALS_ENV, key_json)
    drive.cut(CUT)
    with pytest.raises(StageError, match="bytes received are kept"):
        sam(tmp_path)
    assert sam(tmp_path).read_bytes() == DATA
    steps = [(s.method, s.path, s.range_start) for s in drive.seen]
    api = f"/drive/v3/files/{SAM_ID}"
    assert steps == [("POST", "/token", None), ("GET", api, None)] + [
        ("POST", "/token", None),
        ("GET", api, CUT),
    ]
    gets = [s for s in drive.seen if s.method == "GET"]
    assert [s.headers["authorization"] for s in gets] == [f"Bearer {t}" for t in drive.issued]
    assert all(s.query["alt"] == "media" for s in gets)
    secrets = [t.encode() for t in drive.issued] + [pem.splitlines()[1].encode()]
    said = capfd.readouterr()
    for path in files_under(tmp_path):
        assert not any(secret in path.read_bytes() for secret in secrets), path
    assert not any(secret.decode() in said.out + said.err for secret in secrets)


def test_gdrive_api_with_saved_user_credentials_refreshes_the_token(tmp_path, drive, monkeypatch):
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="quota")
    drive.refresh_tokens.add("1//refresh-me")
    saved = {  # the oauth2client form DVC's gdrive remote saves after the browser sign-in
        "access_token": "ya29.expired",
        "client_id": "123-lab.apps.googleusercontent.com",
        "client_secret": "not-so-secret",
        "refresh_token": "1//refresh-me",
        "token_expiry": "2020-01-01T00:00:00Z",
        "token_uri": f"{drive.url}/token",
        "user_agent": None,
        "invalid": False,
        "_class": "OAuth2Credentials",
        "_module": "oauth2client.client",
    }
    monkeypatch.setenv(transports.GDRIVE_CREDENTIALS_ENV, json.dumps(saved))
    assert sam(tmp_path).read_bytes() == DATA
    (grant,) = [s for s in drive.seen if s.method == "POST"]
    assert "grant_type=refresh_token" in grant.body.decode()


def test_gdrive_api_refusal_and_bad_credentials_say_what_to_do(tmp_path, drive, monkeypatch):
    drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="private")
    key_json, _ = service_account(drive)
    monkeypatch.setenv(transports.GDRIVE_CREDENTIALS_ENV, key_json)
    with pytest.raises(StageError) as err:
        sam(tmp_path)
    msg = str(err.value)
    assert "source 'sam_images'" in msg and "HTTP 403" in msg
    assert "GDRIVE_CREDENTIALS_DATA: share the file with it" in msg
    assert "save it as downloads/manual/sam_images_9k.zip" in msg and f"sha256 {SHA}" in msg

    drive.accounts.clear()  # the key is no longer valid: the token endpoint refuses it
    with pytest.raises(StageError, match="no access token could be obtained") as err:
        sam(tmp_path)
    assert "GDRIVE_CREDENTIALS_DATA" in str(err.value) and "Invalid grant" in str(err.value)

    monkeypatch.setenv(transports.GDRIVE_CREDENTIALS_ENV, "/home/me/key.json")
    with pytest.raises(StageError, match="GDRIVE_CREDENTIALS_DATA is not JSON"):
        sam(tmp_path)


def test_drive_confirm_link_of_the_older_page_is_followed():
    page = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=X">'
    got = transports.drive_confirm_url(page, "https://drive.google.com/uc?id=X")
    assert got == "https://drive.google.com/uc?export=download&confirm=AbC1&id=X"
    assert transports.drive_confirm_url("<html>Quota exceeded</html>", "https://x/") is None


def test_no_stray_files_outside_the_download_folders(tmp_path, files):
    coco(tmp_path, files)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in left if not p.startswith("www")] == ["downloads/coco/train2017.zip"]
    assert os.listdir(tmp_path / "downloads/.partial") == []


def test_stage_cli_in_a_fresh_process_downloads_from_the_hub_named_by_hf_endpoint(tmp_path, hub):
    commit = hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA})
    hf = {"repo": "Lin-Chen/Open-LLaVA-NeXT-mix1M", "path": "mix1M.json", "revision": None}
    registry = tmp_path / "sources.yaml"
    registry.write_text(
        yaml.safe_dump({"sources": {"mix1m": {"file": "mix1M.json", "full": {"hf": hf}}}})
    )
    argv = ["--registry", registry, "--source", "mix1m", "--profile", "full"]
    argv += ["--out", tmp_path / "out", "--partial", tmp_path / "partial"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HF_HOME": tmp_path / "h"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.fetch", *map(str, argv)],
        env={k: str(v) for k, v in env.items()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out/mix1M.json").read_bytes() == DATA
    assert f"hf.revision: {commit}" in done.stderr and TOKEN not in done.stderr + done.stdout


# ---- mirrors ------------------------------------------------------------------------------


def write_mirrors(tmp_path: Path, table) -> Path:
    path = tmp_path / "mirrors.local.yaml"
    path.write_text(table if isinstance(table, str) else yaml.safe_dump(table))
    return path


def test_mirror_serves_the_real_url_by_its_longest_prefix(tmp_path, files):
    (files.root / "coco/zips").mkdir(parents=True)
    (files.root / "coco/zips/train2017.zip").write_bytes(DATA)
    transports.use_mirrors(
        write_mirrors(
            tmp_path,
            {
                "http://images.cocodataset.org/": f"{files.url}/elsewhere/",
                "http://images.cocodataset.org/zips/": f"{files.url}/coco/zips/",
            },
        )
    )
    url = "http://images.cocodataset.org/zips/train2017.zip"
    assert coco(tmp_path, files, url=url).read_bytes() == DATA
    assert [s.path for s in files.seen] == ["/coco/zips/train2017.zip"]
    assert transports.mirrored("https://images.cocodataset.org/x") == (
        "https://images.cocodataset.org/x"
    )


def test_mirror_rewrites_redirects_too(tmp_path, files):
    from tests.servers import Reply

    (files.root / "coco/zips").mkdir(parents=True)
    (files.root / "coco/zips/train2017.zip").write_bytes(DATA)
    real = "http://images.cocodataset.org/zips/train2017.zip"
    files.routes.insert(
        0, lambda seen: Reply(302, b"", {"Location": real}) if seen.path == "/old.zip" else None
    )
    transports.use_mirrors(
        write_mirrors(tmp_path, {"http://images.cocodataset.org/": f"{files.url}/coco/"})
    )
    assert coco(tmp_path, files, url=f"{files.url}/old.zip").read_bytes() == DATA
    assert [s.path for s in files.seen] == ["/old.zip", "/coco/zips/train2017.zip"]


def test_mirror_credentials_are_used_but_never_shown(tmp_path, files):
    transports.use_mirrors(
        write_mirrors(
            tmp_path, {"http://images.cocodataset.org/": f"http://lab:s3cret@{files.url[7:]}/"}
        )
    )
    with pytest.raises(StageError, match="HTTP 404") as err:
        coco(tmp_path, files, url="http://images.cocodataset.org/zips/missing.zip")
    msg = str(err.value)
    assert "s3cret" not in msg and "through the mirror http://***@127.0.0.1" in msg
    assert files.seen[0].headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- http://a/\n- http://b/\n", "must map URL prefixes to the bases"),
        ("'http://a/': 8080\n", "base '8080' .* is not an http"),
        ("'images.cocodataset.org/': 'http://127.0.0.1/'\n", "prefix 'images.cocodataset.org/'"),
        ("'http://a/': [unclosed\n", "cannot be read as YAML"),
    ],
)
def test_a_malformed_mirrors_file_is_named(tmp_path, text, match):
    path = write_mirrors(tmp_path, text)
    with pytest.raises(StageError, match=match) as err:
        transports.use_mirrors(path)
    assert str(path) in str(err.value)


def test_a_missing_or_empty_mirrors_file_means_no_mirrors(tmp_path):
    transports.use_mirrors(tmp_path / "mirrors.local.yaml")
    assert (
        transports.mirrored("http://images.cocodataset.org/a") == "http://images.cocodataset.org/a"
    )
    transports.use_mirrors(write_mirrors(tmp_path, ""))
    assert transports.mirrored("https://drive.google.com/uc") == "https://drive.google.com/uc"


def google_mirrors(tmp_path, drive) -> Path:
    """Every Google URL the Drive transport asks for, mapped onto the stand-in."""
    base = f"{drive.url}/"
    return write_mirrors(
        tmp_path,
        {
            "https://drive.google.com/": base,
            "https://drive.usercontent.google.com/": base,
            "https://www.googleapis.com/": base,
            "https://oauth2.googleapis.com/": base,
        },
    )


def test_mirror_carries_drive_uc_and_its_confirm_step(tmp_path, monkeypatch):
    monkeypatch.delenv(transports.GDRIVE_CREDENTIALS_ENV, raising=False)
    with DriveServer() as drive:  # reached by Google's real URLs, through the mirrors
        drive.public_base = "https://drive.usercontent.google.com"
        drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="confirm")
        transports.use_mirrors(google_mirrors(tmp_path, drive))
        assert sam(tmp_path).read_bytes() == DATA
    assert [(s.path, s.query.get("confirm")) for s in drive.seen] == [
        ("/uc", None),
        ("/download", "t"),
    ]


def test_mirror_carries_the_drive_api_and_googles_token_url(tmp_path, monkeypatch):
    with DriveServer() as drive:
        drive.add(SAM_ID, "sam_images_9k.zip", DATA, mode="quota")
        key_json, _ = service_account(drive)
        key = json.loads(key_json)
        del key["token_uri"]  # Google's default token URL, https://oauth2.googleapis.com/token
        monkeypatch.setenv(transports.GDRIVE_CREDENTIALS_ENV, json.dumps(key))
        transports.use_mirrors(google_mirrors(tmp_path, drive))
        assert sam(tmp_path).read_bytes() == DATA
    assert [(s.method, s.path) for s in drive.seen] == [
        ("POST", "/token"),
        ("GET", f"/drive/v3/files/{SAM_ID}"),
    ]


# ---- refusing a file that is not the pinned one, before a byte is written ----------------


def test_http_length_that_is_not_the_pinned_size_is_refused_with_nothing_written(tmp_path, files):
    with pytest.raises(transports.NotPinned) as err:
        coco(tmp_path, files, size=len(DATA) + 1)
    msg = str(err.value)
    assert "source 'coco'" in msg and f"{files.url}/zips/train2017.zip" in msg
    assert "now has 102,403 bytes (the Content-Length of its answer)" in msg
    assert "sources.yaml pins 102,404 bytes (sources.coco.full.size)" in msg
    assert "nothing was downloaded" in msg
    assert "set `size: 102403`, `sha256: null` in sources.coco.full" in msg
    assert "from a mirror" not in msg and "assumed" not in msg
    assert files_under(tmp_path / "downloads") == []
    assert [s.method for s in files.seen] == ["GET"]


@pytest.mark.parametrize(
    ("how", "said"),
    [("mirror", "comes from a mirror or a user listing"), ("assumed", "is assumed")],
)
def test_refusal_says_a_mirror_or_assumed_pin_may_be_wrong(tmp_path, files, how, said):
    with pytest.raises(transports.NotPinned) as err:
        coco(tmp_path, files, size=len(DATA) + 1, known={"size": how})
    msg = str(err.value)
    assert f"The pinned size {said} (sources.coco.full.known.size: {how})" in msg
    assert "may be wrong: the real file's size is what the upstream now says, 102,403 bytes" in msg


def test_resumed_file_whose_upstream_changed_length_is_refused_keeping_the_partial(
    tmp_path, files, monkeypatch
):
    monkeypatch.setattr(transports, "RETRIES", 0)
    files.cut(CUT)
    with pytest.raises(StageError, match="bytes received are kept"):
        coco(tmp_path, files, size=len(DATA))
    (files.root / "zips/train2017.zip").write_bytes(DATA + b"more")
    with pytest.raises(transports.NotPinned) as err:
        coco(tmp_path, files, size=len(DATA))
    assert "now has 102,407 bytes" in str(err.value)
    assert "The 40,000 bytes kept in" in str(err.value)
    assert part_of(tmp_path, "coco", "train2017.zip").read_bytes() == DATA[:CUT]
    assert files.seen[-1].range_start == CUT  # If-Range made the server answer it whole


def test_hf_sha256_or_size_not_the_pinned_one_is_refused_before_the_transfer(tmp_path, hub):
    commit = hub.publish("Lin-Chen/Open-LLaVA-NeXT-mix1M", {"mix1M.json": DATA})
    other = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(transports.NotPinned) as err:
        mix1m(tmp_path, revision=commit, sha256=other, known={"sha256": "mirror"})
    msg = str(err.value)
    assert f"file mix1M.json at commit {commit} now has sha256 {SHA}" in msg
    assert f"pins sha256 {other} (sources.mix1m.full.sha256)" in msg
    assert "nothing was downloaded" in msg and "The pinned sha256 comes from a mirror" in msg
    assert f"the real file's sha256 is what the upstream now says, sha256 {SHA}" in msg

    with pytest.raises(transports.NotPinned, match=r"now has 102,403 bytes .*pins 5 bytes"):
        mix1m(tmp_path, revision=commit, size=5)
    assert hub.cdn.seen == [] and files_under(tmp_path / "downloads") == []
    assert {s.method for s in hub.seen} == {"HEAD"}


# ---- a Hub revision found by content --------------------------------------------------------

V1, V2, V3 = DATA, DATA[::-1], DATA[1:] + b"!"


def three_versions(hub) -> list[str]:
    """Three commits of mix1M.json with different contents, then one of another file."""
    repo = "Lin-Chen/Open-LLaVA-NeXT-mix1M"
    commits = [
        hub.publish(repo, {"mix1M.json": v}, title=f"v{n}") for n, v in enumerate([V1, V2, V3], 1)
    ]
    commits.append(hub.publish(repo, {"README.md": b"# mix1M\n"}, lfs=False, title="readme"))
    hub.commits_per_page = 2  # the listing comes in pages, as the Hub paginates it
    return commits


ONE_LINE_REGISTRY = (  # the registry's one line per origin, where a fetch fills the nulls
    "sources:\n  mix1m:\n    file: mix1M.json\n    full: {{hf: {{repo: "
    "Lin-Chen/Open-LLaVA-NeXT-mix1M, path: mix1M.json, revision: null}}, size: null, "
    "sha256: {sha}}}\n"
)


def test_hf_unpinned_revision_is_found_by_the_pinned_sha256_and_pinned(tmp_path, hub, capsys):
    c1, c2, c3, readme = three_versions(hub)
    registry = tmp_path / "sources.yaml"
    registry.write_text(ONE_LINE_REGISTRY.format(sha=hashlib.sha256(V1).hexdigest()))
    origin = Origin.parse("mix1m", yaml.safe_load(registry.read_text())["sources"]["mix1m"], "full")
    final = fetch(origin, tmp_path / "out", tmp_path / "partial", None, registry)
    assert final.read_bytes() == V1
    assert f"revision: {c1}}}" in registry.read_text()
    asked = [s.path.rsplit("/", 1)[-1] for s in hub.seen if "/paths-info/" in s.path]
    assert asked == [readme, c2, c1]  # c3 is skipped: the readme commit did not change the file
    assert f"commit {c1} has it and is used" in capsys.readouterr().err
    resolve = [s.path for s in hub.seen if s.path.startswith("/datasets/") and s.method == "GET"]
    assert resolve == [f"/datasets/Lin-Chen/Open-LLaVA-NeXT-mix1M/resolve/{c1}/mix1M.json"]


def test_hf_no_commit_with_the_pinned_sha256_lists_what_was_seen(tmp_path, hub):
    c1, c2, c3, readme = three_versions(hub)
    wanted = hashlib.sha256(b"never published").hexdigest()
    with pytest.raises(transports.NoSuchContent) as err:
        mix1m(tmp_path, sha256=wanted)
    msg = str(err.value)
    assert f"pinned sha256 {wanted}" in msg and "nothing was downloaded" in msg
    for commit, data in [(readme, V3), (c2, V2), (c1, V1)]:
        assert f"{commit} (sha256 {hashlib.sha256(data).hexdigest()})" in msg
    assert [c for c, _ in err.value.tried] == [readme, c2, c1]
    assert hub.cdn.seen == [] and files_under(tmp_path / "downloads") == []


def test_hf_head_already_holding_the_pinned_sha256_needs_no_history(tmp_path, hub, capsys):
    *_, readme = three_versions(hub)
    assert mix1m(tmp_path, sha256=hashlib.sha256(V3).hexdigest()).read_bytes() == V3
    assert not [s for s in hub.seen if s.path.startswith("/api/")]
    assert f"hf.revision: {readme}" in capsys.readouterr().err
