"""Heatmap overlays and captioned grids: numpy, matplotlib colormaps and Pillow."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont


@functools.lru_cache(maxsize=16)
def _colormap_table(name: str) -> np.ndarray:
    """A 256-entry uint8 RGB table: one lookup per pixel instead of a float colormap call."""
    try:
        colormap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(
            f"Unknown colormap {name!r}; use a matplotlib colormap name such as "
            f"'jet', 'turbo', 'inferno' or 'viridis'."
        ) from None
    return (colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
    """Display images (uint8 0–255 or float) as uint8 RGB (N, H, W, 3).

    Float images are read as 0–1, or as 0–255 when their maximum exceeds 1
    (a common convention for `float32` photos). Grayscale (N, H, W) or
    (N, H, W, 1) is repeated over three channels; an alpha channel is dropped.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Images must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4, got {images.shape}."
        )
    if images.dtype != np.uint8:
        values = np.nan_to_num(images.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        images = (np.clip(values, 0.0, 255.0) + 0.5).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images[..., :3]


def _resize_maps(heatmaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if heatmaps.shape[1:3] == size:
        return heatmaps
    # Imported here so that `keras_cam.overlay` (and the package) import without Keras.
    from keras import ops

    resized = ops.image.resize(
        heatmaps[..., None], size, interpolation="bilinear", data_format="channels_last"
    )
    return ops.convert_to_numpy(resized)[..., 0]


def colorize(heatmaps: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Maps heatmaps in [0, 1] (N, H, W) to uint8 RGB (N, H, W, 3); NaN counts as 0."""
    heatmaps = np.clip(np.nan_to_num(np.asarray(heatmaps, dtype=np.float32)), 0.0, 1.0)
    return _colormap_table(colormap)[(heatmaps * 255.0 + 0.5).astype(np.uint8)]


def overlay(
    images: np.ndarray,
    heatmaps: np.ndarray,
    alpha: float = 0.4,
    colormap: str = "jet",
) -> np.ndarray:
    """Blends colourised heatmaps onto display images.

    `out = (1 - alpha) · image + alpha · colormap(heatmap)`, per pixel, in uint8.
    Heatmaps of another size are resized bilinearly to the images' size.

    Args:
        images: (N, H, W, C) or (N, H, W); uint8 0–255 or float 0–1.
        heatmaps: (N, h, w) values in [0, 1] (e.g. `CAMResult.heatmaps`).
        alpha: weight of the heatmap colour. Defaults to `0.4`.
        colormap: a matplotlib colormap name. Defaults to `"jet"`.

    Returns:
        uint8 array (N, H, W, 3).

    Example:

    >>> result = keras_cam.explain(model, images)                    # doctest: +SKIP
    >>> keras_cam.overlay(images, result.heatmaps).shape              # doctest: +SKIP
    (8, 224, 224, 3)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    rgb = to_rgb_uint8(images)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim == 4 and heatmaps.shape[-1] == 1:
        heatmaps = heatmaps[..., 0]
    if heatmaps.ndim != 3 or heatmaps.shape[0] != rgb.shape[0]:
        raise ValueError(
            f"heatmaps must be (N, h, w) with N = {rgb.shape[0]} images, got {heatmaps.shape}."
        )
    colours = colorize(_resize_maps(heatmaps, rgb.shape[1:3]), colormap)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    return (blended + 0.5).astype(np.uint8)


def draw_outline(image: np.ndarray, mask: np.ndarray, color=(255, 255, 255)) -> np.ndarray:
    """`image` (H, W, 3) uint8 with the boundary of `mask` (any size, nearest) drawn in `color`."""
    height, width = image.shape[:2]
    mask = np.asarray(mask, dtype=bool)
    rows = np.arange(height) * mask.shape[0] // height
    cols = np.arange(width) * mask.shape[1] // width
    mask = mask[rows][:, cols]
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    out = image.copy()
    out[mask & ~inner] = color
    return out


def draw_box(image: np.ndarray, box: Sequence[float], color=(255, 255, 255)) -> np.ndarray:
    """`image` (H, W, 3) uint8 with the box (x0, y0, x1, y1), in pixels, drawn in `color`."""
    canvas = Image.fromarray(image)
    x0, y0, x1, y1 = (float(v) for v in box)
    ImageDraw.Draw(canvas).rectangle((x0, y0, x1 - 1, y1 - 1), outline=tuple(color))
    return np.asarray(canvas)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def captioned_grid(
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    min_cell: int = 112,
    columns: int | None = None,
    headers: Sequence[str] | None = None,
) -> np.ndarray:
    """Lays out image groups (e.g. original | overlay) with a caption under each group.

    Args:
        rows: one sequence of uint8 (H, W, 3) images per group, shown side by side.
        captions: one caption per group.
        min_cell: small images are enlarged (nearest neighbour) to at least this
            many pixels, so they and their captions are readable in TensorBoard.
        columns: groups per grid row. Defaults to about the square root of the
            group count, and to 1 with `headers`.
        headers: column titles drawn above the first row, one per image of a
            group (a comparison table). Defaults to `None`: no header.

    Returns:
        uint8 (H', W', 3): the whole grid as one image.
    """
    if len(rows) != len(captions):
        raise ValueError(f"{len(rows)} image groups but {len(captions)} captions.")
    height, width = rows[0][0].shape[:2]
    scale = max(1, math.ceil(min_cell / max(height, width)))
    cell_h, cell_w = height * scale, width * scale
    per_group = max(len(group) for group in rows)
    if headers is not None:
        if len(headers) != per_group:
            raise ValueError(f"{len(headers)} headers for groups of {per_group} images.")
        columns = 1
    columns = columns or max(1, math.ceil(math.sqrt(len(rows) / per_group)))
    grid_rows = math.ceil(len(rows) / columns)
    font_size = max(10, min(16, cell_w // 9))
    font = _font(font_size)
    caption_h = font_size + 8
    header_h = caption_h if headers is not None else 0
    pad = 4
    group_w = per_group * cell_w + (per_group - 1) * pad
    canvas = Image.new(
        "RGB",
        (columns * (group_w + 2 * pad), header_h + grid_rows * (cell_h + caption_h + 2 * pad)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    for k, header in enumerate(headers or ()):
        left = pad + k * (cell_w + pad)
        draw.text((left, 4), _fit_text(draw, header, font, cell_w), fill=(0, 0, 0), font=font)
    for index, (group, caption) in enumerate(zip(rows, captions, strict=True)):
        top = header_h + (index // columns) * (cell_h + caption_h + 2 * pad) + pad
        left = (index % columns) * (group_w + 2 * pad) + pad
        for k, image in enumerate(group):
            tile = Image.fromarray(image).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (left + k * (cell_w + pad), top))
        text = _fit_text(draw, caption, font, group_w)
        draw.text((left, top + cell_h + 3), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shortens `text` with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
