"""Overlay and grid images, checked pixel by pixel against the blend formula."""

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_cam.render.overlay import (
    ColourBar,
    captioned_grid,
    card_pages,
    colorize,
    draw_border,
    overlay,
    resize_maps,
    to_rgb_uint8,
)


def expected_blend(rgb_uint8, heatmap, alpha, cmap="jet"):
    index = np.round(np.clip(heatmap, 0, 1) * 255).astype(int)
    colours = np.round(matplotlib.colormaps[cmap](index / 255.0)[..., :3] * 255)
    return np.round((1 - alpha) * rgb_uint8 + alpha * colours)


def test_uint8_overlay_is_the_alpha_blend_of_image_and_colormap():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    heatmaps = rng.uniform(size=(2, 5, 6)).astype("float32")
    result = overlay(images, heatmaps, alpha=0.3)
    assert result.dtype == np.uint8
    assert result.shape == (2, 5, 6, 3)
    np.testing.assert_allclose(result, expected_blend(images, heatmaps, 0.3), atol=1)


def test_float_images_in_0_1_and_0_255_give_the_same_overlay():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(1, 4, 4, 3)).astype(np.uint8)
    heatmaps = rng.uniform(size=(1, 4, 4))
    from_uint8 = overlay(images, heatmaps)
    np.testing.assert_allclose(overlay(images / 255.0, heatmaps), from_uint8, atol=1)
    np.testing.assert_allclose(overlay(images.astype("float32"), heatmaps), from_uint8, atol=1)


def test_grayscale_images_are_blended_on_three_equal_channels():
    gray = np.full((1, 3, 3), 100, dtype=np.uint8)
    heatmaps = np.zeros((1, 3, 3))
    result = overlay(gray, heatmaps, alpha=0.5)
    bottom = np.round(matplotlib.colormaps["jet"](0.0)[:3] * np.array(255.0))
    np.testing.assert_allclose(result[0, 0, 0], np.round(50 + 0.5 * bottom), atol=1)
    np.testing.assert_array_equal(overlay(gray[..., None], heatmaps, alpha=0.5), result)


def test_all_zero_constant_and_nan_maps_stay_finite_and_in_range():
    images = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    maps = np.stack([np.zeros((4, 4)), np.full((4, 4), 0.7), np.full((4, 4), np.nan)])
    result = overlay(images, maps)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result[2], overlay(images[:1], np.zeros((1, 4, 4)))[0])


def test_heatmaps_of_another_size_are_resized_to_the_image():
    images = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    small = np.zeros((1, 2, 2))
    small[0, 0, 0] = 1.0
    result = overlay(images, small, alpha=1.0)
    assert result.shape == (1, 8, 8, 3)
    hot = colorize(np.ones((1, 1, 1)))[0, 0, 0]
    np.testing.assert_array_equal(result[0, 0, 0], hot)
    np.testing.assert_array_equal(result[0, 7, 7], colorize(np.zeros((1, 1, 1)))[0, 0, 0])


@pytest.mark.parametrize(
    ("shape", "size"), [((2, 7, 9), (64, 50)), ((2, 64, 64), (40, 40)), ((1, 5, 6, 7), (9, 3, 13))]
)
def test_display_resize_is_the_backends_linear_resize_done_on_the_host(shape, size, monkeypatch):
    """Same values as the backend's resize; no backend op runs (it would on the worker)."""
    import keras

    from keras_cam.core.spatial import resize

    maps = np.random.default_rng(0).uniform(size=shape).astype("float32")
    if len(shape) == 3:
        expected = keras.ops.image.resize(maps[..., None], size, interpolation="bilinear")[..., 0]
    else:
        expected = resize(keras.ops.convert_to_tensor(maps), size)
    expected = keras.ops.convert_to_numpy(expected)
    monkeypatch.setattr(keras.ops.image, "resize", None)  # any backend call would fail
    monkeypatch.setattr(keras.ops, "convert_to_numpy", None)
    resized = resize_maps(maps, size)
    assert resized.dtype == np.float32
    np.testing.assert_allclose(resized, expected, atol=1e-5)
    if len(shape) == 3:  # overlay() draws maps of another size with it
        drawn = overlay(np.zeros((shape[0], *size, 3), np.uint8), maps, alpha=1.0)
        np.testing.assert_array_equal(drawn, colorize(resized))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="Unknown colormap 'jett'"):
        overlay(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2)), colormap="jett")
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        overlay(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2)), alpha=2)
    with pytest.raises(ValueError, match="N = 2 images"):
        overlay(np.zeros((2, 2, 2, 3)), np.zeros((1, 2, 2)))


@settings(max_examples=40, deadline=None)
@given(
    images=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=5).map(
            lambda s: (s[0], s[1], s[2], 3)
        ),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=32),
    ),
    alpha=st.floats(0, 1),
)
def test_overlay_never_produces_out_of_range_pixels(images, alpha):
    maps = np.random.default_rng(0).normal(size=images.shape[:3]) * 10
    result = overlay(images, maps, alpha=alpha)
    assert result.dtype == np.uint8
    assert result.shape == images.shape
    assert to_rgb_uint8(images).shape == images.shape


def test_grid_lays_out_groups_with_captions():
    tile = np.zeros((10, 10, 3), dtype=np.uint8)
    groups = [(tile, tile + 255)] * 3
    grid = captioned_grid(groups, ["a", "b", "c"], min_cell=40, columns=1)
    # 3 rows of (40-pixel cells + caption); one group of two 40-pixel cells wide.
    assert grid.shape[1] == 2 * 40 + 4 + 2 * 4
    assert grid.shape[0] > 3 * 40
    assert (grid[4:44, 4:44] == 0).all()
    assert (grid[4:44, 48:88] == 255).all()
    caption_band = grid[45:60, 4:88]
    assert (caption_band < 128).any(), "the caption text is drawn"
    with pytest.raises(ValueError, match="3 image groups but 2 captions"):
        captioned_grid(groups, ["a", "b"])


def gradient_rows(page: np.ndarray, cmap: str = "jet") -> list[tuple[int, int, int]]:
    """(row, first column, length) of every run of the colormap's 256 colours in order."""
    table = np.floor(matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5)
    found = []
    for row in range(page.shape[0]):
        pixels = page[row].astype(int)
        starts = np.flatnonzero((pixels == table[0]).all(axis=1))
        ends = np.flatnonzero((pixels == table[255]).all(axis=1))
        if starts.size and ends.size and ends[-1] > starts[0] + 8:
            first, last = starts[0], ends[-1]
            index = np.linspace(0, 255, last - first + 1).round().astype(int)
            if np.array_equal(pixels[first : last + 1], table[index]):
                found.append((row, int(first), int(last - first + 1)))
    return found


def test_pages_carry_a_colour_bar_of_the_colormap_under_the_page():
    tile = np.full((16, 16, 3), 128, dtype=np.uint8)
    without = card_pages([(tile, tile)] * 4, ["caption"] * 4)
    bar = ColourBar("jet", "0", "0.0031")
    pages = card_pages([(tile, tile)] * 4, ["caption"] * 4, legend=bar)
    assert not gradient_rows(without[0])
    rows = gradient_rows(pages[0])
    # One bar across the page, as tall as the caption font, below every cell.
    assert len(rows) >= 12
    assert {(first, length) for _, first, length in rows} == {(rows[0][1], rows[0][2])}
    assert rows[0][0] > pages.shape[1] - 60
    assert rows[0][2] > pages.shape[2] / 2
    assert (pages[0][rows[0][0] :, : rows[0][1]] < 100).any(), "the low label is drawn"
    assert (pages[0][rows[0][0] :, rows[0][1] + rows[0][2] + 2 :] < 100).any(), "and the high"


def test_a_border_frames_the_image_in_the_colour_given():
    image = np.full((8, 8, 3), 50, dtype=np.uint8)
    framed = draw_border(image, (0, 170, 0), width=2)
    ring = np.ones((8, 8), bool)
    ring[2:-2, 2:-2] = False
    assert (framed[ring] == (0, 170, 0)).all()
    np.testing.assert_array_equal(framed[~ring], image[~ring])
    assert (image == 50).all()  # the input is not modified
