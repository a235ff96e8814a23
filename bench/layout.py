"""Benchmark the manifest layout against a DVC-tracked extracted folder, side by side.

Reads the repository's `stages/` package and the `extract` stage of its `dvc.yaml`.
Writes, in a fresh folder under `--workdir` (a temporary folder by default, removed at the
end unless `--keep`): one generated zip of `--files` small files (fixed seed, no clock)
and two git+DVC repositories that both `dvc add` it:

- A, the manifest design: the repository's own `extract` stage, which outputs a cached
  manifest and a `cache: false` stamp inside the tree, so DVC never hashes the images;
- B, the tracked-folder design: a stage that unzips the archive with Python's zipfile and
  declares the extracted folder `data/bench/images` as a cached output.

In each it times the first `dvc repro`, then `--repeat` no-op `dvc status` and no-op
`dvc repro`, the two designs interleaved so that machine noise hits both. Prints a
Markdown table on stdout (progress notes go to stderr) and, with `--json PATH`, writes the
same figures as JSON. DVC's site cache (state and index databases) is kept in the work
folder, beside each repository, so that nothing is left behind in /var/tmp.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 20240229
FOLDERS = 100
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
TREE = "bench"
ARCHIVE_KEY = "bench_zip"
ARCHIVE_NAME = "images.zip"
PREFIX = "images/"
DEST = "bench/images"
DESIGNS = ("manifest", "tracked")
LABELS = {"manifest": "manifest design (s)", "tracked": "tracked folder (s)"}
DATA_GITIGNORE = "*\n!.gitignore\n"
TRACKED_CMD = (
    'python -c "import zipfile; '
    "zipfile.ZipFile('downloads/{key}/{name}').extractall('data/{top}')\""
)


def note(msg: str) -> None:
    """A progress note on stderr."""
    print(f"[bench.layout] {msg}", file=sys.stderr, flush=True)


def member_names(n: int, folders: int = FOLDERS) -> list[str]:
    """The names of `n` files spread evenly over `folders` subfolders, sorted."""
    per = max(1, -(-n // folders))
    return [f"{PREFIX}{i // per:05d}/{i:09d}.jpg" for i in range(n)]


def write_zip(path: Path, n: int, seed: int = SEED) -> int:
    """Write a stored (uncompressed) zip of `n` random 1-2 KB files; return its size."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in member_names(n):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randint(1020, 2044)))
    return path.stat().st_size


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_pipeline(repo_dvc_yaml: str) -> dict:
    """Design A's dvc.yaml: the repository's own `extract` stage, verbatim."""
    stages = yaml.safe_load(repo_dvc_yaml)["stages"]
    return {"vars": ["sources.yaml"], "stages": {"extract": stages["extract"]}}


def manifest_registry() -> dict:
    """Design A's sources.yaml: one tree."""
    return {"layout": {"trees": {TREE: {"archive": ARCHIVE_KEY, "from": PREFIX, "dest": DEST}}}}


def tracked_pipeline() -> dict:
    """Design B's dvc.yaml: unzip into data/, the extracted folder as a cached output."""
    top = DEST.rsplit("/", 1)[0]
    cmd = TRACKED_CMD.format(key=ARCHIVE_KEY, name=ARCHIVE_NAME, top=top)
    stage = {"cmd": cmd, "deps": [f"downloads/{ARCHIVE_KEY}"], "outs": [f"data/{DEST}"]}
    return {"stages": {"extract": stage}}


def summarize(times: list[float]) -> dict:
    """Median, min and every run of a list of timings."""
    return {"median": statistics.median(times), "min": min(times), "runs": times}


def ratio(a: float, b: float) -> str:
    """`b / a` as text, e.g. `5.2x`."""
    return f"{b / a:.1f}x" if a > 0 else "n/a"


def render_table(report: dict) -> str:
    """The Markdown table of a report (see `main` for its shape)."""
    a, b = report["results"]["manifest"], report["results"]["tracked"]
    rep = report["repeat"]
    lines = [
        f"| operation | {LABELS['manifest']} | {LABELS['tracked']} | ratio |",
        "|---|---:|---:|---:|",
        f"| first `dvc repro` | {a['first_repro']:.2f} | {b['first_repro']:.2f} | "
        f"{ratio(a['first_repro'], b['first_repro'])} |",
    ]
    for op, label in (("noop_status", "no-op `dvc status`"), ("noop_repro", "no-op `dvc repro`")):
        x, y = a[op], b[op]
        lines.append(
            f"| {label}, median (min) of {rep} | {x['median']:.2f} ({x['min']:.2f}) | "
            f"{y['median']:.2f} ({y['min']:.2f}) | {ratio(x['median'], y['median'])} |"
        )
    lines += [
        "",
        f"{report['files']:,} files, zip of {report['zip_bytes'] / 1e6:.0f} MB; "
        f"DVC {report['dvc_version']}; Python {report['python_version']}; "
        f"ratio = tracked folder / manifest design.",
    ]
    return "\n".join(lines)


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    """Run a command, return (seconds, stdout); a failure stops the benchmark with its output."""
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"bench.layout: `{' '.join(cmd)}` failed in {cwd} (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        )
    return elapsed, proc.stdout


def repo_env(repo: Path, dvc: Path) -> dict:
    """A design's environment: the venv first on PATH, the repo on PYTHONPATH, DVC's site
    cache (state and index databases) beside the repo instead of in /var/tmp."""
    env = dict(os.environ)
    env["PATH"] = f"{dvc.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)
    env["NO_PROGRESS"] = "1"
    env["DVC_NO_ANALYTICS"] = "1"
    env["DVC_SITE_CACHE_DIR"] = str(repo.parent / f"{repo.name}.site-cache")
    return env


def dump_yaml(path: Path, obj: dict) -> None:
    """Write a YAML file, keys in the given order."""
    path.write_text(yaml.safe_dump(obj, sort_keys=False, width=1000), encoding="utf-8")


def setup_repo(repo: Path, design: str, zip_path: Path, dvc: Path, env: dict) -> None:
    """Create one design's git+DVC repository, with the zip added and its dvc.yaml."""
    repo.mkdir(parents=True)
    run(["git", "-c", "init.defaultBranch=main", "init", "-q"], repo, env)
    run([str(dvc), "init", "-q"], repo, env)
    run([str(dvc), "config", "core.analytics", "false"], repo, env)
    run([str(dvc), "config", "core.check_update", "false"], repo, env)
    (repo / "data").mkdir()
    (repo / "data" / ".gitignore").write_text(DATA_GITIGNORE, encoding="utf-8")
    archive_dir = repo / "downloads" / ARCHIVE_KEY
    archive_dir.mkdir(parents=True)
    shutil.copyfile(zip_path, archive_dir / ARCHIVE_NAME)
    run([str(dvc), "add", "-q", f"downloads/{ARCHIVE_KEY}"], repo, env)
    if design == "manifest":
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO_ROOT / "stages", repo / "stages", ignore=ignore)
        dump_yaml(repo / "sources.yaml", manifest_registry())
        dump_yaml(repo / "params.yaml", {"extract": {"max_expand_ratio": 20}})
        repo_yaml = (REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8")
        dump_yaml(repo / "dvc.yaml", manifest_pipeline(repo_yaml))
    else:
        dump_yaml(repo / "dvc.yaml", tracked_pipeline())


def built_files(repo: Path, design: str) -> int:
    """How many files the first build produced, from the stamp or from dvc.lock."""
    if design == "manifest":
        stamp = repo / "data" / DEST / ".extracted.json"
        return json.loads(stamp.read_text(encoding="utf-8"))["files"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    return lock["stages"]["extract"]["outs"][0]["nfiles"]


def check_noop(design: str, op: str, out: str) -> None:
    """Stop if a no-op run did something: its timing would not be a no-op's."""
    ok = "up to date" in out if op == "noop_status" else "Running stage" not in out
    if not ok:
        raise SystemExit(f"bench.layout: {design} {op} was not a no-op:\n{out[-2000:]}")


def benchmark(work: Path, n: int, repeat: int, dvc: Path) -> dict:
    """Generate the zip, build both repositories and time them; return the report."""
    zip_path = work / ARCHIVE_NAME
    start = time.perf_counter()
    zip_bytes = write_zip(zip_path, n)
    note(
        f"wrote {zip_path} ({n:,} files, {zip_bytes:,} bytes) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    repos = {design: work / design for design in DESIGNS}
    envs = {design: repo_env(repos[design], dvc) for design in DESIGNS}
    for design in DESIGNS:
        setup_repo(repos[design], design, zip_path, dvc, envs[design])
        note(f"set up {repos[design]}")
    results: dict = {design: {} for design in DESIGNS}
    for design in DESIGNS:
        elapsed, _ = run([str(dvc), "repro"], repos[design], envs[design])
        files = built_files(repos[design], design)
        if files != n:
            raise SystemExit(f"bench.layout: {design} built {files:,} files, expected {n:,}")
        results[design]["first_repro"] = elapsed
        note(f"{design}: first dvc repro {elapsed:.2f} s ({files:,} files)")
    times: dict = {design: {"noop_status": [], "noop_repro": []} for design in DESIGNS}
    for i in range(repeat):
        for op, cmd in (("noop_status", "status"), ("noop_repro", "repro")):
            for design in DESIGNS:
                elapsed, out = run([str(dvc), cmd], repos[design], envs[design])
                check_noop(design, op, out)
                times[design][op].append(elapsed)
                note(f"{design}: round {i + 1}/{repeat} dvc {cmd} {elapsed:.2f} s")
    for design in DESIGNS:
        for op, runs in sorted(times[design].items()):
            results[design][op] = summarize(runs)
    _, version = run([str(dvc), "--version"], work, envs["manifest"])
    return {
        "files": n,
        "zip_bytes": zip_bytes,
        "zip_sha256": sha256_file(zip_path),
        "seed": SEED,
        "repeat": repeat,
        "dvc_version": version.strip(),
        "python_version": sys.version.split()[0],
        "results": results,
    }


def find_dvc() -> Path:
    """The dvc executable next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    if beside.exists():
        return beside
    found = shutil.which("dvc")
    if not found:
        raise SystemExit("bench.layout: no dvc next to this Python nor on PATH")
    return Path(found)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200_000, help="files in the zip")
    ap.add_argument("--workdir", type=Path, help="where to make the temporary folder")
    ap.add_argument("--repeat", type=int, default=3, help="no-op runs of each command")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    if args.files < 1 or args.repeat < 1:
        ap.error("--files and --repeat must be positive")

    dvc = find_dvc()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-layout-", dir=args.workdir)).resolve()
    note(f"working in {work} with {dvc}")
    start = time.perf_counter()
    try:
        report = benchmark(work, args.files, args.repeat, dvc)
    finally:
        if args.keep:
            note(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["wall_seconds"] = time.perf_counter() - start
    print(render_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    note(f"total {report['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
