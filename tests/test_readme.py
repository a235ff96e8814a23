"""The README's commands, run exactly as printed, in a clean shell of a fresh copy.

Every ```sh block of README.md is run, in order, in one `bash` started by `env -i` with
only HOME and a minimal PATH (no environment entered, nothing of this test session's
PATH), as a user on a fresh machine would type them. A block the README marks with
`<!-- not run by tests/test_readme.py: <why> -->` (real downloads, your bucket or
credentials) is left out; so is `make test`, which is this suite (CI runs it as printed).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.dvcrepo import ROOT, clone, run, tree_digest

SKIP_MARK = "<!-- not run by tests/test_readme.py:"
NOT_RUN_HERE = {"make test"}  # this very suite
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def readme_blocks(text: str) -> list[tuple[bool, list[str]]]:
    """(runs here, command lines) of every ```sh block, in order."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i].strip())
                i += 1
            blocks.append((not before.startswith(SKIP_MARK), body))
        i += 1
    return blocks


def commands(line: str) -> str:
    """The command of a README line, its trailing comment removed."""
    return re.sub(r"\s+#\s.*$", "", line).strip()


def script_of(text: str) -> list[str]:
    out = []
    for runs, body in readme_blocks(text):
        if not runs:
            continue
        for line in body:
            command = commands(line)
            if command and not command.startswith("#") and command not in NOT_RUN_HERE:
                out.append(command)
    return out


def test_the_readme_marks_only_blocks_that_need_the_real_world():
    script = script_of((ROOT / "README.md").read_text(encoding="utf-8"))
    # the set-up command, entering the environment, and the ablation must all be run
    for needed in ("make repro", ". .venv/bin/activate", "dvc exp run -S mix.allava=0"):
        assert needed in script, needed
    assert not any(cmd.startswith(".venv/bin/dvc") for cmd in script)


def clean_bash(repo: Path, lines: list[str], name: str) -> subprocess.CompletedProcess:
    """Run `lines` as one bash script under `env -i` (HOME and a minimal PATH only)."""
    text = "set -eo pipefail\nset -x\n" + "\n".join(lines) + "\n"
    (repo.parent / name).write_text(text, encoding="utf-8")
    return subprocess.run(
        ["env", "-i", f"HOME={os.environ.get('HOME', str(Path.home()))}", f"PATH={CLEAN_PATH}"]
        + ["bash", str(repo.parent / name)],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )


def digest_of(path: Path) -> dict[str, str]:
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return tree_digest(path)


BUILT = ("data", "manifests", "downloads", "work", "exports", "reports", "metrics", "dvc.lock")


@pytest.fixture(scope="module")
def transcript(tmp_path_factory):
    """The README's commands run in a fresh clone: first up to its build (`make repro`),
    whose outputs are recorded, then the rest."""
    repo = clone(tmp_path_factory.mktemp("readme"))
    # a user's git identity, which `dvc exp run` needs to record an experiment
    run(["git", "config", "user.email", "user@example.org"], repo)
    run(["git", "config", "user.name", "A user"], repo)
    script = script_of((repo / "README.md").read_text(encoding="utf-8"))
    cut = script.index("make repro") + 1
    first = clean_bash(repo, script[:cut], "readme-build.sh")
    assert first.returncode == 0, f"the README's build failed:\n{first.stdout[-6000:]}"
    built = {name: digest_of(repo / name) for name in BUILT}
    rest = clean_bash(repo, script[cut:], "readme.sh")
    out = first.stdout + rest.stdout
    assert rest.returncode == 0, f"the README's commands failed:\n{rest.stdout[-6000:]}"
    return repo, out, built


def output_of(transcript: str, command: str) -> str:
    """What `command` printed (bash -x marks each command with `+ `)."""
    parts = re.split(r"^\+ ", transcript, flags=re.M)
    found = [p for p in parts if p.startswith(command)]
    assert found, f"{command!r} did not run"
    return found[0][len(command) :]


def test_every_readme_command_runs_as_printed_in_a_clean_shell(transcript):
    repo, out, _ = transcript
    assert "Data and pipelines are up to date." in output_of(out, "dvc status")
    assert (repo / "data/open-llava-next/open-llava-next_instruct_mix1M.json").is_file()


def test_the_readme_ablation_changes_what_it_says(transcript):
    _, out, _ = transcript
    diff = output_of(out, "dvc metrics diff")
    assert "allava" in diff and "dvqa" not in diff


def test_two_builds_give_the_same_bytes(transcript, first_build):
    """The README's build (a fresh clone, a clean shell, `make repro`) and this session's
    first build (another clone, another path, `dvc repro`): every output and dvc.lock."""
    _, _, built = transcript
    for name in BUILT:
        assert built[name] == digest_of(first_build / name), name


def readme_report(marker: str) -> str:
    """The Markdown report the README shows after the comment line `marker`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(marker) :].split("````markdown\n", 1)[1]
    return after.split("\n````", 1)[0]


def same_report(printed: str) -> str:
    """A report with its commits' short hashes blanked (they differ from clone to clone)."""
    return re.sub(r"\(([0-9a-f]{7})\)", "(<commit>)", printed.strip())


def test_the_readme_review_is_what_make_review_prints(transcript):
    repo, out, _ = transcript
    printed = output_of(out, "make review BASE=HEAD")
    shown = readme_report("<!-- the report of `make review BASE=HEAD`")
    assert same_report(printed) == same_report(shown)
    chart = (repo / "review/mix1m.composition.svg").read_bytes()
    assert chart == (ROOT / "docs/review/mix1m.composition.svg").read_bytes()
