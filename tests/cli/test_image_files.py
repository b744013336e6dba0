"""Finding, decoding, converting and fitting the command line's image files (Pillow only)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from keras_cam.cli.image_files import UnreadableImage, find_images, load_image


def _save(path, array) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def test_find_images_folders_globs_files_and_missing(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    a = _save(tmp_path / "d" / "a.png", rgb)
    b = _save(tmp_path / "d" / "sub" / "b.JPG", rgb)
    c = _save(tmp_path / "e" / "c.png", rgb)
    (tmp_path / "d" / "notes.txt").write_text("x")
    (tmp_path / "d" / "sub" / "model.h5").write_bytes(b"x")
    odd = tmp_path / "photo.data"
    odd.write_bytes(b"x")

    found = find_images(
        [str(tmp_path / "d"), str(tmp_path / "e" / "*.png"), str(odd), str(tmp_path / "nope")]
    )
    # Folder files sorted and recursive; an explicitly named file is kept whatever its name.
    assert found.files == [a, b, c, str(odd)]
    assert found.ignored == 2
    assert found.missing == [str(tmp_path / "nope")]
    # A file reached twice (folder and glob) is explained once.
    assert find_images([str(tmp_path / "d"), a]).files == [a, b]
    assert find_images([str(tmp_path / "**" / "*.png")]).files == [a, c]


def test_conversions_to_8_bit_rgb(tmp_path):
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    loaded = load_image(_save(tmp_path / "g.png", gray), (4, 4), "stretch")
    assert loaded.conversion == "grayscale"
    np.testing.assert_array_equal(loaded.pixels, np.repeat(gray[..., None], 3, axis=-1))

    deep = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).astype(np.uint16)
    loaded = load_image(_save(tmp_path / "deep.png", deep), (4, 4), "stretch")
    assert loaded.conversion == "16-bit"
    expected = (deep / 257.0).astype(np.uint8)  # the 0–65535 range onto 0–255
    np.testing.assert_array_equal(loaded.pixels[..., 0], expected)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    loaded = load_image(_save(tmp_path / "a.png", rgba), (4, 4), "stretch")
    assert loaded.conversion == "alpha channel"
    np.testing.assert_array_equal(loaded.pixels[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(loaded.pixels[3, 0], [255, 255, 255])

    loaded = load_image(_save(tmp_path / "c.png", np.zeros((4, 4, 3), np.uint8)), (4, 4))
    assert loaded.conversion is None


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_keeps_the_geometry_and_maps_pixels_back(tmp_path, fit):
    # A 40×80 (h×w) image with one bright 4×4 square (centre x 42, y 12), fitted to 20×20.
    image = np.zeros((40, 80, 3), np.uint8)
    image[10:14, 40:44] = 255
    loaded = load_image(_save(tmp_path / "x.png", image), (20, 20), fit)
    assert loaded.pixels.shape == (20, 20, 3)
    weights = loaded.pixels[..., 0].astype(np.float64)
    rows, cols = np.indices(weights.shape)
    y, x = (weights * rows).sum() / weights.sum(), (weights * cols).sum() / weights.sum()
    # Where the square's centre must land (pixel centres at +0.5), from each fit's geometry.
    expected = {
        "crop": (12 * 0.5 - 0.5, (42 - 20) * 0.5 - 0.5),  # scale 0.5, 20 px cut each side
        "pad": (12 * 0.25 + 5 - 0.5, 42 * 0.25 - 0.5),  # scale 0.25, 5 px bars top and bottom
        "stretch": (12 * 0.5 - 0.5, 42 * 0.25 - 0.5),
    }[fit]
    assert abs(y - expected[0]) <= 1.0
    assert abs(x - expected[1]) <= 1.0
    ox, oy = loaded.placement.to_original(round(x), round(y))
    scale = {"crop": 2, "pad": 4, "stretch": 4}[fit]
    assert abs(ox - 41.5) <= scale
    assert abs(oy - 11.5) <= scale
    # Points outside the original (the letterbox bars) map to its border.
    assert loaded.placement.to_original(0, 0)[1] >= 0
    assert loaded.placement.to_original(19, 19) <= (79, 39)


def test_undecodable_files_raise_a_named_error(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not an image at all")
    with pytest.raises(UnreadableImage, match="cannot identify"):
        load_image(str(fake), (8, 8))
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(UnreadableImage):
        load_image(str(truncated), (8, 8))
