"""Fixtures shared by the modules that run the real `dvc` CLI on the miniature."""

from __future__ import annotations

import shutil

import pytest

from tests.dvcrepo import clone, dvc


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
