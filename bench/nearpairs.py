"""Benchmark llava_data.nearpairs.near_pairs on synthetic pHash-like hashes.

Synthesises `--hashes` 64-bit hashes from a fixed seed, each with exactly 32 bits set (as
pHash's median threshold makes them), and plants what real image sets hold:
- near-duplicate families: 2% of the items are originals with 1 to 10 copies each, a copy
  at distance 0, 2, 4, 6 or 8 (k set bits moved to k clear places, so it keeps 32 bits set;
  two hashes with 32 bits set are always at an even distance);
- a skewed cluster of `--cluster` hashes within distance 6 of one "blank document" hash
  (0 to 3 bits moved, so a quarter are exact copies of it).
The items are shuffled. Then, each in a fresh interpreter (wall time of the call and the
process's peak RSS, both measured in the child; RSS includes the interpreter and the input):
- `near_pairs` with the chunks `plan` picks (flips) and with the plain pigeonhole layout
  (max_distance + 1 exact chunks), for each `--distances`, each run stopped after
  `--timeout` seconds. Every run is checked: the output is strictly sorted, i < j, each
  distance is right (on a sample), every planted family pair within the distance is there,
  and the cluster's pairs are all there (counted by brute force over the cluster);
- brute force, the straightforward comparison: every pair of a `--sample`-item random
  subsample, XOR and popcount by blocks of rows, timed and extrapolated quadratically to
  all pairs; `near_pairs` must return exactly the same pairs on that subsample.
Prints the command, the machine and a Markdown table on stdout; progress notes on stderr.
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

from bench.mix import busy_seconds
from llava_data.nearpairs import near_pairs, pigeonhole, plan

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261205
FAMILIES = 0.02  # the share of items that are originals of a family
CLUSTER = -2  # the label of the cluster's members (a family's label is its number)


def note(msg: str) -> None:
    print(f"[bench.nearpairs] {msg}", file=sys.stderr, flush=True)


def balanced(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` random hashes with exactly 32 of their 64 bits set."""
    bits = np.zeros((count, 64), np.uint8)
    bits[:, :32] = 1
    bits = rng.permuted(bits, axis=1)
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").ravel().astype(np.uint64)


def moved(rng: np.random.Generator, hashes: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Each hash with k[i] of its set bits cleared and k[i] clear bits set (distance 2 k[i])."""
    bytes_ = hashes.astype("<u8").view(np.uint8).reshape(-1, 8)
    bits = np.unpackbits(bytes_, axis=1, bitorder="little")
    most = int(k.max()) if k.size else 0
    use = np.arange(most)[None, :] < k[:, None]
    flips = np.zeros(hashes.size, np.uint64)
    for state in (1, 0):
        # the k[i] bits in `state` with the smallest random keys
        rank = np.where(bits == state, rng.random(bits.shape), 2.0)
        cols = np.argsort(rank, axis=1)[:, :most].astype(np.uint64)
        flips |= np.bitwise_or.reduce(np.where(use, np.uint64(1) << cols, np.uint64(0)), axis=1)
    return hashes ^ flips


def synthesise(n: int, cluster: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The hashes, shuffled, and each item's label: its family, CLUSTER or -1."""
    rng = np.random.default_rng(seed)
    families = round(FAMILIES * n)
    copies = rng.integers(1, 11, families)
    plain = n - cluster - int(copies.sum())
    if plain < families:
        raise SystemExit(f"{n:,} hashes cannot hold {families:,} families and the cluster")
    base = balanced(rng, plain)
    originals = rng.choice(plain, families, replace=False)
    source = np.repeat(originals, copies)
    near = moved(rng, base[source], rng.integers(0, 5, source.size))
    center = balanced(rng, 1)
    blank = moved(rng, np.repeat(center, cluster), rng.integers(0, 4, cluster))
    hashes = np.concatenate((base, near, blank))
    labels = np.full(n, -1, np.int64)
    labels[originals] = np.arange(families)
    labels[plain : plain + source.size] = np.repeat(np.arange(families), copies)
    labels[plain + source.size :] = CLUSTER
    order = rng.permutation(n)
    return hashes[order], labels[order]


def brute_force(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair i < j within the distance: all pairs, a block of rows against all columns."""
    n, rows = hashes.size, 256
    found_i, found_j = [], []
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        d = np.bitwise_count(hashes[lo:hi, None] ^ hashes[None, :])
        i, j = np.nonzero(d <= max_distance)
        i += lo
        keep = j > i
        found_i.append(i[keep])
        found_j.append(j[keep])
    empty = [np.zeros(0, np.int64)]
    return np.concatenate(found_i or empty), np.concatenate(found_j or empty)


def family_pairs(hashes: np.ndarray, labels: np.ndarray, max_distance: int) -> np.ndarray:
    """The keys i * n + j of the planted pairs (within a family) within the distance."""
    n = hashes.size
    items = np.flatnonzero(labels >= 0)
    items = items[np.argsort(labels[items], kind="stable")]
    starts = np.flatnonzero(np.diff(labels[items], prepend=-1))
    sizes = np.diff(starts, append=items.size)
    keys = []
    for size in np.unique(sizes).tolist():
        groups = items[starts[sizes == size][:, None] + np.arange(size)]
        a, b = np.triu_indices(size, 1)
        i, j = groups[:, a].ravel(), groups[:, b].ravel()
        i, j = np.minimum(i, j), np.maximum(i, j)
        within = np.bitwise_count(hashes[i] ^ hashes[j]) <= max_distance
        keys.append(i[within] * n + j[within])
    return np.sort(np.concatenate(keys))


def cluster_pairs(hashes: np.ndarray, labels: np.ndarray, max_distance: int) -> int:
    """How many pairs of the cluster are within the distance (brute force over the cluster)."""
    return brute_force(hashes[labels == CLUSTER], max_distance)[0].size


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_near(path: Path, max_distance: int, method: str) -> dict:
    """In the child: time near_pairs on the saved hashes, then check its answer."""
    data = np.load(path)
    hashes, labels = data["hashes"], data["labels"]
    layout = pigeonhole(max_distance) if method == "pigeonhole" else None
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    i, j, d = near_pairs(hashes, max_distance, layout=layout)
    wall, call_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n = hashes.size
    sample = np.random.default_rng(1).integers(0, max(1, i.size), min(i.size, 1_000_000))
    right = np.array_equal(d[sample], np.bitwise_count(hashes[i[sample]] ^ hashes[j[sample]]))
    in_cluster = labels == CLUSTER
    found_cluster = int(np.count_nonzero(in_cluster[i] & in_cluster[j]))
    ok = bool(right and (d <= max_distance).all() and (i < j).all())
    keys = i
    keys *= n
    keys += j
    del i, j
    ok = ok and bool((keys[1:] > keys[:-1]).all())
    planted = family_pairs(hashes, labels, max_distance)
    at = np.searchsorted(keys, planted)
    found_planted = int(np.count_nonzero(keys[np.minimum(at, keys.size - 1)] == planted))
    layout = layout or plan(np.unique(hashes).size, max_distance)
    return {
        "wall": wall,
        "call_cpu": call_cpu,
        "rss": rss,
        "pairs": int(keys.size),
        "ok": ok,
        "planted": int(planted.size),
        "planted_found": found_planted,
        "cluster": cluster_pairs(hashes, labels, max_distance),
        "cluster_found": found_cluster,
        "layout": " ".join(f"{c.width}/{c.radius}" for c in layout),
        "cpu": cpu_seconds(),
    }


def run_brute(path: Path, distances: list[int], sample: int) -> dict:
    """In the child: brute force on a random subsample, checked against near_pairs."""
    hashes = np.load(path)["hashes"]
    pick = np.sort(np.random.default_rng(2).choice(hashes.size, sample, replace=False))
    part = hashes[pick]
    out = {}
    for r in distances:
        t0 = time.perf_counter()
        i, j = brute_force(part, r)
        wall = time.perf_counter() - t0
        order = np.lexsort((j, i))
        ni, nj, _ = near_pairs(part, r)
        same = np.array_equal(ni, i[order]) and np.array_equal(nj, j[order])
        out[str(r)] = {"wall": wall, "pairs": int(i.size), "same": bool(same)}
    return {"distances": out, "cpu": cpu_seconds()}


def launch(args: list[str], timeout: float | None) -> dict | None:
    """A child `python -m bench.nearpairs --child ...`: its JSON, or None after `timeout` s.

    Adds `others`: the CPU seconds the rest of the machine used meanwhile.
    """
    busy0 = busy_seconds()
    cmd = [sys.executable, "-m", "bench.nearpairs", "--child", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    if proc.returncode:
        raise SystemExit(f"{cmd} failed")
    result = json.loads(out)
    result["others"] = max(0.0, busy_seconds() - busy0 - result.pop("cpu"))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.nearpairs", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--hashes", type=int, default=1_500_000)
    ap.add_argument("--cluster", type=int, default=20_000)
    ap.add_argument("--distances", type=int, nargs="+", default=[4, 6, 8, 10])
    ap.add_argument("--sample", type=int, default=20_000, help="items brute-forced")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per near_pairs run")
    ap.add_argument("--no-pigeonhole", action="store_true", help="skip the plain layout")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, path, *rest = args.child
        if kind == "near":
            result = run_near(Path(path), int(rest[0]), rest[1])
        else:
            result = run_brute(Path(path), [int(r) for r in rest[1:]], int(rest[0]))
        print(json.dumps(result))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="bench-nearpairs-", dir=args.workdir))
    try:
        note(f"synthesising {args.hashes:,} hashes")
        hashes, labels = synthesise(args.hashes, args.cluster)
        path = workdir / "hashes.npz"
        np.savez(path, hashes=hashes, labels=labels)
        distinct = np.unique(hashes).size
        methods = ["flips"] + ([] if args.no_pigeonhole else ["pigeonhole"])
        runs = {}
        for r in args.distances:
            for method in methods:
                note(f"near_pairs, max_distance {r}, {method}")
                runs[r, method] = launch(["near", str(path), str(r), method], args.timeout)
                if runs[r, method] and not runs[r, method]["ok"]:
                    raise SystemExit(f"max_distance {r}, {method}: the output is wrong")
        note(f"brute force on {args.sample:,} items")
        sample = [str(args.sample), *map(str, args.distances)]
        brute = launch(["brute", str(path), *sample], None)
        for r, result in brute["distances"].items():
            if not result["same"]:
                raise SystemExit(f"max_distance {r}: near_pairs and brute force differ")
        scale = args.hashes * (args.hashes - 1) / (args.sample * (args.sample - 1))
        argv = sys.argv[1:] if argv is None else argv
        print(report(args, argv, distinct, runs, brute, scale, methods))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def report(args, argv, distinct: int, runs: dict, brute: dict, scale: float, methods) -> str:
    gb = 1e9
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        f"command: `{' '.join(['python -m bench.nearpairs', *argv])}`",
        f"machine: nproc {len(os.sched_getaffinity(0))}, {ram:.0f} GiB RAM, numpy {np.__version__}",
        f"input: {args.hashes:,} hashes ({distinct:,} distinct), {round(FAMILIES * args.hashes):,}"
        f" planted families, a cluster of {args.cluster:,} within distance 6",
        "",
        "| max_distance | method (chunks width/radius) | pairs | answer GB | wall s | CPU s | "
        "peak RSS GB | planted pairs found | cluster pairs found | vs brute force | "
        "others' CPU s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in args.distances:
        sampled = brute["distances"][str(r)]["wall"]
        bf = sampled * scale
        for method in methods:
            run = runs[r, method]
            if run is None:
                lines.append(
                    f"| {r} | {method} | | | > {args.timeout:.0f} (stopped) | | | | | "
                    f"< {bf / args.timeout:,.0f}x | |"
                )
                continue
            lines.append(
                f"| {r} | {method} ({run['layout']}) | {run['pairs']:,} | "
                f"{run['pairs'] * 17 / gb:.2f} | {run['wall']:.1f} | {run['call_cpu']:.1f} | "
                f"{run['rss'] / gb:.2f} | {run['planted_found']:,} / {run['planted']:,} | "
                f"{run['cluster_found']:,} / {run['cluster']:,} | {bf / run['wall']:,.0f}x | "
                f"{run['others']:.0f} |"
            )
        lines.append(
            f"| {r} | brute force, {args.sample:,} items ({sampled:.1f} s) "
            f"x {scale:,.0f} | | | {bf:,.0f} (extrapolated) | | | | | 1x | |"
        )
    lines += [
        "",
        "answer GB: the output itself, i and j (int64) and the distance (uint8), 17 bytes a pair.",
        "CPU s: user + system time of the call (2 threads); others' CPU s: what the rest of the",
        "machine used during the run (other jobs share these 2 cores).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
