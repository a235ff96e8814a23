"""Benchmark the WebDataset export against tar, and the team remote against plain boto3.

Throughput (`python -m bench.exports --images 200000`): generates, in `--workdir` (a
temporary folder by default, removed at the end unless `--keep`), a synthetic layout of
`--images` images with sizes drawn from a fixed seed like the real trees' (COCO and
TextVQA photos ~160 KB, GQA/VG ~110 KB, OCR-VQA covers ~15 KB, charts and documents
~60 KB; JPEG markers around random bytes, which neither tool looks into), and a recipe of
one record per image in two parts. Then, each in a fresh process after `sync` and
dropping the page cache (when allowed) so that both read the images from disk:

- export: `llava_data.exports.write_webdataset` (what stage export@<recipe>-webdataset
  runs), 2 processes, shards of `--shard-bytes`;
- tar: GNU tar writing the same images into the same shards (the export's plan), two
  tar processes at a time, with fixed mtime, owner and format as the export uses.

With `--remote`, it also pushes and pulls the export's shards of a smaller recipe
(`--remote-images`, 72,000 by default: 17 shards, twice the files DVC moves at once on
2 cores) through DVC to a SeaweedFS server on loopback, and uploads and downloads the
same files with boto3, `--reps` rounds on a fresh server each, with the client and
server CPU of each step; and pushes zip archives of the same images and pulls and
extracts them, as a teammate would without shards.

Prints the command, the machine and a Markdown table on stdout (notes go to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

SEED = 20261203
# folder, share of the images, median size in bytes, spread (lognormal sigma)
FOLDERS = [
    ("coco/train2017", 0.35, 160_000, 0.35),
    ("gqa/images", 0.20, 110_000, 0.40),
    ("ocr_vqa/images", 0.20, 15_000, 0.50),
    ("textvqa/train_images", 0.05, 170_000, 0.45),
    ("chartqa/train/png", 0.10, 60_000, 0.60),
    ("docvqa/train/documents", 0.10, 90_000, 0.50),
]


def note(msg: str) -> None:
    print(f"[bench.exports] {msg}", file=sys.stderr, flush=True)


def generate(workdir: Path, n: int, name: str) -> int:
    """The images and a two-part recipe `name` under workdir; returns the image bytes."""
    rng = np.random.default_rng(SEED)
    data = workdir / "data"
    total = 0
    records = {"photos": [], "documents": []}
    counts = [round(share * n) for _, share, _, _ in FOLDERS]
    counts[0] += n - sum(counts)
    block = rng.bytes(4 << 20)  # image bodies are slices of one random block
    for (folder, _, median, sigma), count in zip(FOLDERS, counts, strict=True):
        (data / folder).mkdir(parents=True, exist_ok=True)
        sizes = np.clip(rng.lognormal(np.log(median), sigma, count), 2_000, 4 << 20).astype(int)
        part = "documents" if folder.split("/")[0] in ("chartqa", "docvqa") else "photos"
        for i, size in enumerate(sizes.tolist()):
            rel = f"{folder}/{i:09d}.jpg"
            path = data / rel
            if not path.exists() or path.stat().st_size != size:
                start = (i * 7919) % (len(block) - size) if size < len(block) else 0
                body = block[start : start + size - 4]
                path.write_bytes(b"\xff\xd8" + body + b"\xff\xd9")
            total += size
            records[part].append(
                {
                    "id": f"{folder.split('/')[0]}-{i}",
                    "image": rel,
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat is shown here?"},
                        {"from": "gpt", "value": "A picture from the benchmark."},
                    ],
                }
            )
    recipes = workdir / "data/recipes"
    (recipes / name).mkdir(parents=True, exist_ok=True)
    lines = ["datasets:"]
    for part, recs in records.items():
        path = recipes / name / f"{part}.json"
        path.write_bytes(b"[\n" + b",\n".join(orjson.dumps(r) for r in recs) + b"\n]\n")
        lines += [f"  - json_path: data/recipes/{name}/{part}.json", "    sampling_strategy: all"]
    (recipes / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return total


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def job_export(workdir: Path, name: str, shard_bytes: int) -> dict:
    from llava_data import exports

    out = workdir / f"export-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    os.chdir(workdir)
    records = exports.recipe_records(Path(f"data/recipes/{name}.yaml"))
    t0 = time.perf_counter()
    counts = exports.write_webdataset(records, Path("data"), out, name, shard_bytes, workers=2)
    return {"wall": time.perf_counter() - t0, **counts}


def job_tar(workdir: Path, name: str, shard_bytes: int) -> dict:
    """GNU tar of the export's shards' images, two tars at a time."""
    from llava_data import exports

    os.chdir(workdir)
    out = workdir / f"tar-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    lists = []
    records = exports.recipe_records(Path(f"data/recipes/{name}.yaml"))
    for shard in exports.plan_webdataset(records, Path("data"), name, shard_bytes):
        path = out / (shard["url"] + ".list")
        path.write_text(
            "".join(rel + "\n" for _, _, images in shard["samples"] for _, rel in images)
        )
        lists.append((out / shard["url"], path))
    flags = ["--format=ustar", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner"]
    t0 = time.perf_counter()
    running: list[subprocess.Popen] = []
    for tar_path, list_path in lists:
        if len(running) == 2:
            running.pop(0).wait()
        cmd = ["tar", "-cf", str(tar_path), *flags, "-C", "data", "-T", str(list_path)]
        running.append(subprocess.Popen(cmd))
    for proc in running:
        proc.wait()
    return {"wall": time.perf_counter() - t0, "shards": len(lists)}


def launch(kind: str, workdir: Path, name: str, shard_bytes: int) -> dict:
    cold = drop_caches()
    cmd = [sys.executable, "-m", "bench.exports", "--job", kind, "--workdir", str(workdir)]
    cmd += ["--name", name, "--shard-bytes", str(shard_bytes)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"job {kind} failed")
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    report.update(process_wall=time.perf_counter() - t0, cold=cold)
    report["cpu"] = usage.ru_utime + usage.ru_stime
    return report


def run_job(args) -> None:
    job = job_export if args.job == "export" else job_tar
    report = job(args.workdir, args.name, args.shard_bytes)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report["rss"] = (self_kb + child_kb) * 1024
    print(json.dumps(report), flush=True)


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def dvc_jobs() -> int:
    """How many files DVC moves at once to and from an S3 remote by default (dvc-objects)."""
    return 4 * (os.cpu_count() or 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a running process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Remote:
    """DVC repositories and a boto3 client against one SeaweedFS server, each step measured."""

    def __init__(self, workdir: Path, server) -> None:
        import boto3
        from botocore.config import Config

        self.workdir, self.server = workdir, server
        self.env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        self.dvc = str(Path(sys.executable).parent / "dvc")
        self.s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 2}),
        )

    def sh(self, cmd, cwd) -> None:
        proc = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")

    def repo(self, path: Path, bucket: str) -> Path:
        """A git + DVC repository whose default remote is `bucket` on this server."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        self.sh(["git", "init", "-q"], path)
        self.sh([self.dvc, "init", "-q"], path)
        self.point(path, bucket)
        # the repository's own cache setting (.dvc/config): a pulled file is linked from the
        # cache, not copied out of it
        self.sh([self.dvc, "config", "cache.type", "reflink,hardlink,copy"], path)
        return path

    def point(self, path: Path, bucket: str) -> None:
        self.sh([self.dvc, "remote", "add", "-f", "-d", "r", f"s3://{bucket}/store"], path)
        self.sh([self.dvc, "remote", "modify", "r", "endpointurl", self.server.endpoint], path)

    def measure(self, step) -> dict:
        """Wall time, client CPU and server CPU of `step` (a command list + cwd, or a callable),
        after sync and dropping the page cache, so that every step reads from disk."""
        drop_caches()
        server0 = cpu_seconds(self.server.process.pid)
        self0, kids0 = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        t0 = time.perf_counter()
        if callable(step):
            step()
        else:
            self.sh(*step)
        wall = time.perf_counter() - t0
        self1, kids1 = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        client = sum(
            getattr(b, f) - getattr(a, f)
            for a, b in ((self0, self1), (kids0, kids1))
            for f in ("ru_utime", "ru_stime")
        )
        server = cpu_seconds(self.server.process.pid) - server0
        return {"wall": wall, "client": client, "server": server}


def median(values: list[float]) -> float:
    return float(np.median(values))


def shard_round(
    remote: Remote, src: Path, files: list[Path], size: int, runs, boto3_first: bool
) -> None:
    """One push + pull by DVC and one upload + download by boto3 of the same files (`size`
    bytes in all)."""
    workdir = remote.workdir
    dst = remote.repo(workdir / "dvc-dst", "shards")
    shutil.copy(src / "shards.dvc", dst / "shards.dvc")
    down = workdir / "boto3-down"

    def dvc_side() -> None:
        runs["push"].append(remote.measure(([remote.dvc, "push", "-q"], src)))
        runs["pull"].append(remote.measure(([remote.dvc, "pull", "-q"], dst)))
        if tree_bytes(dst / "shards") != size:
            raise SystemExit("dvc pull brought back other bytes than were pushed")
        shutil.rmtree(dst)

    def upload() -> None:
        for p in files:
            remote.s3.upload_file(str(p), "plain", p.name)

    def download() -> None:
        for p in files:
            remote.s3.download_file("plain", p.name, str(down / p.name))

    def boto3_side() -> None:
        runs["upload"].append(remote.measure(upload))
        shutil.rmtree(down, ignore_errors=True)
        down.mkdir()
        runs["download"].append(remote.measure(download))
        shutil.rmtree(down)

    for side in (boto3_side, dvc_side) if boto3_first else (dvc_side, boto3_side):
        side()


def remote_bench(workdir: Path, name: str, reps: int) -> list[str]:
    """dvc push/pull of the shards vs boto3 (`reps` times, alternating who goes first), and
    push, pull and extraction of zip archives of the same images."""
    import zipfile

    from tests.s3server import seaweedfs

    shards = workdir / f"export-{name}"
    files = sorted(p for p in shards.iterdir() if p.is_file())
    size = tree_bytes(shards)
    data = workdir / "data"
    folders = sorted({str(p.parent.relative_to(data)) for p in data.rglob("*.jpg")})

    # archives first, so that the images can go before the shards' runs: the same images as
    # zip archives (stored, as the upstream zips are), pushed and pulled by DVC, then extracted
    with seaweedfs(workdir / "s3-archives") as server:
        server.create_bucket("archives")
        remote = Remote(workdir, server)
        arch = remote.repo(workdir / "dvc-arch", "archives")
        (arch / "archives").mkdir()
        for k, folder in enumerate(folders):
            with zipfile.ZipFile(arch / "archives" / f"{k}.zip", "w", zipfile.ZIP_STORED) as zf:
                for p in sorted((data / folder).glob("*.jpg")):
                    zf.write(p, str(p.relative_to(data)))
        shutil.rmtree(data)
        asize = tree_bytes(arch / "archives")
        remote.sh([remote.dvc, "add", "-q", "archives"], arch)
        apush = remote.measure(([remote.dvc, "push", "-q"], arch))
        note(f"dvc push of the archives: {apush['wall']:.1f} s")
        arch2 = remote.repo(workdir / "dvc-arch2", "archives")
        shutil.copy(arch / "archives.dvc", arch2 / "archives.dvc")
        shutil.rmtree(arch)
        apull = remote.measure(([remote.dvc, "pull", "-q"], arch2))

        def extract() -> None:
            for z in sorted((arch2 / "archives").glob("*.zip")):
                with zipfile.ZipFile(z) as zf:
                    zf.extractall(arch2 / "extracted")

        aextract = remote.measure(extract)
        note(f"dvc pull of the archives {apull['wall']:.1f} s, extraction {aextract['wall']:.1f} s")
        shutil.rmtree(arch2)

    # the shards: a fresh server per round; DVC pushes from one repository and pulls into a
    # second one with the same .dvc file; boto3 uploads and downloads the same files one by
    # one with its transfer manager
    runs: dict[str, list[dict]] = {k: [] for k in ("push", "upload", "pull", "download")}
    src = workdir / "dvc-src"
    for rnd in range(reps):
        with seaweedfs(workdir / f"s3-{rnd}") as server:
            for bucket in ("shards", "plain"):
                server.create_bucket(bucket)
            remote = Remote(workdir, server)
            if rnd == 0:
                remote.repo(src, "shards")
                (src / "shards").mkdir()
                for p in files:  # hard links: the shards are on disk once
                    os.link(p, src / "shards" / p.name)
                remote.sh([remote.dvc, "add", "-q", "shards"], src)
            else:
                remote.point(src, "shards")
            shard_round(remote, src, files, size, runs, boto3_first=rnd % 2 == 1)
            note(
                f"round {rnd + 1}/{reps}: "
                + ", ".join(f"{k} {v[-1]['wall']:.1f} s" for k, v in runs.items())
            )

    def cell(key: str) -> str:
        walls = [r["wall"] for r in runs[key]]
        return f"{median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f})"

    def cpu(key: str, who: str) -> str:
        return f"{median([r[who] for r in runs[key]]):.1f}"

    gb = 1e9
    med = {k: median([r["wall"] for r in v]) for k, v in runs.items()}
    rows = [
        f"remote: {len(files)} files, {size / gb:.2f} GB (DVC moves {dvc_jobs()} files at "
        f"once); {reps} rounds, each on a fresh server; page cache dropped before each step",
        "",
        "| transfer | DVC s, median (range) | boto3 s, median (range) | DVC / boto3 | "
        "client CPU s, DVC / boto3 | server CPU s, DVC / boto3 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, ours, theirs in (("push", "push", "upload"), ("pull", "pull", "download")):
        rows.append(
            f"| {label} the shards | {cell(ours)} | {cell(theirs)} | "
            f"{med[ours] / med[theirs]:.2f} | {cpu(ours, 'client')} / {cpu(theirs, 'client')} | "
            f"{cpu(ours, 'server')} / {cpu(theirs, 'server')} |"
        )
    restore = apull["wall"] + aextract["wall"]
    rows += [
        "",
        f"archives ({len(folders)} zips, {asize / gb:.2f} GB): push {apush['wall']:.1f} s "
        f"({apush['wall'] / med['push']:.2f}x the shards'); pull {apull['wall']:.1f} s + "
        f"extract {aextract['wall']:.1f} s = {restore:.1f} s, {restore / med['pull']:.2f}x the "
        "shards' pull",
    ]
    return rows


def throughput(args, workdir: Path) -> list[str]:
    note(f"generating {args.images} images")
    t0 = time.perf_counter()
    image_bytes = generate(workdir, args.images, "bench")
    note(f"{image_bytes / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s")
    reports = {}
    for kind in ("export", "tar"):
        note(f"running {kind}")
        reports[kind] = launch(kind, workdir, "bench", args.shard_bytes)
        note(f"{kind}: {reports[kind]['wall']:.1f} s")
        shutil.rmtree(workdir / f"{kind}-bench", ignore_errors=True)
    shutil.rmtree(workdir / "data", ignore_errors=True)
    mb = 1e6
    ex, tr = reports["export"], reports["tar"]
    return [
        f"command: `python -m bench.exports --images {args.images}"
        + (" --remote" if args.remote else "")
        + "`",
        f"machine: nproc {len(os.sched_getaffinity(0))}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM; "
        f"page cache dropped before each job: {ex['cold']}",
        f"images: {args.images}, {image_bytes / 1e9:.2f} GB; shards of at most "
        f"{args.shard_bytes / 1e9:.2f} GB: {ex['shards']}",
        "",
        "| job | wall s | MB/s of images | peak RSS MB |",
        "|---|---:|---:|---:|",
        f"| export (2 processes) | {ex['wall']:.1f} | {image_bytes / ex['wall'] / mb:.0f} | "
        f"{ex['rss'] / mb:.0f} |",
        f"| tar (2 at a time) | {tr['wall']:.1f} | {image_bytes / tr['wall'] / mb:.0f} | |",
        "",
        f"export throughput / tar throughput: {tr['wall'] / ex['wall']:.2f}",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.exports", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--shard-bytes", type=int, default=500_000_000)  # as params.yaml
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--remote", action="store_true", help="also time push/pull (DVC, boto3)")
    # 72,000 images make 16-17 shards of 0.5 GB: twice the files DVC moves at once on 2 cores,
    # as any built-in recipe at full size has (hundreds of shards)
    ap.add_argument("--remote-images", type=int, default=72_000)
    ap.add_argument("--reps", type=int, default=3, help="rounds of the push/pull comparison")
    ap.add_argument("--remote-only", action="store_true", help="skip the throughput jobs")
    ap.add_argument("--job", choices=["export", "tar"], help=argparse.SUPPRESS)
    ap.add_argument("--name", default="bench", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.job:
        run_job(args)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-exports-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        lines = []
        if not args.remote_only:
            lines = throughput(args, workdir)
            print("\n".join(lines), flush=True)
        if args.remote:
            note(f"remote: exporting a {args.remote_images}-image recipe")
            small = workdir / "small"
            small.mkdir(exist_ok=True)
            generate(small, args.remote_images, "small")
            launch("export", small, "small", args.shard_bytes)
            print("\n".join([""] + remote_bench(small, "small", args.reps)), flush=True)
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
