"""With no route to any upstream host, the upstream check answers in seconds.

`make check-upstream` and a full `make repro` are run as a user types them (a clean
shell, a fresh copy of the repository) on a machine where no name but loopback
resolves: a `sitecustomize` loaded through PYTHONPATH replaces Python's resolver with
one that fails (or never answers) for every other name and refuses any connection to
an address outside loopback, logging each attempt. Nothing outside loopback is ever
contacted; the log proves it.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from llava_data import origins
from tests.dvcrepo import ROOT, clone

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
DEADLINE_S = 20.0  # the bound for the complete report with no network

NO_NETWORK = '''\
"""No name but loopback resolves; no address but loopback takes a connection."""
import errno, os, socket, time

_LOG = os.environ["NO_NETWORK_LOG"]
_HANG = os.environ.get("NO_NETWORK_RESOLVER") == "hangs"
_gai, _connect = socket.getaddrinfo, socket.socket.connect


def _local(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in ("localhost", "::1") or host.startswith("127.")


def _note(what, host):
    with open(_LOG, "a") as fh:
        fh.write(f"{what} {host}\\n")


def getaddrinfo(host, *args, **kwargs):
    if host is None or _local(host):
        return _gai(host, *args, **kwargs)
    _note("resolve", host)
    if _HANG:
        time.sleep(3600)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _note("connect", address[0])
        raise OSError(errno.ENETUNREACH, "Network is unreachable")
    return _connect(self, address)


socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the repository, using this checkout's pinned environment."""
    repo = clone(tmp_path_factory.mktemp("offline"))
    (repo / ".venv").symlink_to(ROOT / ".venv")
    return repo


def offline(repo: Path, tmp_path: Path, args: list[str], resolver: str = "fails"):
    """Run `args` in a clean shell (`env -i`) where no upstream host resolves."""
    site = tmp_path / "no-network"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    log = tmp_path / "network.log"
    log.write_text("")
    env = {
        "HOME": os.environ.get("HOME", str(Path.home())),
        "PATH": CLEAN_PATH,
        "PYTHONPATH": str(site),
        "NO_NETWORK_LOG": str(log),
        "NO_NETWORK_RESOLVER": resolver,
    }
    start = time.monotonic()
    done = subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    attempts = log.read_text().splitlines()
    return done, time.monotonic() - start, attempts


def registry(repo: Path) -> dict:
    return yaml.safe_load((repo / "sources.yaml").read_text())["sources"]


def report_of(stdout: str) -> dict[str, tuple[str, str, str]]:
    """source -> (kind, status, what to do), from the check's table (fixed columns)."""
    lines = stdout.splitlines()
    head = next(n for n, x in enumerate(lines) if x.startswith("source ") and "what to do" in x)
    at = [lines[head].index(word) for word in ("kind", "status", "what to do")]
    out = {}
    for line in lines[head + 1 :]:
        if len(line) <= at[2] or line[at[2] - 2 : at[2]] != "  ":
            break  # the table ends where make or the next command prints
        cells = (line[: at[0]], line[at[0] : at[1]], line[at[1] : at[2]], line[at[2] :])
        name, kind, status, todo = (c.strip() for c in cells)
        out[name] = (kind, status, todo)
    return out


NETWORK = ("hf", "url", "gdrive")


@pytest.mark.parametrize("resolver", ["fails", "hangs"])
def test_make_check_upstream_with_no_network_reports_every_source_in_seconds(
    repo, tmp_path, resolver
):
    done, took, attempts = offline(repo, tmp_path, ["make", "check-upstream"], resolver)
    out = done.stdout + done.stderr
    assert took < DEADLINE_S, f"{took:.1f} s\n{out}"
    assert "Traceback" not in out
    sources = registry(repo)
    report = report_of(done.stdout)
    assert list(report) == list(sources)  # every source, once, in registry order
    for name, (kind, status, todo) in report.items():
        if kind in NETWORK:
            assert status == "unreachable", (name, status, todo)
            assert "does not resolve" in todo and todo.endswith("then run the check again")
        else:
            assert status in ("ok", "needs a manual step"), (name, status, todo)
    # the check exits 1 when a manual step would stop a build (make reports Error 1), else
    # 2 (could not ask); an optional manual source left out (SA-1B's tars) stops nothing
    manual = [n for n, (_, status, _) in report.items() if status == "needs a manual step"]
    assert ("Error 1" if manual else "Error 2") in done.stderr
    assert report["sa1b"][1:] == ("ok", report["sa1b"][2])
    assert "left out of this profile (sources.sa1b.full.use: false)" in report["sa1b"][2]
    # each host resolved once for all its sources (never retried), nothing else contacted
    hosts = [a.split()[1] for a in attempts]
    assert attempts == [f"resolve {h}" for h in hosts] and len(hosts) == len(set(hosts))
    for host in hosts:
        n = sum(1 for _, _, todo in report.values() if todo.startswith(f"{host} does not"))
        assert f"not reached: {host} does not resolve" in done.stderr
        assert f"({n} source{'s' * (n != 1)} not asked)" in done.stderr


def network_sources(repo: Path) -> list[str]:
    return [
        name
        for name, entry in registry(repo).items()
        if next(iter(set(entry["full"]) & {"hf", "url", "gdrive"}), None)
    ]


def test_could_not_ask_has_its_own_exit_code(repo, tmp_path):
    names = network_sources(repo)
    args = [".venv/bin/python", "-m", "llava_data.check_upstream"]
    args += ["--registry", "sources.yaml", "--profile", "full"]
    done, took, _ = offline(repo, tmp_path, [*args, *(f"--source={n}" for n in names)])
    assert done.returncode == 2, done.stdout + done.stderr
    assert took < DEADLINE_S
    assert f"{len(names)} of {len(names)} sources could not be asked" in done.stderr
    assert "would stop a build" not in done.stderr


def test_a_full_make_repro_stops_on_its_check_in_seconds(repo, tmp_path):
    """`make repro` with `profile: full` runs the same check first; a source that would
    stop a build (here a listed local copy that is not the pinned file) stops it there,
    before any stage, and the unreachable hosts do not hold it up."""
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("profile: mini", "profile: full", 1))
    # the smallest source of each kind, so that the preflight's disk check passes here
    entries = registry(repo)

    def size(name):
        full = entries[name]["full"]
        return full.get("size") or origins.shown_bytes(name, full.get("shown_size")) or 0

    keep = {}
    for name in sorted(entries, key=size):
        for kind in set(entries[name]["full"]) & set(NETWORK):  # none: manual (SA-1B's)
            keep.setdefault(kind, name)
    pinned = next(n for n in sorted(entries, key=size) if entries[n]["full"].get("size"))
    keep["copy"] = pinned
    whole = yaml.safe_load((repo / "sources.yaml").read_text())
    whole["sources"] = {n: e for n, e in entries.items() if n in keep.values()}
    (repo / "sources.yaml").write_text(yaml.safe_dump(whole, sort_keys=False))
    (tmp_path / "copy.bin").write_bytes(b"not the pinned file")
    (repo / "sources.local.yaml").write_text(yaml.safe_dump({pinned: str(tmp_path / "copy.bin")}))
    try:
        done, took, attempts = offline(repo, tmp_path, ["make", "repro"])
    finally:
        subprocess.run(["git", "checkout", "params.yaml", "sources.yaml"], cwd=repo, check=True)
        (repo / "sources.local.yaml").unlink()
    out = done.stdout + done.stderr
    assert took < DEADLINE_S, f"{took:.1f} s\n{out}"
    assert done.returncode != 0 and "Error 1" in done.stderr, out
    report = report_of(done.stdout)
    assert sorted(report) == sorted(set(keep.values()))
    assert report[pinned][1] == "changed"
    assert {report[keep[k]][1] for k in NETWORK if keep[k] != pinned} == {"unreachable"}
    assert "Running stage" not in out and "llava_data.verify" not in out
    assert all(a.startswith("resolve ") for a in attempts)
