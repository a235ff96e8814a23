"""The image index on a real Dask cluster, started as its README section starts one
(`dask scheduler`, `dask worker`, then `LLAVA_DATA_CLUSTER=... dvc repro`), gives the same
bytes as the local processes of the session's first build; a bad address is refused."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from llava_data import engine
from llava_data.common import StageError
from tests.dvcrepo import BIN, dvc, env, tree_digest


@contextlib.contextmanager
def dask_cluster(repo: Path, tmp: Path, workers: int = 2):
    """A scheduler and `workers` worker processes on loopback, run from the repository in
    its environment, as a user starts them; yields the scheduler's address."""
    info = tmp / "scheduler.json"
    common = {"cwd": repo, "env": env({"PYTHONPATH": str(repo)}), "start_new_session": True}
    logs = [open(tmp / f"{name}.log", "w") for name in ("scheduler", "worker")]  # noqa: SIM115
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"]
        + ["--no-dashboard", "--scheduler-file", str(info)],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
        **common,
    )
    procs = [scheduler]
    try:
        deadline = time.monotonic() + 180
        while not info.exists() and time.monotonic() < deadline:
            assert scheduler.poll() is None, (tmp / "scheduler.log").read_text()
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nworkers", str(workers)]
                + ["--nthreads", "1", "--no-dashboard", "--local-directory", str(tmp / "w")],
                stdout=logs[1],
                stderr=subprocess.STDOUT,
                **common,
            )
        )
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=180)
        yield address
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
        for log in logs:
            log.close()


def test_the_index_on_a_dask_cluster_is_the_local_index(built_copy, first_build, tmp_path):
    repo = built_copy
    shutil.rmtree(repo / "work/images")
    with dask_cluster(repo, tmp_path) as address:
        out = dvc(
            "repro",
            "--single-item",
            "index_images",
            cwd=repo,
            extra_env={engine.CLUSTER_VAR: address},
        )
    assert f"task(s) on {address} (2 worker(s))" in out.stderr + out.stdout
    built, local = tree_digest(repo / "work/images"), tree_digest(first_build / "work/images")
    assert built == local and len(built) > 20
    assert "eval/pope.parquet" in built
    # DVC hashes the same outputs: nothing downstream is out of date
    assert "Data and pipelines are up to date." in dvc("status", cwd=repo).stdout


@pytest.mark.parametrize("address", ["localhost:8786", "ray://head:10001", "http://x:8786"])
def test_an_address_that_is_not_dask_is_refused(monkeypatch, address):
    monkeypatch.setenv(engine.CLUSTER_VAR, address)
    with pytest.raises(StageError, match="not a Dask scheduler address"):
        engine.run(len, [[1]], 1)


def test_no_scheduler_at_the_address_says_what_to_do(monkeypatch):
    monkeypatch.setenv(engine.CLUSTER_VAR, "tcp://127.0.0.1:9")
    with pytest.raises(StageError, match="no Dask scheduler answers there"):
        engine.run(len, [[1]], 1)


def test_local_processes_keep_the_tasks_order():
    tasks = [list(range(n)) for n in (5, 0, 3, 7, 1)]
    assert engine.run(len, tasks, 2) == [5, 0, 3, 7, 1]
    assert engine.run(len, tasks, 1) == [5, 0, 3, 7, 1]
