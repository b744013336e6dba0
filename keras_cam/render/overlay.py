"""Heatmap overlays and captioned grids: numpy, scipy, matplotlib colormaps and Pillow."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage


@functools.lru_cache(maxsize=16)
def colormap_table(name: str) -> np.ndarray:
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


def resize_maps(maps: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Linearly resizes float maps (N, *spatial) to `size`, on the host.

    The convention of `keras_cam.core.spatial.resize` (pixel centres, clamped at the
    edges), through `scipy.ndimage.zoom`. Display code runs on the callback's
    worker thread: scipy there, not the backend's ops, which under JAX or PyTorch
    would dispatch (and on first use compile) on that thread and compete with
    training.
    """
    maps = np.asarray(maps, dtype=np.float32)
    size = tuple(int(s) for s in size)
    if maps.shape[1:] == size:
        return maps
    factors = (1.0, *(t / n for t, n in zip(size, maps.shape[1:], strict=True)))
    return ndimage.zoom(maps, factors, order=1, mode="nearest", grid_mode=True)


def colorize(heatmaps: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Maps heatmaps in [0, 1] (N, H, W) to uint8 RGB (N, H, W, 3); NaN counts as 0."""
    heatmaps = np.clip(np.nan_to_num(np.asarray(heatmaps, dtype=np.float32)), 0.0, 1.0)
    return colormap_table(colormap)[(heatmaps * 255.0 + 0.5).astype(np.uint8)]


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
    colours = colorize(resize_maps(heatmaps, rgb.shape[1:3]), colormap)
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


def draw_marks(image: np.ndarray, overlaid: np.ndarray, marks: Any) -> tuple[np.ndarray, ...]:
    """`image` and its overlay with a task target's `Marks` drawn on (`targets.tasks.Marks`).

    The outline (a mask's boundary) goes on the image, the box on the overlay.
    """
    if marks.outline is not None:
        image = draw_outline(image, marks.outline)
    if marks.box is not None:
        overlaid = draw_box(overlaid, marks.box)
    return image, overlaid


def draw_border(image: np.ndarray, color: Sequence[int], width: int = 3) -> np.ndarray:
    """`image` (H, W, 3) uint8 with a `width`-pixel frame of `color` inside its edge."""
    out = image.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = color, color, color, color
    return out


# TensorBoard's time-series view (its default dashboard) fits each image into a
# box of 404.5 × 215 px on a default card (measured in Chromium with
# TensorBoard 2.21, window 1500 × 1000, tests/test_browser.py), scaling it up
# or down to fill the box. Pages are laid out so that, fitted into that box,
# captions are at least 11 px high and images at least 64 px.
CARD_BOX = (404, 215)
MIN_TEXT_PX = 12  # a font this size draws mixed-case captions with >= 11 px of ink
MIN_IMAGE_PX = 64


@functools.lru_cache(maxsize=64)
def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at `size` pixels (scalable, no font file needed)."""
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class ColourBar:
    """A colour scale drawn under a page: the colormap from `low` (left) to `high` (right).

    Attributes:
        colormap: the matplotlib colormap name of the overlays.
        low: the label of the scale's bottom (e.g. `"0"`).
        high: the label of its top (e.g. `"0.031"`, the raw map value shown
            at full colour).
        note: what the top is (e.g. `"probe max"`), added after `high` where
            the bar keeps at least half the width. Defaults to `""`.
    """

    colormap: str
    low: str
    high: str
    note: str = ""


Legend = ColourBar | None
"""One bar under the whole page, or none."""


@dataclass(frozen=True)
class _Layout:
    """Pixel geometry of a captioned grid: `columns` groups of `per_group` cells per row."""

    cell_h: int
    cell_w: int
    per_group: int
    columns: int
    font_size: int
    lines: int = 2
    headers: int = 0  # lines of column headers: 0 (none), 1, or 2 when a title is too wide
    pad: int = 4
    legend: int = 0  # lines of colour bars: 0 (none) or 1

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
        return self.cell_h + self.lines * self.line_h + 4 + 2 * self.pad

    @property
    def header_h(self) -> int:
        return self.headers * self.line_h + 6 if self.headers else 0

    @property
    def legend_h(self) -> int:
        return self.legend * self.line_h + 6 if self.legend else 0

    def height(self, rows: int) -> int:
        return self.header_h + rows * self.row_h + self.legend_h

    def shown_scale(self, rows: int, box: tuple[int, int]) -> float:
        """How much TensorBoard shrinks a page of `rows` rows to fit `box` (never enlarges)."""
        return min(1.0, box[0] / self.width, box[1] / self.height(rows))


def _cell_size(groups: Sequence[Sequence[np.ndarray]], min_cell: int) -> tuple[int, int]:
    height, width = groups[0][0].shape[:2]
    scale = max(1, math.ceil(min_cell / max(height, width)))
    return height * scale, width * scale


def _check(groups, captions, headers) -> int:
    if len(groups) != len(captions):
        raise ValueError(f"{len(groups)} image groups but {len(captions)} captions.")
    per_group = max(len(group) for group in groups)
    if headers is not None and len(headers) != per_group:
        raise ValueError(f"{len(headers)} headers for groups of {per_group} images.")
    return per_group


def captioned_grid(
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    min_cell: int = 112,
    columns: int | None = None,
    headers: Sequence[str] | None = None,
    font_size: int = 14,
) -> np.ndarray:
    """Lays out image groups (e.g. original | overlay) with a caption under each group.

    Args:
        rows: one sequence of uint8 (H, W, 3) images per group, shown side by side.
        captions: one caption per group (up to two lines, then an ellipsis).
        min_cell: small images are enlarged (nearest neighbour) to at least this
            many pixels, so they and their captions are readable in TensorBoard.
        columns: groups per grid row. Defaults to about the square root of the
            group count, and to 1 with `headers`.
        headers: column titles drawn above the first row, one per image of a
            group (a comparison table). Defaults to `None`: no header.
        font_size: caption height in pixels. Defaults to `14`.

    Returns:
        uint8 (H', W', 3): the whole grid as one image.
    """
    per_group = _check(rows, captions, headers)
    if headers is not None:
        columns = 1
    columns = columns or max(1, math.ceil(math.sqrt(len(rows) / per_group)))
    layout = _Layout(
        *_cell_size(rows, min_cell), per_group, columns, font_size, headers=int(headers is not None)
    )
    return _draw(layout, rows, captions, headers, math.ceil(len(rows) / columns))


def card_pages(
    groups: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    headers: Sequence[str] | None = None,
    *,
    min_cell: int = 112,
    lines: int = 2,
    box: tuple[int, int] = CARD_BOX,
    min_image_px: int = MIN_IMAGE_PX,
    legend: Legend = None,
) -> np.ndarray:
    """Captioned groups split into pages that read well on a default TensorBoard card.

    TensorBoard fits every image into its card, so one tall grid becomes a
    thumbnail. Here each page holds as many groups as fit in `box` with
    captions at least `MIN_TEXT_PX` and cells at least `min_image_px`
    pixels once fitted (the text is drawn larger when the page will be
    shrunk). All pages have the same size; the last is padded with white.
    TensorBoard shows the pages as the samples of one tag.

    Args:
        groups: one sequence of uint8 (H, W, 3) images per group (e.g.
            original | overlay, or one table row).
        captions: one caption per group.
        headers: column titles over each page (a table: one group per row).
            Defaults to `None`.
        min_cell: small images are enlarged (nearest neighbour) to at least
            this many pixels. Defaults to `112`.
        lines: caption lines under each group. Defaults to `2`.
        box: the (width, height) TensorBoard fits the image into. Defaults to
            `CARD_BOX`.
        min_image_px: the smallest cell worth showing, in displayed pixels.
            Defaults to `MIN_IMAGE_PX`.
        legend: a `ColourBar` drawn under the whole page. Defaults to `None`.

    Returns:
        uint8 (pages, H', W', 3).

    Example:

    >>> pages = card_pages([(image, heat)] * 16, ["caption"] * 16)  # doctest: +SKIP
    >>> pages.shape                                                 # doctest: +SKIP
    (4, 344, 480, 3)
    """
    per_group = _check(groups, captions, headers)
    cell_h, cell_w = _cell_size(groups, min_cell)
    shown_cell = min(max(cell_h, cell_w), min_image_px)

    @functools.cache
    def header_lines(font_size: int) -> int:
        if headers is None:
            return 0
        font, draw = load_font(font_size), ImageDraw.Draw(Image.new("RGB", (1, 1)))
        return 1 + any(draw.textlength(header, font=font) > cell_w for header in headers)

    def smallest_readable_font(columns: int, rows: int) -> tuple[_Layout, float]:
        for font_size in range(12, 40):
            layout = _Layout(
                cell_h,
                cell_w,
                per_group,
                columns,
                font_size,
                lines,
                header_lines(font_size),
                legend=int(legend is not None),
            )
            scale = layout.shown_scale(rows, box)
            if font_size * scale >= MIN_TEXT_PX:
                break
        return layout, scale

    best: tuple[tuple[int, float], _Layout, int] | None = None
    for columns in [1] if headers is not None else range(1, 5):
        for rows in range(1, math.ceil(len(groups) / columns) + 1):
            layout, scale = smallest_readable_font(columns, rows)
            readable = (
                layout.font_size * scale >= MIN_TEXT_PX
                and max(cell_h, cell_w) * scale >= shown_cell
            )
            # The most groups per page whose cells stay readable; then the largest.
            key = (min(rows * columns, len(groups)) if readable else 0, scale)
            if best is None or key > best[0]:
                best = (key, layout, rows)
    _, layout, rows = best
    per_page = min(len(groups), rows * layout.columns)
    pages = math.ceil(len(groups) / per_page)
    per_page = math.ceil(len(groups) / pages)  # balanced pages
    rows = math.ceil(per_page / layout.columns)
    layout, _ = smallest_readable_font(layout.columns, rows)  # fewer rows: smaller text suffices
    return np.stack(
        [
            _draw(
                layout, groups[i : i + per_page], captions[i : i + per_page], headers, rows, legend
            )
            for i in range(0, len(groups), per_page)
        ]
    )


def _draw(
    layout: _Layout,
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    headers: Sequence[str] | None,
    grid_rows: int,
    legend: Legend = None,
) -> np.ndarray:
    pad, font = layout.pad, load_font(layout.font_size)
    canvas = Image.new("RGB", (layout.width, layout.height(grid_rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, header in enumerate(headers or ()):
        left = pad + k * (layout.cell_w + pad)
        for line, text in enumerate(wrap_text(draw, header, font, layout.cell_w, layout.headers)):
            draw.text((left, 3 + line * layout.line_h), text, fill=(0, 0, 0), font=font)
    for index, (group, caption) in enumerate(zip(rows, captions, strict=True)):
        top = layout.header_h + (index // layout.columns) * layout.row_h + pad
        left = (index % layout.columns) * (layout.group_w + 2 * pad) + pad
        for k, image in enumerate(group):
            tile = Image.fromarray(image).resize(
                (layout.cell_w, layout.cell_h), Image.Resampling.NEAREST
            )
            canvas.paste(tile, (left + k * (layout.cell_w + pad), top))
        for line, text in enumerate(wrap_text(draw, caption, font, layout.group_w, layout.lines)):
            y = top + layout.cell_h + 3 + line * layout.line_h
            draw.text((left, y), text, fill=(0, 0, 0), font=font)
    if legend is not None:
        box = (pad, canvas.height - layout.legend_h + 3, layout.width - pad)
        _draw_colour_bar(canvas, legend, box, layout.font_size)
    return np.asarray(canvas)


def gradient_strip(colormap: str, width: int, height: int) -> Image.Image:
    """The colormap from 0 (left) to 1 (right) as a `width`×`height` image."""
    table = colormap_table(colormap)[np.linspace(0, 255, width).round().astype(int)]
    return Image.fromarray(np.repeat(table[None], height, axis=0))


def _draw_colour_bar(
    canvas: Image.Image, bar: ColourBar, box: tuple[int, int, int], font_size: int
) -> None:
    """`low` [colour gradient] `high` from x0 to x1 on one text line starting at y."""
    x0, y, x1 = box
    draw, font = ImageDraw.Draw(canvas), load_font(font_size)
    low_w = math.ceil(draw.textlength(bar.low, font=font)) + 4
    high = f"{bar.high} ({bar.note})" if bar.note else bar.high
    if draw.textlength(high, font=font) + low_w + 4 > (x1 - x0) / 2:
        high = bar.high
    high_w = math.ceil(draw.textlength(high, font=font)) + 4
    left, gradient_w = x0 + low_w + 1, max(8, x1 - x0 - low_w - high_w - 2)
    canvas.paste(gradient_strip(bar.colormap, gradient_w, font_size), (left, y + 1))
    draw.rectangle((left - 1, y, left + gradient_w, y + font_size + 1), outline=(0, 0, 0))
    draw.text((x0, y), bar.low, fill=(0, 0, 0), font=font)
    draw.text((x1 - draw.textlength(high, font=font), y), high, fill=(0, 0, 0), font=font)


def wrap_text(draw: ImageDraw.ImageDraw, text: str, font, width: int, lines: int = 2) -> list[str]:
    """Breaks `text` at spaces into at most `lines` lines of `width` pixels (then an ellipsis)."""
    out = [""]
    for word in text.split(" "):
        candidate = f"{out[-1]} {word}" if out[-1] else word
        if out[-1] and draw.textlength(candidate, font=font) > width and len(out) < lines:
            out.append(word)
        else:
            out[-1] = candidate
    return [fit_text(draw, line, font, width) for line in out]


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shortens `text` with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
