"""Make throw-away copies of this repository and run the real `dvc` CLI in them."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the pipeline's commands: this venv first, no progress bars."""
    out = dict(os.environ)
    out.pop("PYTHONPATH", None)
    out |= extra or {}
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    out["NO_PROGRESS"] = "1"
    for role in ("AUTHOR", "COMMITTER"):  # dvc exp run commits experiments
        out.setdefault(f"GIT_{role}_NAME", "test")
        out.setdefault(f"GIT_{role}_EMAIL", "test@example.org")
    return out


def run(
    args: list[str], cwd: Path, check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env(extra_env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def dvc(
    *args: str, cwd: Path, check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], cwd, check, extra_env)


def clone(dest: Path) -> Path:
    """A fresh git repository holding this checkout's files as they are (committed or not)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"], dest)
    return dest


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file (and the target of every link) below `root`, by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(out.items()))
