"""A synthetic localisation data set: shapes on textured backgrounds, with known object masks.

Each image holds one object whose shape is the class (circle, square,
triangle) in a random colour, position and size, on a smooth random texture
with stripes, plus a distractor (a cross) that carries no class information.
The object's mask is returned with the image, so where a model looks can be
scored (e.g. by the pointing game) without any download.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class ShapesData:
    """Images, labels and object masks.

    Attributes:
        images: uint8 (N, S, S, 3).
        labels: int64 (N,) indices into `class_names`.
        masks: bool (N, S, S), True on the labelled object.
        class_names: the class names.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES


def _texture(rng: np.random.Generator, size: int) -> Image.Image:
    coarse = rng.uniform(40, 170, size=(6, 6, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.4, 1.2))
    texture = smooth.astype(np.float32) + 25.0 * stripes[..., None]
    return Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8))


def _polygon(shape: int, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == 1:
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == 2:
        return [(cx, cy - r), (cx + r, cy + r * 0.9), (cx - r, cy + r * 0.9)]
    return None


def _draw_object(draw: ImageDraw.ImageDraw, shape: int, cx: float, cy: float, r: float, fill):
    points = _polygon(shape, cx, cy, r)
    if points is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(points, fill=fill)


def _far_point(rng: np.random.Generator, size: int, avoid: tuple[float, float], gap: float):
    margin = size * 0.12
    for _ in range(100):
        x, y = rng.uniform(margin, size - margin, size=2)
        if np.hypot(x - avoid[0], y - avoid[1]) > gap:
            return x, y
    return size - avoid[0], size - avoid[1]


def make_shapes(n: int, size: int = 64, seed: int = 0, distractor: bool = True) -> ShapesData:
    """Generates `n` images with labels and object masks, deterministically from `seed`.

    Args:
        n: number of images.
        size: side of the square images in pixels. Defaults to `64`.
        seed: random seed. Defaults to `0`.
        distractor: add a class-independent cross to each image. Defaults to `True`.

    Returns:
        A `ShapesData`.

    Example:

    >>> data = make_shapes(4, size=32)
    >>> data.images.shape, data.masks.shape, data.labels.shape
    ((4, 32, 32, 3), (4, 32, 32), (4,))
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    labels = rng.integers(0, len(CLASS_NAMES), size=n)
    for i, shape in enumerate(labels):
        image = _texture(rng, size)
        draw = ImageDraw.Draw(image)
        radius = rng.uniform(0.12, 0.2) * size
        cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if distractor:
            dx, dy = _far_point(rng, size, (cx, cy), gap=radius * 2.2)
            arm = rng.uniform(0.08, 0.14) * size
            cross = tuple(int(c) for c in rng.integers(0, 256, size=3))
            width = max(2, int(size * 0.05))
            draw.line([(dx - arm, dy - arm), (dx + arm, dy + arm)], fill=cross, width=width)
            draw.line([(dx - arm, dy + arm), (dx + arm, dy - arm)], fill=cross, width=width)
        _draw_object(draw, int(shape), cx, cy, radius, colour)
        mask = Image.new("L", (size, size), 0)
        _draw_object(ImageDraw.Draw(mask), int(shape), cx, cy, radius, 255)
        images[i] = np.asarray(image)
        masks[i] = np.asarray(mask) > 0
    return ShapesData(images=images, labels=labels.astype(np.int64), masks=masks)


WATERMARK_COLOURS = ((230, 30, 30), (30, 200, 30), (40, 60, 240))


def add_watermark(images: np.ndarray, marks: np.ndarray, fraction: float = 0.22) -> np.ndarray:
    """Stamps a coloured square into the top-left corner of each image: a shortcut to learn.

    The stamp of image `i` has colour `WATERMARK_COLOURS[marks[i]]`; a
    negative mark leaves the image unstamped. With `marks = labels` the
    watermark predicts the class perfectly (the shortcut); with random marks
    it carries no information.

    Args:
        images: uint8 (N, S, S, 3).
        marks: int (N,) colour index per image, or -1 for none.
        fraction: stamp side as a share of the image side. Defaults to `0.22`.

    Returns:
        A stamped copy of `images`.

    Example:

    >>> data = make_shapes(2, size=32)
    >>> add_watermark(data.images, data.labels)[:, 0, 0].tolist() != data.images[:, 0, 0].tolist()
    True
    """
    stamped = images.copy()
    side = max(2, round(images.shape[1] * fraction))
    for image, mark in zip(stamped, np.asarray(marks), strict=True):
        if mark >= 0:
            image[1 : side + 1, 1 : side + 1] = WATERMARK_COLOURS[int(mark)]
    return stamped


def watermark_masks(count: int, size: int, fraction: float = 0.22) -> np.ndarray:
    """Boolean (count, size, size) masks of the watermark's square, as `add_watermark` draws it."""
    side = max(2, round(size * fraction))
    masks = np.zeros((count, size, size), dtype=bool)
    masks[:, 1 : side + 1, 1 : side + 1] = True
    return masks
