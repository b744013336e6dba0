"""The comparison table's pages: rows per page, readable sizes, cells where they belong."""

import matplotlib
import numpy as np
import pytest

from keras_cam.render.compare_table import compare_pages
from keras_cam.render.overlay import CARD_BOX, MIN_IMAGE_PX

METHODS = ("gradcam", "layercam", "xgradcam", "gradcampp")
RANGES = dict(zip(METHODS, ("0-0.031", "0-0.45", "0-0.0088", "0-1.2e-05"), strict=True))


def probe(count: int, side: int = 16):
    rng = np.random.default_rng(0)
    originals = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
    pictures = {
        name: rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8) for name in METHODS
    }
    return originals, pictures


def table(count: int, methods: int, side: int = 16) -> tuple[np.ndarray, dict, np.ndarray]:
    originals, pictures = probe(count, side)
    pictures = {name: pictures[name] for name in METHODS[:methods]}
    pages = compare_pages(
        originals,
        pictures,
        [f"true dog · pred pig p=0.{i:02d}" for i in range(count)],
        RANGES,
        "jet",
    )
    return originals, pictures, pages


def find(page: np.ndarray, tile: np.ndarray) -> tuple[int, int] | None:
    """Top-left corner of `tile`, enlarged by an integer factor, in `page` (None: absent)."""
    side = tile.shape[0]
    for y, x in zip(*np.nonzero((page == tile[0, 0]).all(axis=-1)), strict=True):
        for factor in (1, 2, 4, 8):
            cell = page[y : y + side * factor : factor, x : x + side * factor : factor]
            if cell.shape == tile.shape and np.array_equal(cell, tile):
                return int(y), int(x)
    return None


def shown_scale(page: np.ndarray) -> float:
    """The scale TensorBoard draws the page at: fitted into its card's box, keeping aspect."""
    return min(CARD_BOX[0] / page.shape[1], CARD_BOX[1] / page.shape[0])


@pytest.mark.parametrize(
    ("methods", "pages_expected", "with_original"), [(2, 6, True), (3, 8, True)]
)
def test_sixteen_images_fit_in_pages_of_readable_rows(methods, pages_expected, with_original):
    originals, pictures, pages = table(16, methods)
    assert len(pages) == pages_expected
    for number, page in enumerate(pages):
        scale = shown_scale(page)
        assert 16 * 4 * scale >= MIN_IMAGE_PX  # 16-px pictures drawn 4x: >= 64 px on screen
        assert page.shape[0] <= 2 * page.shape[1]
        # Rows in probe order, balanced pages (16 = 3 * 4 + 2 * 2 or 8 * 2; three methods
        # are laid out for the widest range labels, so the pages never move), methods
        # left to right.
        rows = np.array_split(np.arange(16), pages_expected)[number]
        for i in rows:
            corners = [find(page, pictures[name][i]) for name in pictures]
            assert None not in corners, (number, i)
            assert len({y for y, _ in corners}) == 1  # one row
            assert [x for _, x in corners] == sorted(x for _, x in corners)
            original = find(page, originals[i])
            assert (original is not None) == with_original
            if with_original:
                assert original[0] == corners[0][0]
                assert original[1] < corners[0][1]
    # The last page's missing row is white, not a repeated image.
    assert find(pages[-1], pictures["gradcam"][13]) is None


def test_one_shared_gradient_of_the_colormap_in_the_header():
    _, pictures, pages = table(6, 3)
    table_rgb = np.floor(matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5)
    page = pages[0].astype(int)
    rows = [
        row
        for row in range(page.shape[0])
        if (page[row] == table_rgb[0]).all(axis=1).any()
        and (page[row] == table_rgb[255]).all(axis=1).any()
    ]
    assert rows, "no gradient drawn"
    assert max(rows) < find(pages[0], pictures["gradcam"][0])[0]  # above the pictures
    # One gradient, running from the colormap's 0 to its 1 left to right.
    row = page[rows[0]]
    start = np.flatnonzero((row == table_rgb[0]).all(axis=1))[0]
    end = np.flatnonzero((row == table_rgb[255]).all(axis=1))[-1]
    index = np.linspace(0, 255, end - start + 1).round().astype(int)
    np.testing.assert_array_equal(row[start : end + 1], table_rgb[index])


def test_four_methods_keep_readable_cells_on_fewer_rows():
    _, pictures, pages = table(16, 4)
    assert len(pages) == 8  # two-line headers leave room for two rows of 64 px
    assert 16 * 4 * shown_scale(pages[0]) >= MIN_IMAGE_PX
    assert find(pages[0], pictures["gradcampp"][1]) is not None


def test_large_pictures_are_shrunk_with_the_text_drawn_larger():
    _, pictures, pages = table(4, 3, side=224)
    scale = shown_scale(pages[0])
    assert scale < 0.5
    assert 224 * scale >= MIN_IMAGE_PX
    assert find(pages[0], pictures["xgradcam"][0]) is not None  # drawn at its own size


def test_inputs_of_different_lengths_are_refused():
    originals, pictures = probe(4)
    with pytest.raises(ValueError, match="one caption and one picture per method"):
        compare_pages(originals, pictures, ["a"] * 3, RANGES, "jet")
