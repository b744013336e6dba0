"""One picture per 1-D sequence or 3-D volume with its map, for the 2-D grids and timelines.

The callback's grids (`overlay.card_pages`) lay out uint8 RGB cells; a 2-D
image with its overlay is such a cell already. Here a sequence `(T, C)` with
its map `(T,)` becomes a line plot over a coloured band, and a volume
`(D, H, W, C)` with its map `(D, H, W)` the three orthogonal slices through
the map's peak, so that every grid, timeline and gallery of the callback
shows 1-D and 3-D models unchanged. Pure numpy and Pillow (no matplotlib
figure): a few milliseconds per cell, drawn on the callback's worker thread.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from PIL import Image, ImageDraw

from keras_cam.render.overlay import (
    MIN_IMAGE_PX,
    colorize,
    draw_outline,
    load_font,
    overlay,
    to_rgb_uint8,
)

# A (original | map) pair of cells is about 400 px wide: TensorBoard's default
# card (overlay.CARD_BOX) shows it at nearly full size, text included.
SEQUENCE_SIZE = (96, 192)  # (height, width) of a sequence cell
PLOT_HEIGHT = 64
BAND_HEIGHT = 14
MAX_CHANNELS = 3
# Dark, distinct line colours for the first channels (matplotlib's tab10).
LINE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44))
PANEL = 60  # side of each slice panel of a volume cell
LABEL_HEIGHT = 14
SLICE_GAP = 6
SLICE_AXES = ("d", "h", "w")  # the volume axis each panel is a slice across
# A cell's lines, band and slice labels stay legible when TensorBoard shows it at
# least this wide (2/3 of its size): a grid page then holds fewer, larger cells.
CELL_READABLE_PX = 128


def band_values(values: np.ndarray, width: int) -> np.ndarray:
    """`values` (T,) resampled to `width` columns: the maximum of the steps each column covers.

    A column covering several steps shows their maximum, so a peak narrower
    than a column is never lost; with fewer steps than columns each step
    spans several columns (nearest neighbour).
    """
    values = np.asarray(values)
    starts = np.arange(width) * len(values) // width  # column x covers [starts[x], starts[x+1])
    return np.maximum.reduceat(values, starts) if len(values) >= width else values[starts]


def _check_sequence(signal: np.ndarray) -> np.ndarray:
    signal = np.asarray(signal)
    if signal.ndim == 1:
        signal = signal[:, None]
    if signal.ndim != 2 or len(signal) < 1:
        raise ValueError(
            f"A sequence must be (T, C) (time steps, channels) or (T,), got shape {signal.shape}."
        )
    return np.nan_to_num(signal.astype(np.float64))


def _check_map(heatmap: np.ndarray | None, rank: int, what: str) -> np.ndarray | None:
    if heatmap is None:
        return None
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != rank:
        raise ValueError(
            f"The heatmap of a {what} must have {rank} axis(es), got shape {heatmap.shape}; "
            f"pass one sample's map, e.g. result.heatmaps[i]."
        )
    return heatmap


def _line_points(channel: np.ndarray, width: int, top: int, height: int) -> list[tuple]:
    """The channel scaled to its own range, as polyline points in a `height`-pixel lane."""
    low, high = float(channel.min()), float(channel.max())
    scaled = (channel - low) / (high - low) if high > low else np.full_like(channel, 0.5)
    xs = np.linspace(0.0, width - 1.0, len(channel)) if len(channel) > 1 else np.array([0.0])
    ys = top + (1.0 - scaled) * (height - 1)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def sequence_cell(
    signal: np.ndarray,
    heatmap: np.ndarray | None,
    colormap: str = "jet",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Draws a sequence as a line plot with its map as a coloured band underneath.

    The first three channels are drawn as lines (blue, red, green), each
    scaled to its own range. Under the plot, the band shows the map along
    time: column `x` has the colour of the map's maximum over the time steps
    it covers (so a short peak is never lost). A 1-D mask is marked by a
    black bracket under the band, spanning the masked steps.

    Args:
        signal: one sequence, `(T, C)` or `(T,)`, any float range.
        heatmap: its map `(T',)` in [0, 1] (e.g. `result.heatmaps[i]`;
            another length is stretched over the same time span), or `None`
            for the signal alone (an empty band).
        colormap: a matplotlib colormap name. Defaults to `"jet"`.
        mask: boolean `(T'',)`, True where the pattern is. Defaults to
            `None`: no bracket.

    Returns:
        uint8 `(96, 192, 3)`: one grid cell.

    Example:

    >>> data = keras_cam.data.make_sequences(4)                      # doctest: +SKIP
    >>> result = keras_cam.explain(conv1d_model, data.images)         # doctest: +SKIP
    >>> cell = keras_cam.sequence_cell(data.images[0], result.heatmaps[0], mask=data.masks[0])
    ... # doctest: +SKIP
    >>> cell.shape                                                    # doctest: +SKIP
    (96, 192, 3)
    """
    signal = _check_sequence(signal)
    heatmap = _check_map(heatmap, 1, "sequence")
    height, width = SEQUENCE_SIZE
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for channel, colour in zip(signal.T[:MAX_CHANNELS], LINE_COLOURS, strict=False):
        points = _line_points(channel, width, 2, PLOT_HEIGHT - 4)
        if len(points) == 1:
            points = points * 2
        draw.line(points, fill=colour, width=1)
    band_top = PLOT_HEIGHT + 2
    if heatmap is None:
        draw.rectangle((0, band_top, width - 1, band_top + BAND_HEIGHT - 1), outline=(200,) * 3)
    else:
        colours = colorize(band_values(heatmap, width)[None], colormap)[0]
        canvas.paste(Image.fromarray(np.repeat(colours[None], BAND_HEIGHT, axis=0)), (0, band_top))
    if mask is not None:
        _draw_bracket(draw, band_values(np.asarray(mask, dtype=bool), width), band_top)
    return np.asarray(canvas)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[(first, last)] column of each run of True."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _draw_bracket(draw: ImageDraw.ImageDraw, columns: np.ndarray, band_top: int) -> None:
    """A bracket under each run of masked columns: a bar with ticks up to the band."""
    bar = band_top + BAND_HEIGHT + 4
    for first, last in _runs(columns):
        draw.line((first, bar, last, bar), fill=(0, 0, 0), width=2)
        for x in (first, last):
            draw.line((x, band_top + BAND_HEIGHT, x, bar), fill=(0, 0, 0))


def peak_index(heatmap: np.ndarray) -> tuple[int, ...]:
    """Where a map peaks: `np.unravel_index(argmax)` (the first maximum; NaN counts as 0)."""
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    return tuple(int(i) for i in np.unravel_index(np.argmax(heatmap), heatmap.shape))


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    """The masked voxel nearest the mask's centre of mass (a voxel of the object itself)."""
    voxels = np.argwhere(mask)
    nearest = np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))
    return tuple(int(i) for i in voxels[nearest])


def _grey_volume(volume: np.ndarray) -> np.ndarray:
    """The first channel, scaled from its own [min, max] to uint8 grey levels."""
    volume = np.asarray(volume)
    if volume.ndim == 3:
        volume = volume[..., None]
    if volume.ndim != 4 or 0 in volume.shape:
        raise ValueError(f"A volume must be (D, H, W, C) or (D, H, W), got shape {volume.shape}.")
    values = np.nan_to_num(volume[..., 0].astype(np.float64))
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def _nearest(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`array` resampled to `shape` by nearest neighbour (a map at the layer's resolution)."""
    for axis, size in enumerate(shape):
        if array.shape[axis] != size:
            array = np.take(array, np.arange(size) * array.shape[axis] // size, axis=axis)
    return array


def _slices(array: np.ndarray, peak: tuple[int, int, int]) -> list[np.ndarray]:
    """The three orthogonal slices through `peak`: across d (H, W), h (D, W), w (D, H)."""
    d, h, w = peak
    return [array[d], array[:, h], array[:, :, w]]


def _panel(picture: np.ndarray, mask: np.ndarray | None) -> Image.Image:
    """A slice enlarged (nearest) to fit a PANEL square, aspect kept, on black.

    The mask is outlined after enlarging, so the line is one pixel wide and
    hides no voxel.
    """
    rows, cols = picture.shape[:2]
    scale = PANEL / max(rows, cols)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    tile = np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.NEAREST))
    if mask is not None:
        tile = draw_outline(tile, mask)
    box = Image.new("RGB", (PANEL, PANEL), (0, 0, 0))
    box.paste(Image.fromarray(tile), ((PANEL - size[0]) // 2, (PANEL - size[1]) // 2))
    return box


def volume_cell(
    volume: np.ndarray,
    heatmap: np.ndarray | None,
    alpha: float = 0.4,
    colormap: str = "jet",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Draws the three orthogonal slices through a map's peak, each with the map overlaid.

    Left to right: the slice across depth at the peak's `d` (an `(H, W)`
    image), across height at `h` (`(D, W)`) and across width at `w`
    (`(D, H)`), each titled with its index (`d=5`) and enlarged to a
    60-pixel square. The volume's first channel is shown in grey, scaled to
    the volume's own range; the map is blended as `keras_cam.render.overlay` does.
    A 3-D mask is outlined in white on each slice.

    Args:
        volume: one volume, `(D, H, W, C)` or `(D, H, W)`, any value range.
        heatmap: its map `(D', H', W')` in [0, 1] (e.g. `result.heatmaps[i]`;
            another size is resampled, nearest), or `None` for the volume
            alone, sliced through the mask's centre (or the volume's).
        alpha: weight of the map's colour. Defaults to `0.4`.
        colormap: a matplotlib colormap name. Defaults to `"jet"`.
        mask: boolean `(D'', H'', W'')`, True on the object. Defaults to
            `None`: no outline.

    Returns:
        uint8 `(74, 192, 3)`: one grid cell.

    Example:

    >>> data = keras_cam.data.make_volumes(4)                         # doctest: +SKIP
    >>> result = keras_cam.explain(conv3d_model, data.images)         # doctest: +SKIP
    >>> keras_cam.volume_cell(data.images[0], result.heatmaps[0], mask=data.masks[0]).shape
    ... # doctest: +SKIP
    (74, 192, 3)
    """
    grey = _grey_volume(volume)
    heatmap = _check_map(heatmap, 3, "volume")
    if mask is not None:
        mask = _nearest(np.asarray(mask, dtype=bool), grey.shape)
    if heatmap is not None:
        heatmap = _nearest(heatmap, grey.shape)
        peak = peak_index(heatmap)
        pictures = [
            overlay(image[None], heat[None], alpha, colormap)[0]
            for image, heat in zip(_slices(grey, peak), _slices(heatmap, peak), strict=True)
        ]
    else:
        peak = _centre(mask) if mask is not None and mask.any() else _centre(np.ones(grey.shape))
        pictures = [to_rgb_uint8(image[None])[0] for image in _slices(grey, peak)]
    masks = [None] * 3 if mask is None else _slices(mask, peak)
    width = 3 * PANEL + 2 * SLICE_GAP
    canvas = Image.new("RGB", (width, LABEL_HEIGHT + PANEL), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = load_font(12)
    for k, (picture, axis, index) in enumerate(zip(pictures, SLICE_AXES, peak, strict=True)):
        left = k * (PANEL + SLICE_GAP)
        draw.text((left + 1, 0), f"{axis}={index}", fill=(0, 0, 0), font=font)
        canvas.paste(_panel(picture, masks[k]), (left, LABEL_HEIGHT))
    return np.asarray(canvas)


def readable_px(rank: int) -> int:
    """The smallest displayed size (px) of a cell of maps of this rank, for `card_pages`."""
    return MIN_IMAGE_PX if rank == 2 else CELL_READABLE_PX


def probe_pictures(images: np.ndarray, rank: int, masks: np.ndarray | None = None) -> np.ndarray:
    """How the callback shows probe samples without a map: (N, h, w, 3) uint8.

    Images (`rank` 2) as RGB; sequences (1) and volumes (3) as their cells
    with an empty band or sliced through the mask (else the centre).
    """
    if rank == 2:
        return to_rgb_uint8(images)
    draw = sequence_cell if rank == 1 else volume_cell
    masks = [None] * len(images) if masks is None else masks
    return np.stack([draw(x, None, mask=m) for x, m in zip(images, masks, strict=True)])


def overlay_pictures(
    images: np.ndarray,
    display: np.ndarray,
    heatmaps: np.ndarray,
    alpha: float,
    colormap: str,
    masks: np.ndarray | None = None,
) -> np.ndarray:
    """The callback's picture of each map, by the maps' rank: (N, h, w, 3) uint8.

    Image maps `(N, H, W)` are blended onto the `display` images (as
    `keras_cam.render.overlay`); sequence maps `(N, T)` and volume maps
    `(N, D, H, W)` become `sequence_cell` / `volume_cell` of the raw
    `images`, with their `masks` marked.
    """
    rank = np.ndim(heatmaps) - 1
    if rank == 2:
        return overlay(display, heatmaps, alpha, colormap)
    masks = [None] * len(images) if masks is None else masks
    if rank == 1:
        draw = partial(sequence_cell, colormap=colormap)
    else:
        draw = partial(volume_cell, alpha=alpha, colormap=colormap)
    return np.stack([draw(x, h, mask=m) for x, h, m in zip(images, heatmaps, masks, strict=True)])
