"""Shared stage helpers: stale temporaries of killed runs, full disks, the environment guard."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from llava_data.common import StageError, atomic_path, run_main, stale_temporaries
from tests.dvcrepo import ROOT


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_removes_what_killed_runs_left_and_keeps_live_ones(tmp_path, capsys):
    final = tmp_path / "out.json"
    stale = tmp_path / f".out.json.tmp-{dead_pid()}"
    swapped = tmp_path / f".out.json.old-{dead_pid()}"
    live = tmp_path / f".out.json.tmp-{os.getppid()}"  # a running process's: not ours to take
    other = tmp_path / f".other.json.tmp-{dead_pid()}"  # another output's
    for path in (stale, live, other):
        path.write_text("half")
    swapped.mkdir()
    with atomic_path(final) as tmp:
        tmp.write_text("whole")
    assert final.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, live.name, other.name])
    assert "left by an interrupted run" in capsys.readouterr().err
    assert stale_temporaries(tmp_path) == [other]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_full_disk_is_one_clear_error_and_the_old_output_stays(tmp_path, code):
    final = tmp_path / "out.json"
    final.write_text("previous")
    still = "the outputs of the last successful run are still"
    with pytest.raises(StageError, match=still), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise OSError(code, os.strerror(code), str(tmp))
    assert final.read_text() == "previous"
    assert os.listdir(tmp_path) == ["out.json"]


def test_run_main_turns_a_full_disk_into_one_line(capsys):
    def main(_argv):
        raise OSError(errno.ENOSPC, "No space left on device", "data/x.json")

    assert run_main(main) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "writing data/x.json failed: No space left" in err


def test_a_stage_under_an_interpreter_without_the_packages_says_which_to_use(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    proc = subprocess.run(
        [str(bare / "bin" / "python"), "-m", "stages.mix", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert "lacks the project's packages" in proc.stderr and ". .venv/bin/activate" in proc.stderr
    assert "Traceback" not in proc.stderr
