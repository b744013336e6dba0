"""Augmentation smoothing: copies mapped back to the original frame, and its plumbing."""

import numpy as np
import pytest
from conftest import conv_classifier
from keras import ops

import keras_cam
from keras_cam.core import smoothing


def ramp(count=2, height=40, width=48):
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    maps = np.stack([(rows + 3 * columns + k * 7) / 200.0 for k in range(count)])
    return maps.astype("float32")


@pytest.mark.parametrize("channels_first", [False, True])
def test_merge_undoes_augment(channels_first):
    """A map that moves with the image (flipped, zoomed) merges back to the original map."""
    maps = ramp()
    images = maps[:, None] if channels_first else maps[..., None]
    copies = ops.convert_to_numpy(smoothing.augment(images, channels_first))
    assert copies.shape[0] == len(smoothing.AUGMENTATIONS) * len(maps)
    copies = copies[:, 0] if channels_first else copies[..., 0]
    merged = ops.convert_to_numpy(smoothing.merge(copies, len(maps)))
    # Bilinear resampling of a linear ramp is exact away from every crop's border.
    top, left, height, width = smoothing._crop_box(40, 48, max(smoothing.SCALES))
    inner = np.s_[:, top + 3 : top + height - 3, left + 3 : left + width - 3]
    np.testing.assert_allclose(merged[inner], maps[inner], atol=1e-5)
    np.testing.assert_allclose(merged, maps, atol=0.02)


def test_flipped_copies_are_mirror_images():
    maps = ramp()
    copies = ops.convert_to_numpy(smoothing.augment(maps[..., None], False))[..., 0]
    np.testing.assert_array_equal(copies[2:4], maps[:, :, ::-1])
    np.testing.assert_array_equal(copies[:2], maps)


def test_aug_smooth_averages_the_maps_of_the_copies(images):
    model = conv_classifier()
    plain = keras_cam.CAMExplainer(model)
    smooth = keras_cam.CAMExplainer(model, aug_smooth=True)
    result = smooth(images)
    reference = plain(images)
    # Classes, scores and confidence are those of the original images.
    np.testing.assert_array_equal(result.classes, reference.classes)
    np.testing.assert_allclose(result.scores, reference.scores, rtol=1e-6)
    # Every copy explains its original's class; merging their maps gives the smoothed map.
    copies = ops.convert_to_numpy(smoothing.augment(images, False))
    classes = np.tile(reference.classes, len(smoothing.AUGMENTATIONS))
    per_copy = plain(copies, targets=classes).raw
    upsampled = ops.image.resize(per_copy[..., None], images.shape[1:3], "bilinear")[..., 0]
    merged = ops.convert_to_numpy(smoothing.merge(upsampled, len(images)))
    low = merged.min(axis=(1, 2), keepdims=True)
    expected = (merged - low) / (merged.max(axis=(1, 2), keepdims=True) - low)
    np.testing.assert_allclose(result.heatmaps, expected, atol=1e-5)
    assert not np.allclose(result.heatmaps, reference.heatmaps, atol=1e-2)
    assert smooth.trace_count == 1
