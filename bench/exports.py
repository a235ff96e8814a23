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
(`--remote-images`) through DVC to a SeaweedFS server on loopback, and uploads and
downloads the same files with boto3; and pushes zip archives of the same images and
pulls and extracts them, as a teammate would without shards.

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


def remote_bench(workdir: Path, name: str, shard_bytes: int) -> list[str]:
    """dvc push/pull of the shards vs boto3, and of zip archives + extraction."""
    import zipfile

    import boto3
    from botocore.config import Config

    from tests.s3server import seaweedfs

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    dvc = str(Path(sys.executable).parent / "dvc")
    rows = []

    def sh(cmd, cwd) -> None:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")

    with seaweedfs(workdir / "s3") as server:
        for bucket in ("shards", "plain", "archives"):
            server.create_bucket(bucket)

        def repo(path: Path, bucket: str) -> Path:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
                sh(cmd, path)
            sh([dvc, "remote", "add", "-d", "r", f"s3://{bucket}/store"], path)
            sh([dvc, "remote", "modify", "r", "endpointurl", server.endpoint], path)
            # the repository's own cache setting (.dvc/config): a pulled file is linked from
            # the cache, not copied out of it
            sh([dvc, "config", "cache.type", "reflink,hardlink,copy"], path)
            return path

        def timed(cmd, cwd) -> float:
            t0 = time.perf_counter()
            sh(cmd, cwd)
            return time.perf_counter() - t0

        shards = workdir / f"export-{name}"
        size = tree_bytes(shards)
        # DVC: push from one repository, pull into a second one with the same .dvc file
        src = repo(workdir / "dvc-src", "shards")
        shutil.copytree(shards, src / "shards")
        sh([dvc, "add", "-q", "shards"], src)
        drop_caches()
        push = timed([dvc, "push", "-q"], src)
        note(f"dvc push of the shards: {push:.1f} s")
        dst = repo(workdir / "dvc-dst", "shards")
        shutil.copy(src / "shards.dvc", dst / "shards.dvc")
        drop_caches()
        pull = timed([dvc, "pull", "-q"], dst)
        note(f"dvc pull of the shards: {pull:.1f} s")
        assert tree_bytes(dst / "shards") == size
        # boto3: the same files, uploaded and downloaded one by one with its transfer manager
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 2}),
        )
        files = sorted(p for p in shards.iterdir() if p.is_file())
        drop_caches()
        t0 = time.perf_counter()
        for p in files:
            s3.upload_file(str(p), "plain", p.name)
        up = time.perf_counter() - t0
        down_dir = workdir / "boto3-down"
        shutil.rmtree(down_dir, ignore_errors=True)
        down_dir.mkdir()
        drop_caches()
        t0 = time.perf_counter()
        for p in files:
            s3.download_file("plain", p.name, str(down_dir / p.name))
        down = time.perf_counter() - t0
        # archives: the same images as zip archives (stored, as the upstream zips are), pushed
        # and pulled by DVC, then extracted
        arch = repo(workdir / "dvc-arch", "archives")
        (arch / "archives").mkdir()
        data = workdir / "data"
        folders = sorted({str(p.parent.relative_to(data)) for p in data.rglob("*.jpg")})
        for k, folder in enumerate(folders):
            with zipfile.ZipFile(arch / "archives" / f"{k}.zip", "w", zipfile.ZIP_STORED) as zf:
                for p in sorted((data / folder).glob("*.jpg")):
                    zf.write(p, str(p.relative_to(data)))
        asize = tree_bytes(arch / "archives")
        sh([dvc, "add", "-q", "archives"], arch)
        apush = timed([dvc, "push", "-q"], arch)
        arch2 = repo(workdir / "dvc-arch2", "archives")
        shutil.copy(arch / "archives.dvc", arch2 / "archives.dvc")
        drop_caches()
        apull = timed([dvc, "pull", "-q"], arch2)
        t0 = time.perf_counter()
        for z in sorted((arch2 / "archives").glob("*.zip")):
            with zipfile.ZipFile(z) as zf:
                zf.extractall(arch2 / "extracted")
        extract = time.perf_counter() - t0
    gb = 1e9
    rows += [
        f"remote: shards {len(files)} files, {size / gb:.2f} GB; archives {asize / gb:.2f} GB",
        "",
        "| transfer | DVC s | boto3 s | DVC / boto3 |",
        "|---|---:|---:|---:|",
        f"| push the shards | {push:.1f} | {up:.1f} | {push / up:.2f} |",
        f"| pull the shards | {pull:.1f} | {down:.1f} | {pull / down:.2f} |",
        "",
        f"archives: push {apush:.1f} s ({apush / push:.2f}x the shards'); pull {apull:.1f} s + "
        f"extract {extract:.1f} s = {apull + extract:.1f} s, {(apull + extract) / pull:.2f}x the "
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
    ap.add_argument("--remote-images", type=int, default=20_000)
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
            print("\n".join([""] + remote_bench(small, "small", args.shard_bytes)))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
