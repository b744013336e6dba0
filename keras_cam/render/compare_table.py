"""The method comparison table (`cam/compare`), split into pages that read on a default card.

TensorBoard's time-series card fits an image into about 407 × 215 px
(`overlay.CARD_BOX`). Rows of 64-px images leave room for three rows and
one line of text in that height, so the table spends no height on
captions or colour bars: each row's caption is a text column on its left,
the method columns share ONE colour gradient (drawn in the header's left
corner, from 0), and each method's header says the raw value drawn at full
colour ("gradcam 0-0.042"), since the methods' units differ. The original
image is a column of its own only where it costs no row: a layout that
fits more rows per page without it shows the overlays alone (each is the
image under its map; the per-method grids show the originals).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from keras_cam.render.overlay import (
    CARD_BOX,
    MIN_IMAGE_PX,
    MIN_TEXT_PX,
    fit_text,
    gradient_strip,
    load_font,
    wrap_text,
)


@dataclass(frozen=True)
class _Table:
    """Pixel geometry of one page: a caption column, then one column per picture."""

    cell_h: int
    cell_w: int
    font_size: int
    header_lines: int  # 1: "name range" on one line; 2: name over range
    caption_w: int
    column_w: tuple[int, ...]  # per picture column (the original's first, if shown)

    @property
    def pad(self) -> int:
        return max(2, self.font_size // 6)

    @property
    def line_h(self) -> int:
        return self.font_size + self.pad

    @property
    def header_h(self) -> int:
        return self.header_lines * self.line_h

    @property
    def row_h(self) -> int:
        return self.cell_h + self.pad

    @property
    def width(self) -> int:
        return self.pad + self.caption_w + sum(w + self.pad for w in self.column_w) + self.pad

    def height(self, rows: int) -> int:
        return self.header_h + rows * self.row_h

    def shown_scale(self, rows: int, box: tuple[int, int]) -> float:
        """How much TensorBoard shrinks a page of `rows` rows to fit `box` (never enlarges)."""
        return min(1.0, box[0] / self.width, box[1] / self.height(rows))


_WIDEST_RANGE = "0-8.8e-88"
"""The widest label the callback gives a range (`f"0-{top:.2g}"`), for a layout that stays put."""


def _headers(
    names: Sequence[str], ranges: Mapping[str, str], lines: int, with_original: bool
) -> list[list[str]]:
    """Each picture column's header lines: the method's name and the range of its colours."""
    heads = [[name, ranges[name]] if lines == 2 else [f"{name} {ranges[name]}"] for name in names]
    return [["image"], *heads] if with_original else heads


def compare_pages(
    originals: np.ndarray,
    pictures: Mapping[str, np.ndarray],
    captions: Sequence[str],
    ranges: Mapping[str, str],
    colormap: str,
    *,
    min_cell: int = MIN_IMAGE_PX,
    box: tuple[int, int] = CARD_BOX,
    min_image_px: int = MIN_IMAGE_PX,
) -> np.ndarray:
    """The comparison table: one row per probe image, one column per method, in pages.

    Each page holds as many rows as fit in `box` with text at least
    `MIN_TEXT_PX` and pictures at least `min_image_px` pixels once
    TensorBoard has fitted it (the text is drawn larger on pages that will
    be shrunk). The original images get a column when that costs no row.
    All pages have the same size; the last ones hold one row fewer at most.
    The pages do not depend on the `ranges` (their headers are measured at
    the widest a `"0-{:.2g}"` label can be), so page k shows the same probe
    images at every event.

    Args:
        originals: (N, h, w, 3) uint8, the probe as displayed.
        pictures: method name -> (N, h, w, 3) uint8 overlays, in column order.
        captions: one caption per probe image (wrapped in the left column).
        ranges: method name -> the scale of its colours, for each method of
            `pictures`: e.g. `"0-0.042"` (0 at the gradient's left end, the
            value at its right end), or `"per map"`.
        colormap: the matplotlib colormap of the overlays, drawn as the legend.
        min_cell: small pictures are enlarged (nearest neighbour) to at least
            this many pixels. Defaults to `MIN_IMAGE_PX`.
        box: the (width, height) TensorBoard fits the image into. Defaults
            to `CARD_BOX`.
        min_image_px: the smallest picture worth showing, in displayed pixels.
            Defaults to `MIN_IMAGE_PX`.

    Returns:
        uint8 (pages, H, W, 3).

    Example:

    >>> pages = compare_pages(images, {"gradcam": a, "layercam": b},  # doctest: +SKIP
    ...                       captions, {"gradcam": "0-0.42", "layercam": "0-1.3"}, "jet")
    """
    count = len(originals)
    if len(captions) != count or any(len(p) != count for p in pictures.values()):
        raise ValueError(
            f"compare_pages needs one caption and one picture per method for each of the "
            f"{count} images, got {len(captions)} captions and "
            f"{[len(p) for p in pictures.values()]} pictures."
        )
    if missing := [name for name in pictures if name not in ranges]:
        raise ValueError(f"compare_pages needs the range of every method; {missing} have none.")
    height, width = next(iter(pictures.values())).shape[1:3]
    factor = max(1, math.ceil(min_cell / max(height, width)))
    cell_h, cell_w = height * factor, width * factor
    shown_cell = min(max(cell_h, cell_w), min_image_px)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    # The layout is measured with the widest range a "0-{:.2g}" label can have, so the
    # pages (and which probe images each holds) stay the same from event to event.
    widest = {name: _WIDEST_RANGE for name in pictures}

    @functools.cache
    def table(font_size: int, header_lines: int, with_original: bool) -> _Table:
        font = load_font(font_size)

        def width(line: str) -> int:
            return math.ceil(measure.textlength(line, font=font)) + font_size // 2

        names = list(pictures)
        columns = tuple(
            max(cell_w, *(width(line) for line in (*head, *head_widest)))
            for head, head_widest in zip(
                _headers(names, ranges, header_lines, with_original),
                _headers(names, widest, header_lines, with_original),
                strict=True,
            )
        )
        return _Table(cell_h, cell_w, font_size, header_lines, 6 * font_size, columns)

    def smallest_readable(rows: int, header_lines: int, with_original: bool):
        for font_size in range(MIN_TEXT_PX, 4 * MIN_TEXT_PX):
            layout = table(font_size, header_lines, with_original)
            scale = layout.shown_scale(rows, box)
            if font_size * scale >= MIN_TEXT_PX:
                break
        readable = font_size * scale >= MIN_TEXT_PX and max(cell_h, cell_w) * scale >= shown_cell
        return layout, scale, readable

    best = ((1, False, 0.0), 1, 2, False)  # one row a page when nothing reads well
    for with_original in (True, False):
        for header_lines in (1, 2):
            for rows in range(1, count + 1):
                layout, scale, readable = smallest_readable(rows, header_lines, with_original)
                if not readable:
                    break  # more rows only shrink the page further
                # The most rows per page whose cells stay readable; then the original
                # images shown; then the largest.
                key = (rows, with_original, scale)
                if key > best[0]:
                    best = (key, rows, header_lines, with_original)
    _, rows, header_lines, with_original = best
    pages = math.ceil(count / rows)
    rows = math.ceil(count / pages)  # balanced pages: a row fewer at most on some
    layout, _, _ = smallest_readable(rows, header_lines, with_original)
    headers = _headers(list(pictures), ranges, header_lines, with_original)
    columns = [originals, *pictures.values()] if with_original else list(pictures.values())
    return np.stack(
        [
            _draw_page(
                layout,
                [[column[i] for column in columns] for i in page],
                [captions[i] for i in page],
                headers,
                rows,
                colormap,
            )
            for page in np.array_split(np.arange(count), pages)
        ]
    )


def _draw_page(
    layout: _Table,
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[str],
    headers: Sequence[Sequence[str]],
    page_rows: int,
    colormap: str,
) -> np.ndarray:
    pad, line_h, font = layout.pad, layout.line_h, load_font(layout.font_size)
    canvas = Image.new("RGB", (layout.width, layout.height(page_rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    lefts = np.cumsum([2 * pad + layout.caption_w, *(w + pad for w in layout.column_w)])[:-1]
    # The shared gradient, on the line of the ranges it reads with: "0" on its left.
    legend_y = (layout.header_lines - 1) * line_h
    zero_w = math.ceil(draw.textlength("0", font=font)) + 3
    draw.text((pad, legend_y - pad), "0", fill=(0, 0, 0), font=font)
    gradient = gradient_strip(colormap, layout.caption_w - zero_w - 2 * pad, layout.font_size)
    canvas.paste(gradient, (pad + zero_w, legend_y + 1))
    for left, width, head in zip(lefts, layout.column_w, headers, strict=True):
        for line, text in enumerate(head):
            text = fit_text(draw, text, font, width)
            draw.text((left, line * line_h - pad), text, fill=(0, 0, 0), font=font)
    lines = max(1, layout.cell_h // line_h)
    for r, (cells, caption) in enumerate(zip(rows, captions, strict=True)):
        top = layout.header_h + r * layout.row_h + pad
        for line, text in enumerate(_caption_lines(draw, caption, font, layout.caption_w, lines)):
            draw.text((pad, top + line * line_h - pad), text, fill=(0, 0, 0), font=font)
        for left, image in zip(lefts, cells, strict=True):
            tile = Image.fromarray(image).resize(
                (layout.cell_w, layout.cell_h), Image.Resampling.NEAREST
            )
            canvas.paste(tile, (int(left), top))
    return np.asarray(canvas)


def _caption_lines(draw: ImageDraw.ImageDraw, caption: str, font, width: int, lines: int):
    """`caption` in at most `lines` lines of `width` px, a new line at each " · " part."""
    out = [
        text for part in caption.split(" · ") for text in wrap_text(draw, part, font, width, lines)
    ]
    if len(out) > lines:
        out = [*out[: lines - 1], fit_text(draw, " ".join(out[lines - 1 :]), font, width)]
    return out
