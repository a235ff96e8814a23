"""How far apart in pHash the stand-in pictures of miniature/pictures.py are.

`python -m bench.pictures --keys 2000` draws one picture per key (64-160 px on each
side, from sha1 of the key), saves each as JPEG at quality 75, hashes it with the image
index's `hash_image` and prints the distribution of Hamming distances over all pairs,
next to what random hashes of the same shape would give: pHash sets exactly 32 of its
64 bits (the first, the DCT's mean, always), so two unrelated images are, at best, two
random choices of 31 of 63 bits, always an even distance apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from math import comb

import numpy as np

from llava_data.imageindex import hash_image
from miniature.generate import digest
from miniature.nearset import jpeg
from miniature.pictures import picture


def random_hash_cdf() -> dict[int, float]:
    """distance -> P(distance <= it) for two random balanced pHashes."""
    free, ones = 63, 31
    cdf, total = {}, 0.0
    for shared in range(ones, -1, -1):
        total += comb(ones, shared) * comb(free - ones, ones - shared) / comb(free, ones)
        cdf[2 * (ones - shared)] = total
    return cdf


def distances(hashes: list[int]) -> np.ndarray:
    values = np.array(hashes, dtype=np.uint64)
    upper = np.triu_indices(len(values), 1)
    return np.bitwise_count(values[:, None] ^ values[None, :])[upper]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", default=2000, type=int, help="pictures to draw")
    args = parser.parse_args(argv)

    hashes, seconds = [], 0.0
    for n in range(args.keys):
        d = digest(f"bench.pictures/{n}")
        start = time.perf_counter()
        image = picture(f"bench.pictures/{n}", 64 + d[0] % 97, 64 + d[1] % 97)
        seconds += time.perf_counter() - start
        hashes.append(hash_image(jpeg(image)).phash)
    found = distances(hashes)
    pairs = len(found)
    cdf = random_hash_cdf()
    expected_min = sum(2 * (1 - p) ** pairs for d, p in cdf.items() if d < 64)
    quantile = min(d for d, p in cdf.items() if p >= 0.001)
    low = np.bincount(found, minlength=65)
    print(f"{args.keys} pictures, {pairs} pairs, {1000 * seconds / args.keys:.2f} ms a picture")
    print("| | min | 0.1 % quantile | 1 % quantile | mean | std |")
    print("|---|---:|---:|---:|---:|---:|")
    q1, q01 = np.quantile(found, [0.01, 0.001], method="lower")
    print(f"| pictures | {found.min()} | {q01} | {q1} | {found.mean():.2f} | {found.std():.2f} |")
    mean = sum(d * (p - cdf.get(d - 2, 0)) for d, p in cdf.items())
    print(
        f"| random balanced hashes | {expected_min:.1f} (expected) | {quantile} | | {mean:.2f} | |"
    )
    print("\n| distance <= | pairs | expected of random hashes |")
    print("|---:|---:|---:|")
    for d in range(10, 20, 2):
        print(f"| {d} | {low[: d + 1].sum()} | {pairs * cdf[d]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
