"""Heatmap overlays and captioned grids: numpy, matplotlib colormaps and Pillow."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from keras import ops
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


# TensorBoard fits every image to its card: about 400 px wide in the IMAGES
# dashboard and the time-series view at their default sizes (measured in Chromium,
# see tests/test_browser.py). Captions are sized to stay >= 11 px at that width.
CARD_WIDTH = 400
CAPTION_PX = 12


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class _Layout:
    """Pixel geometry of a captioned grid."""

    cell_h: int
    cell_w: int
    per_group: int
    columns: int
    font_size: int
    pad: int = 4

    @property
    def group_w(self) -> int:
        return self.per_group * self.cell_w + (self.per_group - 1) * self.pad

    @property
    def width(self) -> int:
        return self.columns * (self.group_w + 2 * self.pad)

    @property
    def line_h(self) -> int:
        return self.font_size + 4

    @property
    def row_h(self) -> int:
        # Two caption lines under each row of cells.
        return self.cell_h + 2 * self.line_h + 4 + 2 * self.pad

    @property
    def header_h(self) -> int:
        return self.line_h + 6


def _layout(
    rows: Sequence[Sequence[np.ndarray]],
    min_cell: int,
    columns: int | None,
    headers: Sequence[str] | None,
    card_width: int,
) -> _Layout:
    height, width = rows[0][0].shape[:2]
    scale = max(1, math.ceil(min_cell / max(height, width)))
    per_group = max(len(group) for group in rows)
    if headers is not None:
        if len(headers) != per_group:
            raise ValueError(f"{len(headers)} headers for groups of {per_group} images.")
        columns = 1
    columns = columns or max(1, math.ceil(math.sqrt(len(rows) / per_group)))
    layout = _Layout(height * scale, width * scale, per_group, columns, CAPTION_PX)
    # TensorBoard shrinks a wide image to the card: enlarge the text to match.
    font_size = max(CAPTION_PX, math.ceil(CAPTION_PX * layout.width / card_width))
    return _Layout(height * scale, width * scale, per_group, columns, font_size)


def captioned_grid(
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    min_cell: int = 112,
    columns: int | None = None,
    headers: Sequence[str] | None = None,
    card_width: int = CARD_WIDTH,
) -> np.ndarray:
    """Lays out image groups (e.g. original | overlay) with a caption under each group.

    Captions take up to two lines (split at " · " where they can) and are
    drawn large enough to read at least 11 px high once TensorBoard fits the
    whole grid to a card `card_width` pixels wide.

    Args:
        rows: one sequence of uint8 (H, W, 3) images per group, shown side by side.
        captions: one caption per group.
        min_cell: small images are enlarged (nearest neighbour) to at least this
            many pixels, so they and their captions are readable in TensorBoard.
        columns: groups per grid row. Defaults to about the square root of the
            group count, and to 1 with `headers`.
        headers: column titles drawn above the first row, one per image of a
            group (a comparison table). Defaults to `None`: no header.
        card_width: the width TensorBoard shows the image at. Defaults to
            `CARD_WIDTH` (TensorBoard's default card).

    Returns:
        uint8 (H', W', 3): the whole grid as one image.
    """
    if len(rows) != len(captions):
        raise ValueError(f"{len(rows)} image groups but {len(captions)} captions.")
    layout = _layout(rows, min_cell, columns, headers, card_width)
    return _draw(layout, rows, captions, headers, math.ceil(len(rows) / layout.columns))


def table_pages(
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    headers: Sequence[str],
    max_aspect: float = 2.0,
    min_cell: int = 112,
    card_width: int = CARD_WIDTH,
) -> np.ndarray:
    """A comparison table (one row per group, `headers` over the columns) split into pages.

    Each page is at most `max_aspect` times as tall as it is wide, so
    TensorBoard's card shows it large enough to read; every page has the
    same size (the last one is padded with white).

    Returns:
        uint8 (pages, H', W', 3).
    """
    if len(rows) != len(captions):
        raise ValueError(f"{len(rows)} image groups but {len(captions)} captions.")
    layout = _layout(rows, min_cell, 1, headers, card_width)
    per_page = max(1, math.floor((max_aspect * layout.width - layout.header_h) / layout.row_h))
    pages = math.ceil(len(rows) / per_page)
    per_page = math.ceil(len(rows) / pages)  # balanced pages
    return np.stack(
        [
            _draw(layout, rows[i : i + per_page], captions[i : i + per_page], headers, per_page)
            for i in range(0, len(rows), per_page)
        ]
    )


def _draw(
    layout: _Layout,
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    headers: Sequence[str] | None,
    grid_rows: int,
) -> np.ndarray:
    pad, font = layout.pad, _font(layout.font_size)
    header_h = layout.header_h if headers is not None else 0
    canvas = Image.new("RGB", (layout.width, header_h + grid_rows * layout.row_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, header in enumerate(headers or ()):
        left = pad + k * (layout.cell_w + pad)
        draw.text(
            (left, 3), _fit_text(draw, header, font, layout.cell_w), fill=(0, 0, 0), font=font
        )
    for index, (group, caption) in enumerate(zip(rows, captions, strict=True)):
        top = header_h + (index // layout.columns) * layout.row_h + pad
        left = (index % layout.columns) * (layout.group_w + 2 * pad) + pad
        for k, image in enumerate(group):
            tile = Image.fromarray(image).resize(
                (layout.cell_w, layout.cell_h), Image.Resampling.NEAREST
            )
            canvas.paste(tile, (left + k * (layout.cell_w + pad), top))
        for line, text in enumerate(_wrap(draw, caption, font, layout.group_w)):
            y = top + layout.cell_h + 3 + line * layout.line_h
            draw.text((left, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, lines: int = 2) -> list[str]:
    """Breaks `text` at spaces into at most `lines` lines of `width` pixels (then an ellipsis)."""
    out = [""]
    for word in text.split(" "):
        candidate = f"{out[-1]} {word}" if out[-1] else word
        if out[-1] and draw.textlength(candidate, font=font) > width and len(out) < lines:
            out.append(word)
        else:
            out[-1] = candidate
    return [_fit_text(draw, line, font, width) for line in out]


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shortens `text` with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
