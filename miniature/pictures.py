"""Stand-in photographs drawn from a key: `picture(key, width, height)`, an RGB image.

To a perceptual hash they look like photographs: pictures of different keys are nearly
as far apart in pHash as random hashes are (`python -m bench.pictures` measures it).
A scene is a smooth colour field (a few
low-frequency waves), some shapes (ellipses, rectangles, polygons) in varied colours
and sizes, and a fine grain on top. It lives on the unit square, and `render` draws any
window of it at any size, so that miniature/nearset.py can crop one scene twice or
redraw it with its shapes moved. Everything comes from sha1 of the key through local
NumPy generators.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

WAVES = 10
MAX_FREQUENCY = 3.0  # cycles across the scene: the field stays smooth
SHAPES = (8, 15)  # at least, less than
SHAPE_KINDS = ("ellipse", "rectangle", "polygon")
ELLIPSE_STEPS = 32  # an ellipse is drawn as a polygon of this many sides
SIZE_RANGE = (0.05, 0.3)  # a shape's radius, in scene units
GRAIN = 3  # the grain's amplitude in levels, each pixel uniform in -GRAIN..GRAIN


@dataclass(frozen=True)
class Shape:
    """A filled outline: its centre and its vertices around it, in scene coordinates."""

    centre: tuple[float, float]
    outline: tuple[tuple[float, float], ...]
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A scene on the unit square: its field, its shapes drawn in order, its grain's seed."""

    mean: tuple[float, float, float]
    # per wave: x frequency, y frequency, phase, then the amplitude of each channel
    waves: tuple[tuple[float, ...], ...]
    shapes: tuple[Shape, ...]
    grain: int


def digest(key: str) -> bytes:
    return hashlib.sha1(key.encode("utf-8")).digest()


def generator(key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(digest(key), "big"))


def random_shape(rng: np.random.Generator) -> Shape:
    """An ellipse, a rectangle or a polygon, turned any way, in a random colour."""
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    size = np.exp(rng.uniform(np.log(SIZE_RANGE[0]), np.log(SIZE_RANGE[1])))
    centre = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))
    if kind == "polygon":
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 8)))
        radii = size * rng.uniform(0.5, 1.2, len(angles))
        x, y = radii * np.cos(angles), radii * np.sin(angles)
    else:
        stretch = np.exp(rng.uniform(-0.6, 0.6))
        turn = rng.uniform(0, np.pi)
        steps = ELLIPSE_STEPS if kind == "ellipse" else 4
        angles = np.arange(steps) * (2 * np.pi / steps) + (0 if kind == "ellipse" else np.pi / 4)
        u, v = size * stretch * np.cos(angles), size / stretch * np.sin(angles)
        x, y = u * np.cos(turn) - v * np.sin(turn), u * np.sin(turn) + v * np.cos(turn)
    outline = tuple((float(a), float(b)) for a, b in zip(x, y, strict=True))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return Shape(centre, outline, colour)


def scene(key: str) -> Scene:
    """The scene of `key`: the same key, the same scene."""
    rng = generator(key)
    mean = tuple(float(c) for c in rng.uniform(60, 196, 3))
    waves = []
    for _ in range(WAVES):
        fx, fy = rng.uniform(-MAX_FREQUENCY, MAX_FREQUENCY, 2)
        # A shared luminance swing with a tint per channel; slower waves swing wider.
        swing = rng.uniform(15, 45) / (1 + np.hypot(fx, fy))
        amplitudes = swing * (1 + rng.uniform(-0.5, 0.5, 3))
        waves.append(
            (float(fx), float(fy), float(rng.uniform(0, 2 * np.pi)), *map(float, amplitudes))
        )
    shapes = tuple(random_shape(rng) for _ in range(rng.integers(*SHAPES)))
    return Scene(mean, tuple(waves), shapes, int(rng.integers(2**63)))


def full_window(width: int, height: int) -> tuple[float, float, float, float]:
    """The window (x0, y0, x1, y1) spanning the scene on the long side, centred."""
    if width >= height:
        margin = (1 - height / width) / 2
        return (0.0, margin, 1.0, 1 - margin)
    margin = (1 - width / height) / 2
    return (margin, 0.0, 1 - margin, 1.0)


def render(
    scene: Scene, width: int, height: int, window: tuple[float, float, float, float]
) -> Image.Image:
    """The part of `scene` inside `window` (scene coordinates), drawn at width x height."""
    x0, y0, x1, y1 = window
    xs = x0 + (np.arange(width) + 0.5) * ((x1 - x0) / width)
    ys = y0 + (np.arange(height) + 0.5) * ((y1 - y0) / height)
    # Each wave cos(2pi (fx x + fy y) + phase) splits into a product of a column and a row
    # (cos(a + b) = cos a cos b - sin a sin b): the field is then three small matrix products.
    waves = np.array(scene.waves)
    fx, fy, phase, amplitudes = waves[:, 0], waves[:, 1], waves[:, 2], waves[:, 3:]
    across = 2 * np.pi * fx[:, None] * xs[None, :] + phase[:, None]
    down = 2 * np.pi * fy[:, None] * ys[None, :]
    rows = np.concatenate([np.cos(across), np.sin(across)])
    columns = np.concatenate([np.cos(down), -np.sin(down)])
    field = np.stack(
        [columns.T @ (rows * np.tile(amplitudes[:, c], 2)[:, None]) for c in range(3)], axis=-1
    )
    field += scene.mean
    image = Image.fromarray(np.clip(np.rint(field), 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(image)
    sx, sy = width / (x1 - x0), height / (y1 - y0)
    for shape in scene.shapes:
        cx, cy = shape.centre
        draw.polygon(
            [((cx + x - x0) * sx, (cy + y - y0) * sy) for x, y in shape.outline], shape.colour
        )

    # The grain depends on the scene's seed, the window and the size only: a scene redrawn
    # with its shapes moved keeps the grain it had.
    rng = generator(f"{scene.grain} {width}x{height} {window}")
    grain = rng.integers(-GRAIN, GRAIN + 1, (height, width, 1), dtype=np.int16)
    pixels = np.asarray(image, dtype=np.int16) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def picture(key: str, width: int, height: int) -> Image.Image:
    """The whole scene of `key` (its long side spanning the scene) at width x height."""
    return render(scene(key), width, height, full_window(width, height))
