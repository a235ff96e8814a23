"""Benchmark the data review between two commits of a full-size synthetic mix1M.

In `--workdir` (a temporary folder by default, removed unless `--keep`) it generates the
synthetic mix1M of `bench.mix` (1M records, 1.64 GB, from a fixed seed) and writes two
training files from it as the mix stage writes them (one canonical record per line):
`base.json`, every record, and `head.json`, the same without the ALLaVA records (as
`mix.allava=0` does), with 1,000 records moved to the end and 100 new ones. A git + DVC
repository gets one stage that builds `data/mix1M.json` from the file its params name,
built and committed once per file: two commits whose dvc.lock differ in that output.

Then, each in a fresh subprocess (wall time and peak RSS from wait4):
- review: `python -m llava_data.review --base HEAD~1 --head HEAD` in that repository
  (both versions read from the DVC cache; the report, with `dvc status` and the remote
  check, written as `make review` writes it);
- naive: the straightforward diff, `json.load` of both files and a Counter of each
  record's `json.dumps` (sorted keys), giving the records added and removed.
The two must agree on the counts. Prints the command, the machine and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.mix import busy_seconds, generate, note
from llava_data import jsonscan

ROOT = Path(__file__).resolve().parents[1]
MOVED, NEW = 1000, 100
STAGE = """stages:
  mix:
    cmd: python build.py
    params:
      - variant
    outs:
      - data/mix1M.json
"""
BUILD = """import os, shutil, yaml
variant = yaml.safe_load(open("params.yaml"))["variant"]
os.makedirs("data", exist_ok=True)
shutil.copyfile(os.path.join({workdir!r}, variant + ".json"), "data/mix1M.json")
"""


def training_files(workdir: Path, records: int) -> tuple[Path, Path]:
    base, head = workdir / "base.json", workdir / "head.json"
    if base.exists() and head.exists():
        note("reusing base.json and head.json")
        return base, head
    mix = generate(workdir, records)["mix"]
    t0 = time.perf_counter()
    index = jsonscan.scan(mix, digests=True)
    note(f"scanned {mix.name} in {time.perf_counter() - t0:.0f} s")
    n = len(index)
    jsonscan.write_array(index, np.arange(n), base, workers=2)
    first = [i[0] if isinstance(i, tuple) and i else i for i in index.images]
    allava = np.array([isinstance(i, str) and i.startswith("allava_vflan/") for i in first])
    keep = np.flatnonzero(~allava)
    rng = np.random.default_rng(17)
    moved = np.sort(rng.choice(keep.size, MOVED, replace=False))
    order = np.concatenate((np.delete(keep, moved), keep[moved]))
    jsonscan.write_array(index, order, head, workers=2)
    with open(head, "r+b") as fh:  # NEW records before the closing bracket
        fh.seek(-3, os.SEEK_END)  # before "\n]\n"
        extra = b"".join(
            b',\n{"id":"bench-new-%d","conversations":[{"from":"human","value":"q"}]}' % i
            for i in range(NEW)
        )
        fh.write(extra + b"\n]\n")
    note(f"wrote base.json ({n:,}) and head.json ({order.size + NEW:,}), allava {allava.sum():,}")
    return base, head


def make_repo(workdir: Path) -> Path:
    repo = workdir / "repo"
    if (repo / ".git").exists():
        return repo
    repo.mkdir()
    dvc = str(Path(sys.executable).with_name("dvc"))

    def sh(*args):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)

    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    (repo / "dvc.yaml").write_text(STAGE)
    (repo / "build.py").write_text(BUILD.format(workdir=str(workdir)))
    for variant in ("base", "head"):
        (repo / "params.yaml").write_text(f"variant: {variant}\n")
        t0 = time.perf_counter()
        sh(dvc, "repro", "-q")
        note(f"dvc repro ({variant}): {time.perf_counter() - t0:.0f} s")
        sh("git", "add", "-A")
        sh("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", variant)
    return repo


NAIVE = """
import json, sys
from collections import Counter
old = json.load(open(sys.argv[1], encoding="utf-8"))
new = json.load(open(sys.argv[2], encoding="utf-8"))
a = Counter(json.dumps(r, sort_keys=True) for r in old)
b = Counter(json.dumps(r, sort_keys=True) for r in new)
print(json.dumps({"added": sum((b - a).values()), "removed": sum((a - b).values())}))
"""


def launch(cmd: list[str], cwd: Path) -> dict:
    os.sync()
    busy0 = busy_seconds()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, env={**os.environ})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{cmd} failed")
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, busy_seconds() - busy0 - cpu)
    return {"wall": wall, "rss": usage.ru_maxrss * 1024, "out": out.decode(), "others": others}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.review", description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-naive", action="store_true", help="skip the json.load diff")
    args = ap.parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-review-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        base, head = training_files(workdir, args.records)
        repo = make_repo(workdir)
        review_cmd = [sys.executable, "-m", "llava_data.review", "--repo", str(repo)]
        review_cmd += ["--base", "HEAD~1", "--head", "HEAD", "--out", str(workdir / "review")]
        note("running the review")
        rev = launch(review_cmd, ROOT)
        text = (workdir / "review/report.md").read_text(encoding="utf-8")
        line = next(ln for ln in text.splitlines() if " added, " in ln)
        naive = None
        if not args.no_naive:
            note("running the json.load diff")
            naive = launch([sys.executable, "-c", NAIVE, str(base), str(head)], ROOT)
            counts = json.loads(naive["out"])
            want = f"{counts['added']:,} added, {counts['removed']:,} removed"
            if want not in line:
                raise SystemExit(f"the review says {line!r}, json.load finds {want}")
        gb = 1e9
        rows = [
            "| diff | wall s | peak RSS GB |",
            "|---|---:|---:|",
            f"| `llava_data.review` (report, records diff, dvc status) | {rev['wall']:.1f} | "
            f"{rev['rss'] / gb:.2f} |",
        ]
        if naive:
            rows.append(
                f"| json.load + Counter of json.dumps | {naive['wall']:.1f} | "
                f"{naive['rss'] / gb:.2f} |"
            )
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        print(
            "\n".join(
                [
                    f"command: `python -m bench.review --records {args.records}`",
                    f"machine: nproc {len(os.sched_getaffinity(0))}, {ram:.0f} GiB RAM",
                    f"files: base.json {base.stat().st_size / gb:.2f} GB, "
                    f"head.json {head.stat().st_size / gb:.2f} GB",
                    f"report: {line}",
                    "",
                    *rows,
                    "",
                    f"other processes used {rev['others']:.1f} CPU s during the review",
                ]
            )
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
