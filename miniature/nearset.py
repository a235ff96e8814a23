"""Writes the labelled near-duplicate set: nearset.zip of JPEG images and labels.tsv of pairs.

`python -m miniature.nearset --out miniature/nearset`. bench/nearset.py measures a
perceptual hash on it: how many of the copies it finds, how many look-alikes it takes
for copies.

Each of the BASES bases is a window of a scene of miniature/pictures.py, 96-160 px on
its long side, saved as JPEG at quality 75 as `bNN/base.jpg`. Beside it, in `bNN/`:

- copies a reviewer would call the same image (label `duplicate`), each made from the
  decoded base, as a copy found on the web is made from a JPEG: `resize` (to 50-70 %),
  `jpeg` (saved again at quality 30-45), `crop` (3-8 % off each border, kept at its
  cropped size), `brightness` (10-25 % brighter or darker);
- look-alikes that are other images (label `distinct`), each drawn anew from the base's
  scene, since a real look-alike is another photograph, not an edit of this one:
  `moved`, the same background, grain and shapes, each shape moved by 15-40 % of the
  picture's long side (a burst shot: the same place, the things in it have moved);
  `recoloured`, the same background and outlines, every shape in a new colour (one
  template filled in twice: the same layout, other content); `overlap`, another window
  of the same size on the same scene, sharing 20-45 % of the base's area (the camera
  turned a little: half of the picture or more is new).
  These keep what a perceptual hash sees most, the low frequencies of the background,
  and change what a person sees, so they are where a loose threshold fails first.

Every other pair of images is two different pictures. The parameters of each base come
from sha1 of its name; labels.tsv gives them in its `detail` column.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from miniature.generate import SAVE_OPTIONS, write_atomic, zip_bytes
from miniature.pictures import Scene, generator, render, scene

BASES = 80
LONG_SIDE = (96, 160)
SHORT_RATIO = (0.62, 1.0)  # the short side over the long one
SPAN = 0.55  # a base's long side, in scene units: room for an overlapping window beside it
SCALE = (0.5, 0.7)
LOW_QUALITY = (30, 45)
CROP = (0.03, 0.08)
BRIGHTNESS = (0.10, 0.25)
MOVE = (0.15, 0.4)  # of the window's long side
OVERLAP = (0.20, 0.45)  # of the base's area
COPIES = ("resize", "jpeg", "crop", "brightness")
LOOK_ALIKES = ("moved", "recoloured", "overlap")
HEADER = ("a", "b", "label", "kind", "detail")

Window = tuple[float, float, float, float]


def jpeg(image: Image.Image, quality: int = SAVE_OPTIONS["JPEG"]["quality"]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **{**SAVE_OPTIONS["JPEG"], "quality": quality})
    return buffer.getvalue()


def size_of(rng: np.random.Generator) -> tuple[int, int]:
    long = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    short = round(long * rng.uniform(*SHORT_RATIO))
    return (long, short) if rng.random() < 0.6 else (short, long)


def windows(rng: np.random.Generator, width: int, height: int) -> tuple[Window, Window, float]:
    """The base's window and the overlapping one (shifted so that they share `share` of
    the base's area), placed together at random inside the unit square."""
    wx, wy = SPAN * width / max(width, height), SPAN * height / max(width, height)
    share = rng.uniform(*OVERLAP)
    # share = (1 - fx) (1 - fy): split its logarithm at random between the two axes.
    split = rng.uniform()
    fx, fy = 1 - share**split, 1 - share ** (1 - split)
    dx, dy = fx * wx * rng.choice((-1, 1)), fy * wy * rng.choice((-1, 1))
    # The union of the two windows is at most (1 + 0.8) * SPAN < 1 wide and high.
    ux, uy = wx + abs(dx), wy + abs(dy)
    left, top = rng.uniform(0, 1 - ux), rng.uniform(0, 1 - uy)
    bx, by = left + max(0.0, -dx), top + max(0.0, -dy)
    base = (bx, by, bx + wx, by + wy)
    other = (bx + dx, by + dy, bx + dx + wx, by + dy + wy)
    return base, other, share


def moved(original: Scene, rng: np.random.Generator) -> Scene:
    shapes = []
    for shape in original.shapes:
        angle, length = rng.uniform(0, 2 * np.pi), SPAN * rng.uniform(*MOVE)
        x, y = shape.centre
        centre = (float(x + length * np.cos(angle)), float(y + length * np.sin(angle)))
        shapes.append(dataclasses.replace(shape, centre=centre))
    return dataclasses.replace(original, shapes=tuple(shapes))


def recoloured(original: Scene, rng: np.random.Generator) -> Scene:
    shapes = tuple(
        dataclasses.replace(shape, colour=tuple(int(c) for c in rng.integers(0, 256, 3)))
        for shape in original.shapes
    )
    return dataclasses.replace(original, shapes=shapes)


def base_group(name: str) -> tuple[dict[str, bytes], list[tuple[str, ...]]]:
    """The images of one base (member name -> JPEG bytes) and its rows of labels.tsv."""
    rng = generator(f"nearset/{name}")
    width, height = size_of(rng)
    own, other, share = windows(rng, width, height)
    original = scene(f"nearset/{name}")
    base = jpeg(render(original, width, height, own))
    decoded = Image.open(io.BytesIO(base)).convert("RGB")

    scale = rng.uniform(*SCALE)
    small = (round(width * scale), round(height * scale))
    quality = int(rng.integers(LOW_QUALITY[0], LOW_QUALITY[1] + 1))
    left, top, right, bottom = rng.uniform(*CROP, 4)
    box = (
        round(width * left),
        round(height * top),
        width - round(width * right),
        height - round(height * bottom),
    )
    change = rng.uniform(*BRIGHTNESS) * rng.choice((-1, 1))
    copies = {
        "resize": (jpeg(decoded.resize(small, Image.Resampling.BICUBIC)), f"scale {scale:.2f}"),
        "jpeg": (jpeg(decoded, quality), f"quality {quality}"),
        "crop": (
            jpeg(decoded.crop(box)),
            f"{left:.1%} left, {top:.1%} top, {right:.1%} right, {bottom:.1%} bottom off",
        ),
        "brightness": (
            jpeg(ImageEnhance.Brightness(decoded).enhance(1 + change)),
            f"brightness {change:+.0%}",
        ),
    }
    look_alikes = {
        "moved": (
            jpeg(render(moved(original, rng), width, height, own)),
            f"each shape moved {MOVE[0]:.0%}-{MOVE[1]:.0%} of the long side",
        ),
        "recoloured": (
            jpeg(render(recoloured(original, rng), width, height, own)),
            "each shape in a new colour",
        ),
        "overlap": (jpeg(render(original, width, height, other)), f"shares {share:.0%}"),
    }
    members = {f"{name}/base.jpg": base}
    rows = []
    for label, made in (("duplicate", copies), ("distinct", look_alikes)):
        for kind, (data, detail) in made.items():
            members[f"{name}/{kind}.jpg"] = data
            rows.append((f"{name}/base.jpg", f"{name}/{kind}.jpg", label, kind, detail))
    return members, rows


def build(bases: int = BASES) -> tuple[bytes, bytes]:
    """The bytes of nearset.zip and of labels.tsv."""
    members, rows = {}, [HEADER]
    for n in range(bases):
        group, labels = base_group(f"b{n:02d}")
        members |= group
        rows += labels
    tsv = "".join("\t".join(row) + "\n" for row in rows)
    return zip_bytes(members), tsv.encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default="miniature/nearset", type=Path, help="output folder")
    args = parser.parse_args(argv)
    archive, labels = build()
    pairs = labels.count(b"\n") - 1
    write_atomic(args.out / "nearset.zip", archive)
    write_atomic(args.out / "labels.tsv", labels)
    print(
        f"nearset: {BASES} bases, {pairs} labelled pairs; "
        f"nearset.zip {len(archive)} bytes in {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
