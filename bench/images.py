"""Benchmark the image checks of the validation: existence of many paths, header reads per second.

Writes, under `--workdir` (a temporary folder by default, removed unless `--keep`), a
synthetic layout: `--files` empty files spread over folders shaped like the real
trees (a few huge flat folders such as coco/train2017, many small ones such as the
558K pretraining images), and `--images` small real JPEG/PNG files. Then times
`llava_data.validate.missing_images` on `--paths` referenced paths (the files plus a few
missing ones, repeated as records repeat images) and `llava_data.validate.image_problems`
on the real images with 1 and 2 processes, each next to the straightforward version
(`os.path.exists` per path; `PIL.Image.open(...).load()` per image). Prints a Markdown
table on stdout; progress notes on stderr.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from llava_data.validate import image_problems, missing_images

# (folder, files) shaped like the real layout: a few big flat folders, many small ones.
FLAT = [
    ("coco/train2017", 0.30),
    ("gqa/images", 0.12),
    ("ocr_vqa/images", 0.07),
    ("vg/VG_100K", 0.05),
    ("vg/VG_100K_2", 0.04),
    ("textvqa/train_images", 0.02),
    ("dvqa/images", 0.05),
    ("synthdog-en/images", 0.03),
]
NESTED = ("llava/llava_pretrain/images", 0.32, 660)  # 00000 .. 00659, like the 558K images


def note(msg: str) -> None:
    print(f"[bench.images] {msg}", file=sys.stderr, flush=True)


def make_layout(root: Path, files: int) -> list[str]:
    """Create `files` empty files; return their paths relative to `root`, sorted."""
    paths = []
    for folder, share in FLAT:
        paths += [f"{folder}/{n:012d}.jpg" for n in range(int(files * share))]
    folder, share, parts = NESTED
    per = int(files * share) // parts
    paths += [f"{folder}/{p:05d}/{p:05d}{n:04d}.jpg" for p in range(parts) for n in range(per)]
    for rel in paths:
        path = root / rel
        try:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
    return sorted(paths)


def make_images(root: Path, count: int) -> list[str]:
    """`count` small real images (JPEG and PNG, 64-640 px wide) under root/real."""
    out = []
    for n in range(count):
        fmt, ext = ("PNG", "png") if n % 5 == 0 else ("JPEG", "jpg")
        size = (64 + (n * 37) % 576, 48 + (n * 53) % 432)
        buf = io.BytesIO()
        Image.new("RGB", size, (n % 256, (n * 7) % 256, (n * 13) % 256)).save(buf, fmt)
        rel = f"real/{n // 1000:03d}/{n:06d}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(buf.getvalue())
        out.append(rel)
    return out


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def naive_exists(root: Path, paths: list[str]) -> set[str]:
    return {p for p in paths if not os.path.exists(root / p)}


def naive_headers(root: Path, paths: list[str]) -> dict[str, str]:
    bad = {}
    for rel in paths:
        try:
            with Image.open(root / rel) as img:
                img.load()
        except Exception:  # noqa: BLE001
            bad[rel] = "image_unreadable"
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_200_000)
    ap.add_argument("--paths", type=int, default=1_500_000)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-images-", dir=args.workdir))
    try:
        note(f"creating {args.files:,} files in {work}")
        files = make_layout(work, args.files)
        absent = [f"coco/train2017/absent{n}.jpg" for n in range(500)]
        refs = (files + absent) * (args.paths // len(files) + 1)
        refs = refs[: args.paths]
        os.sync()
        t_fast, missing = timed(missing_images, work, refs)
        t_naive, missing_naive = timed(naive_exists, work, refs)
        assert missing == missing_naive, "both find the same missing paths"
        note(f"creating {args.images:,} real images")
        images = make_images(work, args.images)
        t1, bad1 = timed(image_problems, work, images, False, 1)
        t2, bad2 = timed(image_problems, work, images, False, 2)
        t_decode, _ = timed(naive_headers, work, images)
        assert bad1 == bad2 == {}, "the synthetic images are all readable"
        rows = [
            (
                "referenced paths exist",
                f"{len(refs):,} paths, {len(files):,} files",
                t_fast,
                t_naive,
                f"{len(refs) / t_fast:,.0f} paths/s",
            ),
            (
                "header checks, 1 process",
                f"{len(images):,} images",
                t1,
                t_decode,
                f"{len(images) / t1:,.0f} images/s",
            ),
            (
                "header checks, 2 processes",
                f"{len(images):,} images",
                t2,
                t_decode,
                f"{len(images) / t2:,.0f} images/s",
            ),
        ]
        print(
            f"command: `python -m bench.images --files {args.files} --paths {args.paths} "
            f"--images {args.images}`; nproc {os.cpu_count()}\n"
        )
        print("| check | size | this (s) | straightforward (s) | rate |")
        print("|---|---|---:|---:|---:|")
        for name, size, fast, slow, rate in rows:
            print(f"| {name} | {size} | {fast:.2f} | {slow:.2f} | {rate} |")
        print(
            "\nstraightforward: `os.path.exists` per path; `Image.open(...).load()` per image "
            "(a full decode) in one process."
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
