"""Each metric against values computed by hand on tiny arrays, degenerate ones included."""

import keras
import numpy as np
import pytest
from keras import layers

from keras_cam.diagnostics import metrics
from keras_cam.diagnostics.metrics import (
    average_drop,
    deletion_auc,
    drift,
    energy_in_mask,
    focus,
    increase_in_confidence,
    insertion_auc,
    pointing_game,
)


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
    np.testing.assert_array_equal(pointing_game(maps, masks, per_image=True), [1, 0, 1])


def test_pointing_game_ignores_nan_and_rejects_mismatched_shapes():
    maps = np.full((1, 2, 2), np.nan)
    maps[0, 1, 0] = 0.5
    masks = np.zeros((1, 2, 2), dtype=bool)
    masks[0, 1, 0] = True
    assert pointing_game(maps, masks) == 1.0
    assert pointing_game(maps, np.zeros_like(masks)) == 0.0  # empty mask: a miss
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(maps, masks[:, :1])


def test_energy_in_mask_by_hand():
    maps = np.array([[[3.0, 1.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1, 1]]])
    masks = np.array(
        [[[True, False], [False, True]], [[True, True], [False, False]], [[False] * 2] * 2]
    )
    # 7/8 inside; an all-zero map has no energy (0); an empty mask holds none (0).
    np.testing.assert_allclose(energy_in_mask(maps, masks, per_image=True), [7 / 8, 0, 0])
    assert energy_in_mask(maps, masks) == pytest.approx(7 / 24)
    negative = np.array([[[-5.0, 1.0], [np.nan, 1.0]]])
    assert energy_in_mask(negative, np.array([[[True, True], [True, False]]])) == 0.5


def test_drift_is_one_minus_pearson():
    rng = np.random.default_rng(0)
    before, after = rng.uniform(size=(2, 3, 5, 5))
    expected = [
        1 - np.corrcoef(b.ravel(), a.ravel())[0, 1] for b, a in zip(before, after, strict=True)
    ]
    np.testing.assert_allclose(drift(before, after, per_image=True), expected, rtol=1e-10)
    assert drift(before, 3 * before + 1) == pytest.approx(0.0, abs=1e-12)
    ramp = np.arange(4.0).reshape(1, 2, 2)
    assert drift(ramp, 3 - ramp) == pytest.approx(2.0)


def test_drift_of_constant_maps_is_defined():
    zero, ones = np.zeros((1, 2, 2)), np.ones((1, 2, 2))
    varying = np.arange(4.0).reshape(1, 2, 2)
    assert drift(zero, ones) == 0.0  # both constant: unchanged
    assert drift(zero, varying) == 1.0  # constant vs varying: uncorrelated
    with pytest.raises(ValueError, match="differ in shape"):
        drift(zero, np.zeros((1, 3, 3)))


def test_focus_by_hand():
    maps = np.zeros((4, 2, 2))
    maps[0, 0, 0] = 2.0  # one pixel: 0
    maps[1] = 0.3  # even: 1
    maps[2, 0] = 1.0  # two of four pixels: log 2 / log 4
    np.testing.assert_allclose(focus(maps, per_image=True), [0.0, 1.0, 0.5, 1.0])  # zero map: 1
    with pytest.raises(ValueError, match="at least 2 pixels"):
        focus(np.ones((1, 1, 1)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        focus(np.ones(2))  # (N, T) sequence maps are fine, a flat vector is not


READ = (1, 2)  # the one pixel the toy model reads


def one_pixel_model() -> keras.Model:
    """Outputs (1 − x, x) for the pixel at READ of a 4×4 gray image: class 1 scores x."""
    inputs = keras.Input((4, 4, 1))
    dense = layers.Dense(2)
    model = keras.Model(inputs, dense(layers.Flatten()(inputs)))
    kernel = np.zeros((16, 2), "float32")
    kernel[READ[0] * 4 + READ[1]] = [-1.0, 1.0]
    dense.set_weights([kernel, np.array([1.0, 0.0], "float32")])
    return model


def salience(first: bool) -> np.ndarray:
    """A map ranking the read pixel first (or last) among all 16 pixels."""
    maps = np.linspace(0.1, 0.9, 16).reshape(1, 4, 4)
    maps[0][READ] = 1.0 if first else 0.0
    return maps


@pytest.mark.parametrize(
    ("first", "deletion", "insertion"), [(True, 1 / 32, 31 / 32), (False, 31 / 32, 1 / 32)]
)
def test_deletion_and_insertion_on_a_model_that_reads_one_pixel(first, deletion, insertion):
    """16 pixels in 16 steps: the score is 1 until the read pixel goes (or 0 until it comes)."""
    model, images = one_pixel_model(), np.ones((1, 4, 4, 1), "float32")
    kwargs = {"steps": 16, "baseline": 0.0, "batch_size": 5}
    assert deletion_auc(model, images, salience(first), 1, **kwargs) == pytest.approx(deletion)
    assert insertion_auc(model, images, salience(first), 1, **kwargs) == pytest.approx(insertion)


def test_deletion_curve_steps_and_baselines():
    model = one_pixel_model()
    images = np.full((2, 4, 4), 0.8, "float32")  # grayscale without a channel axis
    images[1] = np.arange(16).reshape(4, 4) / 16
    maps = np.concatenate([salience(True), salience(False)])
    curves, _ = metrics._auc_curve(model, images, maps, 1, 4, "mean", None, 64, insert=False)
    # 4 pixels per step; image 0's read pixel goes in step 1, image 1's in the last step.
    mean_1 = images[1].mean()
    np.testing.assert_allclose(curves[0], [0.8, 0.8, 0.8, 0.8, 0.8])  # mean of a flat image
    np.testing.assert_allclose(curves[1], [6 / 16, 6 / 16, 6 / 16, 6 / 16, mean_1], rtol=1e-6)
    with pytest.raises(ValueError, match="baseline"):
        deletion_auc(model, images, maps, baseline="zeros")
    with pytest.raises(ValueError, match="steps"):
        deletion_auc(model, images, maps, steps=0)
    with pytest.raises(ValueError, match="must match the images"):
        deletion_auc(model, images, maps[:, :2])


def test_average_drop_and_increase_in_confidence_by_hand():
    model = one_pixel_model()
    images = np.full((3, 4, 4, 1), 0.5, "float32")
    maps = np.ones((3, 4, 4))
    maps[0][READ] = 0.25  # class 1 score 0.5 -> 0.125: drop 75 %
    maps[1][READ] = 1.0  # unchanged: no drop, no increase
    maps[2] = 0.0
    maps[2][READ] = 2.0  # scaled to 1 at the read pixel: unchanged
    classes = np.array([1, 1, 0])  # image 2 explains class 0: 1 − x, 0.5 -> 0.5
    np.testing.assert_allclose(
        average_drop(model, images, maps, classes, per_image=True), [0.75, 0, 0], atol=1e-7
    )
    # Class 0 of image 0 rises from 0.5 to 0.875 when its read pixel dims.
    rises = increase_in_confidence(model, images, maps, [0, 1, 1], per_image=True)
    np.testing.assert_array_equal(rises, [1, 0, 0])


class TraceCounter(layers.Layer):
    """Identity whose Python body runs once per trace of a compiled function."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runs = 0

    def call(self, x):
        self.runs += 1
        return x


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="PyTorch runs eagerly: no trace")
def test_the_forward_is_compiled_once_per_model_and_never_retraced():
    counter = TraceCounter()
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(counter(inputs))))
    images = np.ones((3, 4, 4, 1), "float32")

    def every_metric():
        deletion_auc(model, images, np.ones((3, 4, 4)), steps=4, batch_size=4)
        insertion_auc(model, images, np.ones((3, 4, 4)), steps=4, batch_size=4)
        average_drop(model, images, np.ones((3, 4, 4)), batch_size=4)

    built = counter.runs
    every_metric()
    forward = metrics._FORWARD[model]
    # The images at batch 3, the 15 perturbed ones in padded batches of 4: two traces.
    assert counter.runs - built == 2
    every_metric()
    assert metrics._FORWARD[model] is forward
    assert counter.runs - built == 2


@pytest.mark.parametrize("classes", [-1, 2, [0.5]])
def test_classes_that_are_not_class_indices_are_errors(classes):
    model, images = one_pixel_model(), np.ones((1, 4, 4, 1), "float32")
    with pytest.raises(ValueError, match=r"class indices in 0\.\.1.*not the last class"):
        deletion_auc(model, images, salience(True), classes)
