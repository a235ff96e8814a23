"""Fixtures shared by the modules that run the real `dvc` CLI on the miniature."""

from __future__ import annotations

import shutil

import pytest

from tests.dvcrepo import clone, dvc
from tests.servers import SAMPLE, FileServer, HubServer

# The modules that build the miniature (or a repository's branches), slowest first. Each
# worker takes whole files in collection order (`--dist loadfile --no-loadscope-reorder`
# in the Makefile): starting these first keeps the two workers' loads even.
SLOWEST_FIRST = (
    "test_review",
    "test_readme",
    "test_rehearsal",
    "test_faults",
    "test_exports",
    "test_remote",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))


@pytest.fixture(scope="session")
def first_build(tmp_path_factory):
    """One fresh copy of the repository, built once by `dvc repro` for the whole session.

    Modules that change what they build work on their own copy of it (`built_copy`):
    a copy costs milliseconds, a build about a minute.
    """
    repo = clone(tmp_path_factory.mktemp("first-build"))
    dvc("repro", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def built_copy(first_build, tmp_path_factory):
    """This module's own copy of the built repository (git, DVC cache and outputs)."""
    dest = tmp_path_factory.mktemp("built") / "repo"
    shutil.copytree(first_build, dest, symlinks=True)
    return dest


@pytest.fixture
def files(tmp_path):
    """An HTTP stand-in serving SAMPLE at /zips/train2017.zip."""
    root = tmp_path / "www"
    (root / "zips").mkdir(parents=True)
    (root / "zips/train2017.zip").write_bytes(SAMPLE)
    with FileServer(root) as server:
        yield server


@pytest.fixture
def hub(monkeypatch):
    """A Hugging Face Hub stand-in, which huggingface_hub reaches through HF_ENDPOINT.

    huggingface_hub's telemetry is off, so that the stand-in sees only what the code asks:
    with it on, the first request of a process also asks HF_ENDPOINT for the client's
    agent-harness registry, and a test asserting what was asked fails or passes by the
    order its worker ran the tests in."""
    from huggingface_hub import constants

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # for the stages run as commands
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield server
