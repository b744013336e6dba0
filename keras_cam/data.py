"""Synthetic localisation data sets with known object masks: images, sequences, volumes.

Each image of `make_shapes` holds one object whose shape is the class
(circle, square, triangle) in a random colour, position and size, on a
smooth random texture with stripes, plus a distractor (a cross) that carries
no class information. `make_sequences` is the same idea along time (a
pattern at a random time in noise, for Conv1D models) and `make_volumes` in
three dimensions (a solid in a noisy volume, for Conv3D models). The
object's mask is returned with each sample, so where a model looks can be
scored (e.g. by the pointing game) without any download.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square", "triangle")
SEQUENCE_CLASS_NAMES = ("bump", "square", "chirp")
VOLUME_CLASS_NAMES = ("ball", "plate", "rod")


@dataclass(frozen=True)
class ShapesData:
    """Samples, labels and object masks.

    Attributes:
        images: the samples: uint8 (N, S, S, 3) images (`make_shapes`),
            float32 (N, T, 1) sequences (`make_sequences`) or float32
            (N, S, S, S, 1) volumes (`make_volumes`).
        labels: int64 (N,) indices into `class_names`.
        masks: bool, the samples' shape without channels ((N, S, S),
            (N, T), (N, S, S, S)), True on the labelled object.
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
    >>> stamped = add_watermark(data.images, data.labels)  # the stamp starts at pixel (1, 1)
    >>> bool((stamped[:, 1, 1] != data.images[:, 1, 1]).any(axis=-1).all())
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


def _sequence_pattern(label: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """The class's pattern over `length` steps, positive everywhere (so its mask is exact)."""
    t = np.linspace(0.0, 1.0, length)
    if label == 0:  # a smooth bump
        return np.sin(np.pi * (np.arange(length) + 1) / (length + 1))
    if label == 1:  # a flat-topped pulse
        return np.ones(length)
    # a chirp: oscillation speeding up over the pattern, riding on an offset
    return 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * (t + t**2))


def make_sequences(
    n: int,
    length: int = 128,
    seed: int = 0,
    noise: float = 0.3,
    distractor: bool = True,
) -> ShapesData:
    """Generates `n` noisy sequences, each with one class pattern at a random time.

    The class is the pattern's shape (`SEQUENCE_CLASS_NAMES`: a smooth
    bump, a flat pulse, a chirp), `length // 8` steps long, with a random
    amplitude in [1, 1.5] and a random start. The distractor is a narrow
    downward spike at another time that carries no class information.

    Args:
        n: number of sequences.
        length: time steps per sequence. Defaults to `128`.
        seed: random seed. Defaults to `0`.
        noise: standard deviation of the Gaussian noise added everywhere.
            Defaults to `0.3`.
        distractor: add the class-independent spike. Defaults to `True`.

    Returns:
        A `ShapesData`: float32 images (N, length, 1), masks (N, length).

    Example:

    >>> data = make_sequences(4, length=64)
    >>> data.images.shape, data.masks.shape, data.class_names[0]
    ((4, 64, 1), (4, 64), 'bump')
    """
    rng = np.random.default_rng(seed)
    width = max(4, length // 8)
    signals = np.zeros((n, length), dtype=np.float64)
    masks = np.zeros((n, length), dtype=bool)
    labels = rng.integers(0, len(SEQUENCE_CLASS_NAMES), size=n)
    for i, label in enumerate(labels):
        start = int(rng.integers(0, length - width + 1))
        pattern = _sequence_pattern(int(label), width, rng) * rng.uniform(1.0, 1.5)
        signals[i, start : start + width] = pattern
        masks[i, start : start + width] = True
        # Drawn whether used or not, so that `distractor` changes nothing else.
        free = np.flatnonzero(~np.convolve(masks[i], np.ones(7), mode="same").astype(bool))
        spike = int(rng.choice(free[(free > 0) & (free < length - 1)]))
        depth = rng.uniform(1.0, 1.5)
        if distractor:
            signals[i, spike - 1 : spike + 2] = -depth * np.array([0.5, 1.0, 0.5])
    signals += noise * rng.standard_normal(signals.shape)
    images = signals[..., None].astype(np.float32)
    return ShapesData(images, labels.astype(np.int64), masks, SEQUENCE_CLASS_NAMES)


def _solid(label: int, grid: np.ndarray, centre: np.ndarray, r: float, axis: int) -> np.ndarray:
    """Boolean mask of the class's solid on the (3, S, S, S) coordinate grid."""
    offsets = np.abs(grid - centre[:, None, None, None])
    if label == 0:
        return (offsets**2).sum(axis=0) <= r**2
    if label == 1:  # a square slab, thin along `axis`
        return (np.delete(offsets, axis, axis=0).max(axis=0) <= r) & (offsets[axis] <= 0.3 * r)
    across = np.delete(offsets, axis, axis=0)
    return ((across**2).sum(axis=0) <= (0.45 * r) ** 2) & (offsets[axis] <= 1.3 * r)


def make_volumes(
    n: int,
    size: int = 16,
    seed: int = 0,
    noise: float = 0.25,
    distractor: bool = True,
) -> ShapesData:
    """Generates `n` noisy cubic volumes, each with one class solid at a random place.

    The class is the solid's shape (`VOLUME_CLASS_NAMES`: a ball, a square
    plate across a random axis, a rod along a random axis), of radius
    0.18–0.25 × `size` and intensity 0.6–1, in Gaussian noise. The
    distractor is a bright 2×2×2 dot elsewhere that carries no class
    information.

    Args:
        n: number of volumes.
        size: side of the volumes in voxels. Defaults to `16`.
        seed: random seed. Defaults to `0`.
        noise: standard deviation of the Gaussian noise added everywhere.
            Defaults to `0.25`.
        distractor: add the class-independent dot. Defaults to `True`.

    Returns:
        A `ShapesData`: float32 images (N, size, size, size, 1), masks
        (N, size, size, size).

    Example:

    >>> data = make_volumes(2, size=12)
    >>> data.images.shape, data.masks.shape, data.class_names
    ((2, 12, 12, 12, 1), (2, 12, 12, 12), ('ball', 'plate', 'rod'))
    """
    rng = np.random.default_rng(seed)
    grid = np.indices((size, size, size), dtype=np.float64)
    volumes = np.zeros((n, size, size, size), dtype=np.float64)
    masks = np.zeros((n, size, size, size), dtype=bool)
    labels = rng.integers(0, len(VOLUME_CLASS_NAMES), size=n)
    for i, label in enumerate(labels):
        radius = rng.uniform(0.18, 0.25) * size
        reach = 1.3 * radius  # the rod's half length, the farthest any solid reaches
        centre = rng.uniform(reach, size - 1 - reach, size=3)
        masks[i] = _solid(int(label), grid, centre, radius, int(rng.integers(0, 3)))
        volumes[i][masks[i]] = rng.uniform(0.6, 1.0)
        # Drawn whether used or not, so that `distractor` changes nothing else.
        near = np.pad(masks[i], 2)
        corners = rng.integers(0, size - 1, size=(50, 3))
        brightness = rng.uniform(0.8, 1.0)
        for d, h, w in corners:
            if not near[d : d + 6, h : h + 6, w : w + 6].any():
                break
        if distractor:
            volumes[i, d : d + 2, h : h + 2, w : w + 2] = brightness
    volumes += noise * rng.standard_normal(volumes.shape)
    images = volumes[..., None].astype(np.float32)
    return ShapesData(images, labels.astype(np.int64), masks, VOLUME_CLASS_NAMES)
