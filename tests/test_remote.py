"""The team remote: push from one clone, pull into another, against a real S3 server on loopback."""

from __future__ import annotations

import shutil

import pytest

from tests.dvcrepo import clone, dvc, run, tree_digest
from tests.s3server import CuttingProxy, seaweedfs

# Any key works with SeaweedFS when no identities are configured; real ones stay in the
# environment or .dvc/config.local, never in a committed file.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_MAX_ATTEMPTS": "2",
}
UP_TO_DATE = "Data and pipelines are up to date."


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("s3")) as server:
        server.create_bucket("llava-data")
        server.create_bucket("interrupted")
        yield server


@pytest.fixture(scope="module")
def built(built_copy):
    return built_copy


def use_remote(repo, endpoint: str, url: str | None = None) -> None:
    """Point the committed `team` remote at this server, in .dvc/config.local only."""
    dvc("remote", "modify", "--local", "team", "endpointurl", endpoint, cwd=repo)
    if url:
        dvc("remote", "modify", "--local", "team", "url", url, cwd=repo)


def dvc_s3(*args, cwd, check=True):
    return dvc(*args, cwd=cwd, check=check, extra_env=CREDENTIALS)


def test_push_then_pull_into_a_fresh_clone_rebuilds_without_upstream(s3, built, tmp_path):
    use_remote(built, s3.endpoint)
    before = dvc_s3("status", "--cloud", cwd=built).stdout
    assert "new:" in before and "downloads/coco_train2017" in before
    dvc_s3("push", cwd=built)
    assert "Cache and remote 'team' are in sync" in dvc_s3("status", "--cloud", cwd=built).stdout
    assert not (built / ".dvc/config.local").read_text().count("test"), "no credentials written"

    mate = clone(tmp_path / "teammate")
    shutil.rmtree(mate / "miniature/upstream")  # the upstream is unreachable from here on
    use_remote(mate, s3.endpoint)
    dvc_s3("pull", cwd=mate)
    status = dvc("status", cwd=mate).stdout
    assert "extract@coco_train2017" in status and "fetch@" not in status
    out = dvc("repro", cwd=mate).stdout
    assert "Running stage 'extract@" in out
    assert "Running stage 'fetch@" not in out
    assert UP_TO_DATE in dvc("status", cwd=mate).stdout
    assert run(["git", "status", "--porcelain", "dvc.lock"], mate).stdout == ""
    for folder in ("data", "manifests", "downloads"):
        assert tree_digest(mate / folder) == tree_digest(built / folder), folder


def test_a_trainer_pulls_one_recipes_shards_and_nothing_else(s3, built, tmp_path):
    use_remote(built, s3.endpoint)
    dvc_s3("push", cwd=built)
    trainer = clone(tmp_path / "trainer")
    use_remote(trainer, s3.endpoint)
    stages = [f"export@llava_v1_5_665k-{fmt}" for fmt in ("webdataset", "parquet", "llamafactory")]
    dvc_s3("pull", *stages, cwd=trainer)  # the README's command
    for fmt in ("webdataset", "parquet", "llamafactory"):
        folder = f"exports/llava_v1_5_665k/{fmt}"
        assert tree_digest(trainer / folder) == tree_digest(built / folder), folder
    tracked = set(run(["git", "ls-files"], trainer).stdout.splitlines())
    pulled = sorted(
        rel
        for p in trainer.rglob("*")
        if p.is_file() and not {".git", ".dvc"} & set(p.relative_to(trainer).parts)
        and (rel := str(p.relative_to(trainer))) not in tracked
    )  # fmt: skip
    assert pulled and all(p.startswith("exports/llava_v1_5_665k/") for p in pulled), pulled
    assert not (trainer / "downloads").exists() and not (trainer / "manifests").exists()


def test_server_going_away_mid_push_is_reported_and_a_second_push_completes(s3, built, tmp_path):
    port = int(s3.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, limit=60_000)
    use_remote(built, f"http://127.0.0.1:{proxy.port}", "s3://interrupted/store")
    failed = dvc_s3("push", cwd=built, check=False)
    proxy.close()
    assert failed.returncode != 0
    assert proxy.cut.is_set(), "the proxy cut the transfer"
    # Where the cut lands decides DVC's wording ("failed to transfer <hash>" while files go
    # up, "unexpected error" while it lists the remote or uploads a .dir listing); either
    # way the error must say the endpoint could not be reached and name it.
    message = (failed.stdout + failed.stderr).lower()
    assert "could not connect to the endpoint url" in message
    assert f"127.0.0.1:{proxy.port}/interrupted" in message

    use_remote(built, s3.endpoint)
    assert "new:" in dvc_s3("status", "--cloud", cwd=built).stdout
    dvc_s3("push", cwd=built)
    assert "Cache and remote 'team' are in sync" in dvc_s3("status", "--cloud", cwd=built).stdout

    mate = clone(tmp_path / "after-interruption")
    shutil.rmtree(mate / "miniature/upstream")
    use_remote(mate, s3.endpoint, "s3://interrupted/store")
    dvc_s3("pull", cwd=mate)
    dvc("repro", cwd=mate)
    for folder in ("data", "downloads"):
        assert tree_digest(mate / folder) == tree_digest(built / folder), folder
