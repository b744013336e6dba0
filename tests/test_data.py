import numpy as np

from keras_cam.data import (
    CLASS_NAMES,
    SEQUENCE_CLASS_NAMES,
    VOLUME_CLASS_NAMES,
    make_sequences,
    make_shapes,
    make_volumes,
)


def test_shapes_are_deterministic_and_masks_mark_the_object():
    data = make_shapes(12, size=32, seed=3)
    again = make_shapes(12, size=32, seed=3)
    np.testing.assert_array_equal(data.images, again.images)
    assert data.images.shape == (12, 32, 32, 3)
    assert data.images.dtype == np.uint8
    assert set(data.labels) <= set(range(len(CLASS_NAMES)))
    for image, mask in zip(data.images, data.masks, strict=True):
        # The object is drawn last in one flat colour: its pixels are uniform.
        pixels = image[mask]
        assert mask.sum() > 20
        assert (pixels == pixels[0]).all()


def test_mask_area_matches_the_shape():
    data = make_shapes(60, size=64, seed=0, distractor=False)
    fill = {}
    for label, mask in zip(data.labels, data.masks, strict=True):
        ys, xs = np.nonzero(mask)
        box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
        fill.setdefault(int(label), []).append(mask.sum() / box)
    # square fills its box, circle ≈ π/4, triangle ≈ 1/2
    assert np.mean(fill[1]) > 0.95
    assert 0.7 < np.mean(fill[0]) < 0.85
    assert 0.4 < np.mean(fill[2]) < 0.6


def test_sequence_masks_mark_the_pattern_and_the_spike_lies_outside():
    clean = make_sequences(40, length=96, seed=5, noise=0.0)
    signals = clean.images[..., 0]
    assert clean.images.shape == (40, 96, 1)
    assert clean.images.dtype == np.float32
    # Patterns are positive, the distractor negative and the rest exactly zero.
    np.testing.assert_array_equal(clean.masks, signals > 0)
    spikes = signals < 0
    assert (spikes.sum(axis=1) == 3).all()
    assert (clean.masks.sum(axis=1) == 96 // 8).all()
    # The same seed with noise: the same labels and masks, the difference is the noise alone.
    noisy = make_sequences(40, length=96, seed=5)
    np.testing.assert_array_equal(noisy.labels, clean.labels)
    np.testing.assert_array_equal(noisy.masks, clean.masks)
    assert abs(np.std(noisy.images - clean.images) - 0.3) < 0.02
    without = make_sequences(40, length=96, seed=5, noise=0.0, distractor=False)
    np.testing.assert_array_equal(without.images[..., 0], np.where(spikes, 0, signals))
    assert set(clean.labels) == {0, 1, 2}
    assert clean.class_names == SEQUENCE_CLASS_NAMES


def test_volume_masks_mark_the_solid_and_the_dot_lies_outside():
    clean = make_volumes(30, size=16, seed=2, noise=0.0)
    volumes = clean.images[..., 0]
    assert clean.images.shape == (30, 16, 16, 16, 1)
    assert clean.images.dtype == np.float32
    bright = volumes > 0
    assert (clean.masks <= bright).all()
    # Outside the mask only the 2×2×2 dot is bright, not touching the solid.
    assert ((bright & ~clean.masks).sum(axis=(1, 2, 3)) == 8).all()
    without = make_volumes(30, size=16, seed=2, noise=0.0, distractor=False)
    np.testing.assert_array_equal(without.masks, without.images[..., 0] > 0)
    np.testing.assert_array_equal(without.masks, clean.masks)
    # The class is the shape: a plate fills its bounding box, a ball about π/6 of it.
    fill = {}
    for label, mask in zip(clean.labels, clean.masks, strict=True):
        extent = np.prod([np.ptp(axis) + 1 for axis in np.nonzero(mask)])
        fill.setdefault(int(label), []).append(mask.sum() / extent)
    assert np.mean(fill[1]) == 1.0
    assert 0.4 < np.mean(fill[0]) < 0.65
    assert clean.class_names == VOLUME_CLASS_NAMES
