import numpy as np
import pytest

from keras_cam.metrics import pointing_game


def test_pointing_game_counts_peaks_inside_masks():
    maps = np.zeros((3, 3, 3))
    masks = np.zeros((3, 3, 3), dtype=bool)
    maps[0, 1, 1] = 1.0
    masks[0, 1, 1] = True  # hit
    maps[1, 0, 2] = 0.9
    masks[1, 2, 2] = True  # miss
    maps[2] = np.arange(9).reshape(3, 3)
    masks[2, 2, 2] = True  # hit: the peak is the last pixel
    assert pointing_game(maps, masks) == pytest.approx(2 / 3)


def test_pointing_game_ignores_nan_and_rejects_mismatched_shapes():
    maps = np.full((1, 2, 2), np.nan)
    maps[0, 1, 0] = 0.5
    masks = np.zeros((1, 2, 2), dtype=bool)
    masks[0, 1, 0] = True
    assert pointing_game(maps, masks) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(maps, masks[:, :1])
