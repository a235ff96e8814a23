"""Reviewing a data change, on a real repository with real branches, the real `dvc` and
`make` as a user types them: the report names exactly what changed, the dvc.lock merge
driver merges two branches, and the CI script pulls from a SeaweedFS remote, rebuilds what
is out of date and posts one comment to a GitHub API stand-in, updated on a later push.

One repository (a copy of the session's build) gets the branches the tests compare:
`allava` (mix.allava=0), `vqav2` (mixtures.llava_v1_5_665k.vqav2=0) and `source` (the
miniature's ALLaVA-VFLAN file loses its last record, its pin in sources.yaml follows).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.dvcrepo import BIN, dvc, run
from tests.s3server import seaweedfs
from tests.servers import GitHubServer
from tests.test_readme import readme_report, same_report

VENV = BIN.parent
ALLAVA_FILE = (
    "miniature/upstream/hf/FreedomIntelligence/ALLaVA-4V/allava_vflan/ALLaVA-Instruct-VFLAN-4V.json"
)
OTHER_RECIPES = ("llava_v1_5_665k", "sharegpt4v_665k", "sharegpt4v_pt", "mix1m_no_allava")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
TOKEN = "ghs_not-a-real-token-0123456789"


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo).stdout


def make(repo: Path, *args: str, check: bool = True, env: dict | None = None):
    """`make <args>` as typed, with this suite's environment as the repository's .venv."""
    return run(["make", "-s", *args, f"VENV={VENV}"], repo, check=check, extra_env=env)


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def switch(repo: Path, branch: str, new: bool = False) -> None:
    git(repo, "checkout", "-q", *(["-b", branch, "base"] if new else [branch]))
    dvc("checkout", "--quiet", cwd=repo)


def weight_allava_0(repo: Path) -> None:
    replace_once(
        repo / "params.yaml",
        "mix:\n  seed: 0\n  sharegpt4v: 1\n  allava: 1\n",
        "mix:\n  seed: 0\n  sharegpt4v: 1\n  allava: 0\n",
    )


def weight_vqav2_0(repo: Path) -> None:
    replace_once(
        repo / "params.yaml",
        "  llava_v1_5_665k:\n    seed: 0\n    llava: 1\n    sharegpt: 1\n    vqav2: 1\n",
        "  llava_v1_5_665k:\n    seed: 0\n    llava: 1\n    sharegpt: 1\n    vqav2: 0\n",
    )


def decontaminate_pope(repo: Path) -> None:
    replace_once(
        repo / "params.yaml",
        "    out: data/open-llava-next/open-llava-next_instruct_mix1M.json\n"
        "    decontaminate: []\n",
        "    out: data/open-llava-next/open-llava-next_instruct_mix1M.json\n"
        "    decontaminate: [pope]\n",
    )


def drop_last_allava_record(repo: Path) -> str:
    """The miniature's ALLaVA-VFLAN file without its last record, pinned anew; its id."""
    path = repo / ALLAVA_FILE
    records = json.loads(path.read_text(encoding="utf-8"))
    dropped = records.pop()
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    data = path.read_bytes()
    line = next(ln for ln in (repo / "sources.yaml").read_text().splitlines() if ALLAVA_FILE in ln)
    new = re.sub(r"size: \d+", f"size: {len(data)}", line)
    new = re.sub(r"sha256: [0-9a-f]{64}", f"sha256: {hashlib.sha256(data).hexdigest()}", new)
    replace_once(
        repo / "sources.yaml", line, re.sub(r"records: \d+", f"records: {len(records)}", new)
    )
    return dropped["id"]


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


@pytest.fixture(scope="module")
def repo(built_copy, tmp_path_factory):
    r = built_copy
    git(r, "config", "user.email", "t@example.org")
    git(r, "config", "user.name", "t")
    git(r, "tag", "base")
    git(r, "checkout", "-q", "-b", "allava")
    weight_allava_0(r)
    dvc("repro", cwd=r)
    commit(r, "mix1M without ALLaVA")
    # for the merge test: the same two changes made one after the other on one branch
    reference = tmp_path_factory.mktemp("reference") / "repo"
    shutil.copytree(r, reference, symlinks=True)
    switch(r, "vqav2", new=True)
    weight_vqav2_0(r)
    dvc("repro", cwd=r)
    commit(r, "665K without VQAv2")
    switch(r, "pope", new=True)
    decontaminate_pope(r)
    dvc("repro", cwd=r)
    commit(r, "mix1M without POPE's images")
    switch(r, "source", new=True)
    dropped = drop_last_allava_record(r)
    dvc("repro", cwd=r)
    commit(r, "ALLaVA-VFLAN: a new upstream file")
    switch(r, "base")
    return {"repo": r, "reference": reference, "dropped": dropped}


def report(repo: Path, *args: str) -> str:
    make(repo, "review", *args)
    return (repo / "review/report.md").read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The text of the `## title` section ('' if there is none)."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    return m[1] if m else ""


def ids_of(path: Path) -> list[str]:
    return [r["id"] for r in json.loads(path.read_text(encoding="utf-8"))]


def test_no_change_says_so(repo):
    text = report(repo["repo"], "BASE=base")
    assert "**No change to the data**" in text
    for title in (
        "What was asked",
        "What it does",
        "Which outputs changed",
        "Which records changed",
    ):
        assert not section(text, title), title
    assert not section(text, "Warnings")  # the build is what dvc.yaml and the params produce
    # no remote is set up here: the report says it could not ask, and why
    assert "whether every output is on the remote" in section(text, "Not compared")


def test_a_params_change_not_rebuilt_is_a_warning(repo):
    r = repo["repo"]
    weight_allava_0(r)
    try:
        text = report(r, "BASE=base")
    finally:
        git(r, "checkout", "-q", "--", "params.yaml")
    assert "recipe `mix1m`, part `allava`: weight 1 → 0 (left out)" in text
    warning = section(text, "Warnings")
    assert "dvc.lock is not what dvc.yaml and the params produce" in warning
    assert "`mix@mix1m`" in warning and "`mix@llava_v1_5_665k`" not in warning


def test_a_weight_change_shows_only_its_recipe(repo):
    r = repo["repo"]
    text = report(r, "BASE=base", "HEAD=allava")
    asked = section(text, "What was asked")
    assert (
        asked.count("\n- ") == 1
        and "recipe `mix1m`, part `allava`: weight 1 → 0 (left out)" in asked
    )
    does = section(text, "What it does")
    assert re.findall(r"#### Recipe `(\w+)`", does) == ["mix1m"]
    assert re.search(r"\| `allava` \| 8 \| 8 → 0 \(-8\) \| 8 → 0 \(-8\) \|", does)
    assert "Images per tree" not in does and "split" not in does
    outs = section(text, "Which outputs changed")
    stages = set(re.findall(r"^\| `([^`]+)` \|", outs, re.M))
    assert stages == {"mix@mix1m", "link_mix1m"} | {
        f"export@mix1m-{f}" for f in ("webdataset", "parquet", "llamafactory")
    }
    for other in OTHER_RECIPES:
        assert other not in text, other
    # the records removed are exactly the base's ALLaVA part, named with their part
    records = section(text, "Which records changed")
    assert "### `data/recipes/mix1m/allava.json`" in records
    assert "0 added, 8 removed, 0 moved, 0 kept" in records
    shown = re.findall(r"^\| removed \| `([^`]+)` \| `allava` \|", records, re.M)
    git(r, "checkout", "-q", "base")
    base_allava = ids_of(r / "data/recipes/mix1m/allava.json")
    examples = 3  # review.examples in params.yaml
    assert len(shown) == 2 * examples and set(shown) <= set(base_allava)  # two files
    assert "not checked out" in section(text, "Not compared")


def test_a_source_change_shows_the_source_its_stages_and_counts(repo):
    r = repo["repo"]
    text = report(r, "BASE=base", "HEAD=source")
    sources = section(text, "What was asked")
    assert "`allava_vflan_json` | `mini.sha256`" in sources and "`mini.records` | 10 | 9" in sources
    assert "source `allava_vflan_json`: upstream pin `mini.sha256` changed" in section(
        text, "Warnings"
    )
    outs = section(text, "Which outputs changed")
    for stage in ("fetch@allava_vflan_json", "prepare@allava_vflan_json", "split_mix1m"):
        assert f"`{stage}`" in outs, stage
    assert "mix@" not in outs  # mix1M's split index did not change: no recipe was rebuilt
    does = section(text, "What it does")
    assert "prepared file `allava_vflan_json` | `records_in` | 10 → 9 (-1)" in does
    assert "split `mix1m` | `compared_with_upstream.allava." in does  # the split compares anew
    records = section(text, "Which records changed")
    assert "### `data/allava_vflan/ALLaVA-Instruct-VFLAN-4V.json`" in records
    assert f"| removed | `{repo['dropped']}` |" in records and "0 added, 1 removed" in records


def test_a_decontamination_is_said_in_words_with_what_it_removed(repo):
    r = repo["repo"]
    text = report(r, "BASE=base", "HEAD=pope")
    asked = section(text, "What was asked")
    assert (
        "recipe `mix1m`: now leaves out the records whose image is in `pope` (exact or near "
        "copies)" in asked
    )
    does = section(text, "What it does")
    assert re.findall(r"#### Recipe `(\w+)`", does) == ["mix1m"]
    assert "left out by decontamination: `records` 0 → 2 (+2)" in does
    assert "evaluation overlap: `pope.records_exact` 2 → 0 (-2)" in does
    records = section(text, "Which records changed")
    assert "### `data/open-llava-next/open-llava-next_instruct_mix1M.json`" in records
    assert "0 added, 2 removed" in records


def test_the_readme_pin_example_is_what_make_review_prints(repo):
    r = repo["repo"]
    switch(r, "source")
    try:
        printed = report(r, "BASE=base")
    finally:
        switch(r, "base")
    shown = readme_report("<!-- the report of a changed pin")
    assert same_report(printed) == same_report(shown), printed


def test_merge_driver_merges_two_recipe_branches(repo):
    r = repo["repo"]
    git(r, "checkout", "-q", "allava")
    before = git(r, "rev-parse", "HEAD").strip()
    # without the driver, git's text merge conflicts in dvc.lock
    plain = run(["git", "merge", "--no-edit", "vqav2"], r, check=False)
    assert plain.returncode != 0 and "dvc.lock" in plain.stdout + plain.stderr
    git(r, "merge", "--abort")
    make(r, "merge-driver")
    merged = run(["git", "merge", "--no-edit", "vqav2"], r)
    assert "marked for a rebuild" in merged.stderr
    assert "CONFLICT" not in merged.stdout
    make(r, "repro")
    # the same two changes made on one branch and built there
    ref = repo["reference"]
    weight_vqav2_0(ref)
    dvc("repro", cwd=ref)
    assert (r / "dvc.lock").read_bytes() == (ref / "dvc.lock").read_bytes()
    assert "Data and pipelines are up to date." in dvc("status", cwd=r).stdout
    git(r, "reset", "-q", "--hard", before)  # the branch as it was, for the next test
    dvc("checkout", "--quiet", cwd=r)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("s3")) as server:
        server.create_bucket("llava-data")
        yield server


def test_ci_script_pulls_rebuilds_and_keeps_one_comment(repo, s3, tmp_path):
    r = repo["repo"]
    switch(r, "base")
    env = {**CREDENTIALS}
    dvc("remote", "modify", "--local", "team", "endpointurl", s3.endpoint, cwd=r)
    dvc("push", "--quiet", cwd=r, extra_env=env)  # the base's outputs only
    ci = tmp_path / "ci"
    run(["git", "clone", "-q", "--branch", "allava", str(r), str(ci)], tmp_path)
    (ci / ".venv").symlink_to(VENV)  # the job's cached environment, made from this lock:
    os.utime(ci / "requirements.lock", (1, 1))  # older than it, as a cache keyed on it is
    with GitHubServer(TOKEN) as forge:
        forge.add("team/llava-data", 7, "Looks good to me")
        ci_env = {
            **env,
            "BASE": "base",  # the base's tag, as a CI names the base branch's commit
            "DVC_REMOTE_ENDPOINT": s3.endpoint,
            "PR_NUMBER": "7",
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_REPOSITORY": "team/llava-data",
            "GITHUB_API_URL": forge.url,
            "PATH": "/usr/local/bin:/usr/bin:/bin",  # no environment entered
        }
        first = subprocess.run(
            ["bash", ".ci/review-pr"], cwd=ci, env=ci_env, capture_output=True, text=True
        )
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "review comment 1002 created on pull request #7" in first.stdout
        text = (ci / "review/report.md").read_text(encoding="utf-8")
        # only the PR's own stages were rebuilt: the rest came from the remote
        assert "Running stage 'mix@mix1m'" in first.stdout
        assert "Running stage 'mix@llava_v1_5_665k'" not in first.stdout
        assert "Running stage 'fetch@" not in first.stdout
        # the base's records came from the remote, and the PR's outputs are not there yet
        assert "0 added, 8 removed" in section(text, "Which records changed")
        warnings = section(text, "Warnings")
        assert "not on the remote" in warnings and "data/recipes/mix1m" in warnings
        assert "not what" not in warnings  # the committed dvc.lock is what repro produced
        # a later push (here: the PR's outputs pushed): the report is written again and the
        # same comment edited, no second one (the script's last two steps, as it runs them)
        dvc("push", "--quiet", cwd=ci, extra_env=env)
        py = str(VENV / "bin/python")
        review_cmd = [
            py,
            "-m",
            "llava_data.review",
            "--base",
            "base",
            "--rebuilt",
            "--out",
            "review",
        ]
        run(review_cmd, ci, extra_env=ci_env)
        post = run(
            [py, "-m", "llava_data.review_comment", "--report", "review/report.md", "--pr", "7"],
            ci,
            extra_env=ci_env,
        )
        assert "review comment 1002 updated" in post.stdout
        comments = forge.comments["team/llava-data#7"]
        assert [c["id"] for c in comments] == [1001, 1002]
        body = comments[1]["body"]
        assert body == (ci / "review/report.md").read_text(encoding="utf-8")
        assert "not on the remote" not in body
        assert TOKEN not in first.stdout + first.stderr + post.stdout + post.stderr
        assert all(
            TOKEN not in p.read_text(errors="replace") for p in (ci / ".dvc").rglob("config*")
        )
