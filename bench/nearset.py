"""Measures pHash near-duplicate detection on the labelled set in miniature/nearset.

Reads nearset.zip and labels.tsv from `--set` (written by miniature/nearset.py) and
hashes every image twice: with the image index's `hash_image` (llava_data.imageindex)
and, as the baseline, with plain `imagehash.phash` of the whole decoded image. For each
max_distance from 0 to `--up-to` it prints, per hash, a row of a Markdown table:
precision and recall over every pair of images in the set, recall per kind of copy and
false matches per kind of look-alike. Then the distance where the index's hash has its
best F1.

A pair is a duplicate when labels.tsv says so, or when both images are copies of one
base (kind `copies`). A look-alike counts against its base and every copy of that base,
under its own kind; two look-alikes of one base are `look-alikes`; any other pair is
`unrelated`.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from llava_data.imageindex import PHASH_SIDE, hash_image, phash_of

HEADER = ["a", "b", "label", "kind"]  # then, optionally, more columns
UNRELATED = (False, "unrelated")


@dataclass(frozen=True)
class Label:
    a: str
    b: str
    duplicate: bool
    kind: str


@dataclass(frozen=True)
class Score:
    """What a max_distance does over all pairs: `found` and `mistaken` map a kind of
    duplicate or distinct pair to (pairs matched, pairs of that kind)."""

    max_distance: int
    found: dict[str, tuple[int, int]]
    mistaken: dict[str, tuple[int, int]]

    @property
    def true(self) -> int:
        return sum(matched for matched, _ in self.found.values())

    @property
    def false(self) -> int:
        return sum(matched for matched, _ in self.mistaken.values())

    @property
    def precision(self) -> float:
        matched = self.true + self.false
        return self.true / matched if matched else float("nan")

    @property
    def duplicates(self) -> int:
        return sum(total for _, total in self.found.values())

    @property
    def recall(self) -> float:
        return self.true / self.duplicates if self.duplicates else float("nan")

    @property
    def f1(self) -> float:
        # 2 TP / (2 TP + FP + FN), FN being the duplicates not matched
        return 2 * self.true / (self.true + self.false + self.duplicates)


def read_labels(text: str) -> list[Label]:
    lines = text.splitlines()
    if not lines or lines[0].split("\t")[: len(HEADER)] != HEADER:
        raise ValueError(f"labels.tsv: the header must start with {' '.join(HEADER)}")
    labels = []
    for number, line in enumerate(lines[1:], 2):
        a, b, label, kind = line.split("\t")[: len(HEADER)]
        if label not in ("duplicate", "distinct"):
            raise ValueError(f"labels.tsv line {number}: label {label!r}")
        labels.append(Label(a, b, label == "duplicate", kind))
    return labels


def pair_classes(labels: Iterable[Label]) -> dict[tuple[str, str], tuple[bool, str]]:
    """(name, name) in sorted order -> (duplicate, kind), for every pair that is not
    `unrelated`: what labels.tsv names, then what follows from it."""
    classes = {}

    def put(x: str, y: str, duplicate: bool, kind: str) -> None:
        pair = (x, y) if x < y else (y, x)
        if classes.setdefault(pair, (duplicate, kind))[0] != duplicate:
            raise ValueError(f"labels.tsv makes {x} and {y} both duplicates and distinct")

    copies, look_alikes = {}, {}
    for label in labels:
        put(label.a, label.b, label.duplicate, label.kind)
        made = copies if label.duplicate else look_alikes
        made.setdefault(label.a, []).append(label)
    for made in copies.values():
        for x, y in itertools.combinations([label.b for label in made], 2):
            put(x, y, True, "copies")
    for base, made in look_alikes.items():
        for label in made:
            for member in [base] + [copy.b for copy in copies.get(base, [])]:
                put(member, label.b, False, label.kind)
        for x, y in itertools.combinations([label.b for label in made], 2):
            put(x, y, False, "look-alikes")
    return classes


def tally(
    hashes: dict[str, int], classes: dict[tuple[str, str], tuple[bool, str]]
) -> Counter[tuple[bool, str, int]]:
    """(duplicate, kind, Hamming distance) -> pairs, over every pair of `hashes`."""
    counts = Counter()
    for x, y in itertools.combinations(sorted(hashes), 2):
        duplicate, kind = classes.get((x, y), UNRELATED)
        counts[duplicate, kind, (hashes[x] ^ hashes[y]).bit_count()] += 1
    return counts


def score(counts: Counter[tuple[bool, str, int]], max_distance: int) -> Score:
    """Precision and recall when pairs at most `max_distance` apart are taken for copies."""
    found, mistaken = {}, {}
    for (duplicate, kind, distance), pairs in sorted(counts.items()):
        side = found if duplicate else mistaken
        matched, total = side.get(kind, (0, 0))
        side[kind] = (matched + pairs * (distance <= max_distance), total + pairs)
    return Score(max_distance, found, mistaken)


def table(scores: list[Score], found_kinds: list[str], mistaken_kinds: list[str]) -> str:
    """A Markdown table, a row per score, a column per kind of pair the set holds."""
    first = scores[0]
    found_kinds = [kind for kind in found_kinds if kind in first.found]
    mistaken_kinds = [kind for kind in mistaken_kinds if kind in first.mistaken]
    heads = ["max_distance", "matched", "false", "precision", "recall", "F1"]
    heads += [f"{kind} ({first.found[kind][1]})" for kind in found_kinds]
    heads += [f"✗ {kind} ({first.mistaken[kind][1]})" for kind in mistaken_kinds]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---:|" * len(heads)]
    for s in scores:
        cells = [s.max_distance, s.true + s.false, s.false]
        cells += [f"{v:.3f}" if v == v else "–" for v in (s.precision, s.recall, s.f1)]
        cells += [f"{s.found[kind][0] / s.found[kind][1]:.2f}" for kind in found_kinds]
        cells += [s.mistaken[kind][0] for kind in mistaken_kinds]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def kinds_in_order(labels: list[Label], duplicate: bool, derived: tuple[str, ...]) -> list[str]:
    named = dict.fromkeys(label.kind for label in labels if label.duplicate == duplicate)
    return [*named, *derived]


def plain_phash(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return phash_of(image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--set", default="miniature/nearset", type=Path, help="the set's folder")
    parser.add_argument("--up-to", default=16, type=int, help="the largest max_distance")
    args = parser.parse_args(argv)

    labels = read_labels((args.set / "labels.tsv").read_text(encoding="utf-8"))
    with zipfile.ZipFile(args.set / "nearset.zip") as archive:
        images = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
    unknown = sorted({n for label in labels for n in (label.a, label.b)} - set(images))
    if unknown:
        sys.exit(f"bench.nearset: labels.tsv names images not in nearset.zip: {unknown[:5]}")
    classes = pair_classes(labels)
    found_kinds = kinds_in_order(labels, True, ("copies",))
    mistaken_kinds = kinds_in_order(labels, False, ("look-alikes", "unrelated"))
    facts = {name: hash_image(data) for name, data in images.items()}
    hashes = {
        "index pHash (llava_data.imageindex.hash_image)": {
            name: fact.phash for name, fact in facts.items()
        },
        "plain imagehash.phash of the whole image": {
            name: plain_phash(data) for name, data in images.items()
        },
    }
    print(
        f"{len(images)} images, {len(images) * (len(images) - 1) // 2} pairs; "
        f"{len(labels)} labelled pairs. Columns by kind: the share of duplicate pairs found, "
        f"or (✗) the distinct pairs taken for duplicates; (n) pairs of that kind.\n"
    )
    best, odd = {}, 0
    for title, hashed in hashes.items():
        counts = tally(hashed, classes)
        odd += sum(pairs for (_, _, distance), pairs in counts.items() if distance % 2)
        scores = [score(counts, d) for d in range(args.up_to + 1)]
        best[title] = max(scores, key=lambda s: (s.f1, -s.max_distance))
        print(f"### {title}\n\n{table(scores, found_kinds, mistaken_kinds)}\n")
    index, plain = hashes.values()
    differ = sum(index[name] != plain[name] for name in images)
    short = max(min(fact.width, fact.height) for fact in facts.values())
    print(
        f"The two hashes differ on {differ} of {len(images)} images (the index reduces an "
        f"image first when its short side is at least {2 * PHASH_SIDE} px; here at most {short})."
    )
    if not odd:
        print(
            "Every distance is even (pHash sets 32 of its 64 bits): an odd max_distance "
            "matches what the even one below it matches."
        )
    for title, top in best.items():
        print(
            f"Best F1, {title}: max_distance {top.max_distance} "
            f"(precision {top.precision:.3f}, recall {top.recall:.3f}, F1 {top.f1:.3f})."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
