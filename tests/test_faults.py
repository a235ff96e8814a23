"""Faults a user suffers, with the real `dvc` CLI on the miniature: nothing is lost.

A stage killed with SIGKILL at several points, two `dvc repro` at once, a disk that fills
up (a file-size limit on the stage process), and every kind of bad parameter. After each:
the last good outputs are intact (or, for a kill, `dvc status` names the stage and the
next `dvc repro` repairs it), and no temporary file is left behind. The faults are
injected by tests/faultinject/sitecustomize.py into the one stage process they target.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.dvcrepo import BIN, ROOT, dvc, env, tree_digest

FAULTS = str(ROOT / "tests" / "faultinject")
OUTPUT_FOLDERS = ("data", "manifests", "metrics", "reports", "downloads", "work")
TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-[0-9]+$")
MIX = "data/open-llava-next/open-llava-next_instruct_mix1M.json"
UP_TO_DATE = "Data and pipelines are up to date."


def fault(**variables: str) -> dict[str, str]:
    return {"PYTHONPATH": FAULTS, **variables}


def outputs(repo: Path) -> dict[str, str]:
    """Digest of every output file (partial downloads and temporaries aside: see leftovers)."""
    out = {}
    for folder in OUTPUT_FOLDERS:
        for rel, digest in tree_digest(repo / folder).items():
            parts = rel.split("/")
            if parts[0] != ".partial" and not any(TEMPORARY.match(p) for p in parts):
                out[f"{folder}/{rel}"] = digest
    return out


def leftovers(repo: Path) -> list[str]:
    """Temporaries of interrupted runs anywhere in the repository, and partial downloads."""
    found = []
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".dvc")]
        for name in dirnames + filenames:
            if TEMPORARY.match(name):
                found.append(os.path.relpath(os.path.join(dirpath, name), repo))
    partial = repo / "downloads/.partial"
    found += (
        [f"downloads/.partial/{p}" for p in sorted(os.listdir(partial))] if partial.is_dir() else []
    )
    return sorted(found)


def make_verify(repo: Path, args: str = "") -> subprocess.CompletedProcess:
    """`make verify`, with this test session's environment as the project's."""
    command = ["make", "verify", f"VENV={BIN.parent}", f"ARGS={args}"]
    return subprocess.run(command, cwd=repo, env=env(), capture_output=True, text=True)


@pytest.fixture(scope="module")
def built(built_copy):
    return built_copy


@pytest.fixture
def good(built):
    """The built repository and the digest of its outputs; checks it is whole afterwards."""
    params = (built / "params.yaml").read_bytes()
    registry = (built / "sources.yaml").read_bytes()
    before = outputs(built)
    yield built, before
    (built / "params.yaml").write_bytes(params)
    (built / "sources.yaml").write_bytes(registry)
    dvc("repro", cwd=built)
    assert outputs(built) == before
    assert leftovers(built) == []


def set_param(repo: Path, old: str, new: str, file: str = "params.yaml") -> None:
    path = repo / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# ---- kill -9 ------------------------------------------------------------------------

EXTRACT_KILLS = [
    ("kill-before", 1, ".train2017.tmp-"),  # the new tree written, nothing replaced yet
    ("kill-after", 1, ".train2017.tmp-"),  # the manifest replaced, the tree not yet swapped
    ("kill-after", 2, ".train2017.old-"),  # the old tree moved aside, the new one not in
]


@pytest.mark.parametrize(("action", "nth", "left"), EXTRACT_KILLS)
def test_extract_killed_is_named_by_status_and_repaired_by_repro(good, action, nth, left):
    repo, before = good
    target = "extract@coco_train2017"
    proc = dvc(
        "repro", "--force", "--single-item", target, cwd=repo, check=False,
        extra_env=fault(LLAVA_FAULT=f"stages.extract:{action}:{nth}"),
    )  # fmt: skip
    assert proc.returncode != 0
    assert any(left in p for p in leftovers(repo))
    verify = make_verify(repo)
    assert verify.returncode != 0 and "STALE" in verify.stdout and left in verify.stdout
    if nth == 2:  # the tree is gone: status names the stage, and the next repro rebuilds it
        assert target in dvc("status", cwd=repo).stdout
        assert f"Running stage '{target}'" in dvc("repro", cwd=repo).stdout
    else:  # the tree in place is the good one; what the killed run left is only a temporary
        assert outputs(repo) == before
        assert UP_TO_DATE in dvc("status", cwd=repo).stdout
        assert "removed" in make_verify(repo, "--repair").stdout
    assert leftovers(repo) == []
    assert outputs(repo) == before
    assert make_verify(repo).returncode == 0


def test_fetch_killed_before_its_rename_is_named_and_fetched_again(good):
    repo, before = good
    (repo / "downloads/gqa_images/images.zip").unlink()
    proc = dvc(
        "repro", cwd=repo, check=False, extra_env=fault(LLAVA_FAULT="stages.fetch:kill-before:1")
    )
    assert proc.returncode != 0
    assert "fetch@gqa_images" in dvc("status", cwd=repo).stdout
    dvc("repro", cwd=repo)
    assert leftovers(repo) == [] and outputs(repo) == before


@pytest.mark.parametrize("action", ["kill-before", "kill-after"])
def test_mix_killed_keeps_or_repairs_the_training_file(good, action):
    repo, before = good
    set_param(repo, "dvqa: 1", "dvqa: 0.5")
    proc = dvc(
        "repro", cwd=repo, check=False, extra_env=fault(LLAVA_FAULT=f"stages.mix:{action}:1")
    )
    assert proc.returncode != 0
    if action == "kill-before":  # killed before its first rename: every output as it was
        assert outputs(repo) == before
        assert any(".open-llava-next_instruct_mix1M.json.tmp-" in p for p in leftovers(repo))
        assert "STALE" in make_verify(repo).stdout
    assert "mix" in dvc("status", cwd=repo).stdout
    dvc("repro", cwd=repo)
    assert leftovers(repo) == []
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


# ---- two builds at once ---------------------------------------------------------------


def test_a_second_repro_is_refused_while_one_runs_and_outputs_stay(good, tmp_path):
    repo, before = good
    set_param(repo, "dvqa: 1", "dvqa: 0.5")
    first = subprocess.Popen(
        [str(BIN / "dvc"), "repro"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env(fault(LLAVA_FAULT=f"stages.mix:pause-before:1:{tmp_path}")),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "paused").exists():
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first repro never reached the mix stage"
            time.sleep(0.1)
        second = dvc("repro", cwd=repo, check=False)
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower()
        assert outputs(repo) == before  # the paused mix has replaced nothing yet
    finally:
        (tmp_path / "release").touch()
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


# ---- a full disk --------------------------------------------------------------------


def test_a_full_disk_during_extraction_keeps_the_tree(good):
    repo, before = good
    proc = dvc(
        "repro", "--force", "--single-item", "extract@coco_train2017", cwd=repo, check=False,
        extra_env=fault(LLAVA_FAULT_FSIZE="stages.extract:200"),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "File too large" in proc.stderr and "Free some space" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert outputs(repo) == before and leftovers(repo) == []
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


def test_a_full_disk_during_the_mix_keeps_every_output(good):
    repo, before = good
    set_param(repo, "dvqa: 1", "dvqa: 0.5")
    proc = dvc("repro", cwd=repo, check=False, extra_env=fault(LLAVA_FAULT_FSIZE="stages.mix:8000"))
    assert proc.returncode != 0
    # the first file of the recipe to pass the limit is named: the training file or a part file
    assert "File too large" in proc.stderr
    assert MIX in proc.stderr or "data/recipes/mix1m/" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert outputs(repo) == before and leftovers(repo) == []


# ---- bad parameters -----------------------------------------------------------------

GQA_MINI_SIZE = yaml.safe_load((ROOT / "sources.yaml").read_text(encoding="utf-8"))["sources"][
    "gqa_images"
]["mini"]["size"]

BAD_PARAMS = [
    ("params.yaml", "allava: 1", "allava: -1", "mix.allava"),
    ("params.yaml", "dvqa: 1", "dvqa: lots", "mix.dvqa"),
    ("params.yaml", "seed: 0", "seed: -3", "mix.seed"),
    ("params.yaml", "policy: drop", "policy: maybe", "validate.policy"),
    ("params.yaml", "decode: false", "decode: sometimes", "validate.decode"),
    ("params.yaml", "jobs: 2", "jobs: 0", "validate.jobs"),
    ("params.yaml", "profile: mini", "profile: minii", "profile is 'minii'; allowed values"),
    ("params.yaml", "max_expand_ratio: 20", "max_expand_ratio: 0", "extract.max_expand_ratio"),
    ("params.yaml", "text_only: sharegpt4v", "text_only: [1]", "splits.mix1m.text_only"),
    ("params.yaml", "    dvqa/: dvqa", "    dvqa: dvqa", "splits.mix1m.prefixes key 'dvqa'"),
    ("params.yaml", "shard_images: 1000", "shard_images: 0", "index.shard_images"),
    ("params.yaml", "max_distance: 8", "max_distance: 99", "dedup.max_distance"),
    (
        "sources.yaml",
        "gqa_images, from: images/,",
        "gqa_images, from: images,",
        "layout.trees.gqa_images",
    ),
    (
        "sources.yaml",
        f"size: {GQA_MINI_SIZE},",
        f"size: -{GQA_MINI_SIZE},",
        "sources.gqa_images.mini",
    ),
    ("sources.yaml", "vg_part2, from:", "vg_partz, from:", "archive 'vg_partz' is not a source"),
]


@pytest.mark.parametrize(("file", "old", "new", "named"), BAD_PARAMS)
def test_a_bad_parameter_is_refused_before_any_output_is_touched(good, file, old, new, named):
    repo, before = good
    set_param(repo, old, new, file)
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert named in proc.stderr and "nothing was run" in proc.stderr
    assert "Running stage 'check_params'" in proc.stdout
    assert proc.stdout.count("Running stage") == 1
    assert outputs(repo) == before and leftovers(repo) == []


@pytest.mark.parametrize(
    ("assignment", "named"),
    [("mix.allava=-1", "mix.allava"), ("profile=bogus", "profile is 'bogus'")],
)
def test_exp_run_with_a_bad_parameter_touches_nothing(good, assignment, named):
    repo, before = good
    proc = dvc("exp", "run", "-S", assignment, cwd=repo, check=False)
    assert proc.returncode != 0 and named in proc.stderr
    assert outputs(repo) == before
