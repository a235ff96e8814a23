"""Benchmark the image index: images per second for a full decode plus the pHash.

Writes, under `--workdir` (a temporary folder by default, removed unless `--keep`),
`--images` synthetic images drawn like the real layout's trees (sizes and formats in
KINDS: COCO-like and LCS-like photos as JPEG, SAM's large JPEGs, chart and document PNGs),
reads them once so every job finds them in the page cache (the jobs measure the hashing,
not this disk), then times, each on the same files:
- the straightforward loop: per image, sha256 of the file, `Image.open(...).load()`,
  sha256 of the RGB pixels, `imagehash.phash` of the full image, in one process;
- `llava_data.imageindex.index_files` in one process (per-worker rate), and through
  `llava_data.engine` on 2 local processes, the index's default;
- the same tasks on a Dask cluster of 2 worker processes on this machine
  (`distributed.LocalCluster`), its start-up timed apart;
- with `--ray`, on a local Ray instance of 2 CPUs (`pip install ray` first: it is not in
  the lock, which carries only the engine the pipeline uses);
and projects, from the measured per-worker rate, the hours 1.5M images take on N workers.
Prints Markdown tables on stdout; progress notes on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from llava_data import engine, imageindex

# (folder, share of the images, size, format, quality): the layout's ~2.2M images, roughly
# (sizes assumed, counts from the registry): small photos (LCS 558K, CC-3M 595K, OCR-VQA's
# book covers 208K), COCO/GQA/VG/TextVQA/Vision-Flan photos (~580K), SAM's large ones (9K),
# the ~200K PNG charts and documents of vqa_collection.
KINDS = (
    ("small", 0.60, (400, 300), "JPEG", 90),
    ("photo", 0.30, (640, 480), "JPEG", 90),
    ("sam", 0.01, (1500, 2250), "JPEG", 90),
    ("chart", 0.06, (800, 600), "PNG", None),
    ("doc", 0.03, (1000, 1300), "PNG", None),
)
FULL_LAYOUT = 1_500_000


def note(msg: str) -> None:
    print(f"[bench.index] {msg}", file=sys.stderr, flush=True)


def synthetic(kind: str, n: int, size: tuple[int, int], rng) -> Image.Image:
    """A photo-like picture (smooth field plus noise) or a chart/document-like one (flat
    background, bars or text-like strokes)."""
    w, h = size
    if kind in ("chart", "doc"):
        arr = np.full((h, w, 3), 250, np.uint8)
        for _ in range(12 if kind == "chart" else 120):
            x, y = rng.integers(0, w - 20), rng.integers(0, h - 10)
            bw, bh = (
                (rng.integers(10, 60), rng.integers(20, h // 2))
                if kind == "chart"
                else (
                    rng.integers(20, 200),
                    6,
                )
            )
            arr[y : y + bh, x : x + bw] = rng.integers(0, 200, 3)
        return Image.fromarray(arr)
    small = rng.integers(0, 255, (9, 12, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.int16)
    return Image.fromarray(
        np.clip(base + rng.integers(-14, 14, base.shape), 0, 255).astype(np.uint8)
    )


def make_images(root: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for kind, share, size, fmt, quality in KINDS:
        for n in range(max(1, round(count * share))):
            rel = f"{kind}/{n:07d}.{'jpg' if fmt == 'JPEG' else 'png'}"
            (root / kind).mkdir(parents=True, exist_ok=True)
            options = {"quality": quality} if quality else {"compress_level": 6}
            synthetic(kind, n, size, rng).save(root / rel, fmt, **options)
            paths.append(rel)
    return sorted(paths)


def straightforward(root: Path, paths: list[str]) -> list[int]:
    """The loop a user would write; returns each image's pHash."""
    import imagehash

    out = []
    for rel in paths:
        data = (root / rel).read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            hashlib.sha256(im.convert("RGB").tobytes()).hexdigest()
            out.append(int(str(imagehash.phash(im)), 16))
    return out


def timed(label: str, fn, keep: list | None = None) -> float:
    note(f"{label} ...")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    note(f"{label}: {seconds:.2f} s")
    if keep is not None:
        keep.append(result)
    return seconds


def dask_job(tasks) -> tuple[float, float]:
    from distributed import LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    started = time.perf_counter() - start
    os.environ[engine.CLUSTER_VAR] = cluster.scheduler_address
    try:
        engine.run(imageindex.index_task, tasks[:2], 2)  # the workers import the code
        seconds = timed("Dask, 2 workers", lambda: engine.run(imageindex.index_task, tasks, 2))
    finally:
        del os.environ[engine.CLUSTER_VAR]
        cluster.close()
    return started, seconds


def ray_job(tasks) -> tuple[float, float]:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - start
    try:
        remote = ray.remote(imageindex.index_task)
        ray.get([remote.remote(t) for t in tasks[:2]])
        seconds = timed("Ray, 2 CPUs", lambda: ray.get([remote.remote(t) for t in tasks]))
    finally:
        ray.shutdown()
    return started, seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--shard", type=int, default=100, help="images per task")
    ap.add_argument("--ray", action="store_true", help="also time a local Ray instance")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        note(f"writing {args.images} images under {root}")
        paths = make_images(root, args.images)
        total = sum((root / p).stat().st_size for p in paths)
        for p in paths:  # into the page cache
            (root / p).read_bytes()
        tasks = imageindex.file_tasks(root, paths, args.shard)
        n = len(paths)
        rows = []
        results: list = []
        naive = timed(
            "straightforward loop, 1 process", lambda: straightforward(root, paths), results
        )
        rows.append(
            ("straightforward loop (sha256, decode, sha256 of pixels, imagehash.phash)", 1, naive)
        )
        one = timed(
            "index, 1 process", lambda: engine.run(imageindex.index_task, tasks, 1), results
        )
        rows.append(("`imageindex`, in one process", 1, one))
        local = timed("index, 2 processes", lambda: engine.run(imageindex.index_task, tasks, 2))
        rows.append(("`imageindex`, 2 local processes (the default)", 2, local))
        starts = {}
        starts["Dask"], dask_s = dask_job(tasks)
        rows.append(("`imageindex` on a local Dask cluster, 2 workers", 2, dask_s))
        if args.ray:
            starts["Ray"], ray_s = ray_job(tasks)
            rows.append(("`imageindex` on a local Ray instance, 2 CPUs", 2, ray_s))

        print(
            f"{n:,} images, {total / 1e6:,.0f} MB ({', '.join(k[0] for k in KINDS)}), "
            f"in the page cache; {os.cpu_count()} cores\n"
        )
        print("| job | processes | wall s | images/s | vs straightforward |")
        print("|---|---:|---:|---:|---:|")
        for label, procs, seconds in rows:
            print(
                f"| {label} | {procs} | {seconds:.2f} | {n / seconds:,.0f} "
                f"| {naive / seconds:.1f}x |"
            )
        print()
        print("| engine | start-up s |")
        print("|---|---:|")
        for name, seconds in starts.items():
            print(f"| {name} | {seconds:.2f} |")
        plain = results[0]
        ours = [row[4] for rows in results[1] for row in rows]
        bits = np.bincount([bin(a ^ b).count("1") for a, b in zip(plain, ours, strict=True)])
        print()
        print(
            "The index's pHash (imagehash's, on the image box-reduced first) against "
            "imagehash.phash of the full image, images by bits apart: "
            + ", ".join(f"{d}: {c:,}" for d, c in enumerate(bits) if c)
        )
        per_worker = n / one
        print()
        print(
            f"Projection for {FULL_LAYOUT:,} images at the measured {per_worker:,.0f} images/s per "
            "worker process (this mix; a cluster adds its start-up and reads over its network "
            "file system):\n"
        )
        print("| workers | hours |")
        print("|---:|---:|")
        for workers in (2, 8, 32, 128):
            print(f"| {workers} | {FULL_LAYOUT / (per_worker * workers) / 3600:.2f} |")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
