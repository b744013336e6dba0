import numpy as np

from keras_cam.data import CLASS_NAMES, make_shapes


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
