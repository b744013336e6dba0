"""Bad input is refused before any work, with an error naming the problem and the fix.

Issue 22 (items 1, 3, 4, 5, 12, 13, 15, 16): nothing here may run and
quietly explain something else than what was asked.
"""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
from conftest import conv_classifier, to_numpy
from keras import layers, ops

import keras_cam
from keras_cam.core.tokens import map_channels
from keras_cam.targets import tasks as T

SIZE = 16


def images(n=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


# --- 1. detection: class ids and boxes ------------------------------------------------


def grid_detector(classes=3):
    """4×4 cells of 4 px, one anchor each, zero box deltas: decoded boxes are the anchors."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inputs)
    x = layers.MaxPooling2D(4)(x)
    boxes = layers.Reshape((16, 4))(layers.Conv2D(4, 1, kernel_initializer="zeros")(x))
    logits = layers.Reshape((16, classes))(layers.Conv2D(classes, 1)(x))
    model = keras.Model(inputs, {"bbox_regression": boxes, "cls_logits": logits})
    y, x = np.mgrid[0:4, 0:4].reshape(2, -1) * 4.0
    return model, np.stack([x, y, x + 4, y + 4], axis=1).astype("float32")


def test_detection_class_ids_and_boxes_are_checked_before_tracing():
    model, anchors = grid_detector(classes=3)
    explainer = keras_cam.CAMExplainer(model, layer="feat")
    box = [0, 0, 4, 4]  # exactly anchor 0
    with pytest.raises(ValueError, match=r"class_ids 3 is out of range.*3 classes \(0\.\.2\)"):
        explainer(images(), targets=T.detection(box, 3, anchors))
    with pytest.raises(ValueError, match=r"class_ids 7 is out of range"):
        explainer(images(), targets=T.detection(box, [0, 7], anchors))
    assert explainer.trace_count == 0  # refused before any tracing
    with pytest.raises(ValueError, match=r">= 0, got -1; negative indices"):
        T.detection(box, -1, anchors)
    for bad in (1.7, 1.0, True, [0.5, 1.0]):
        with pytest.raises(ValueError, match="must be integer class indices"):
            T.detection(box, bad, anchors)
    with pytest.raises(ValueError, match=r"one box \(4,\).*got shape \(3,\)"):
        T.detection([0, 0, 4], 1, anchors)
    with pytest.raises(ValueError, match=r"got shape \(2, 5\)"):
        T.detection(np.zeros((2, 5)), 1, anchors)
    with pytest.raises(ValueError, match="x0 <= x1"):
        T.detection([4, 0, 0, 4], 1, anchors)
    with pytest.raises(ValueError, match="finite"):
        T.detection([0, 0, np.nan, 4], 1, anchors)
    # The last class explains itself: its score is anchor 0's logit, and classes says so.
    result = explainer(images(), targets=T.detection(box, 2, anchors))
    logits = to_numpy(model(images())["cls_logits"])
    np.testing.assert_array_equal(result.classes, [2, 2])
    np.testing.assert_allclose(result.scores, logits[:, 0, 2], rtol=1e-5, atol=1e-5)
    per_image = explainer(images(), targets=T.detection(box, np.array([0, 1]), anchors))
    np.testing.assert_array_equal(per_image.classes, [0, 1])
    np.testing.assert_allclose(per_image.scores, logits[[0, 1], 0, [0, 1]], rtol=1e-5, atol=1e-5)


# --- 3. tokens= must only move entries -------------------------------------------------


def grid(t):
    return ops.reshape(t, (-1, 4, 6, t.shape[-1]))


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("abs", lambda t: ops.abs(grid(t))),
        ("round", lambda t: ops.round(grid(t))),
        ("relu", lambda t: ops.relu(grid(t))),
        ("sort", lambda t: ops.sort(grid(t), axis=-1)),
        ("maximum1", lambda t: ops.maximum(grid(t), 1.0)),
        ("negate", lambda t: -grid(t)),
        ("scale", lambda t: 2.0 * grid(t)),
        ("repeat", lambda t: ops.concatenate([grid(t), grid(t)], axis=-1)),
    ],
)
def test_tokens_function_that_computes_values_is_refused(name, layout):
    with pytest.raises(ValueError, match="selecting and rearranging entries only"):
        map_channels(layout, (24, 5))


def test_tokens_function_that_rearranges_is_accepted_with_its_channel_index():
    # Identity, transpose and a fixed gather move entries: each lands in a known channel.
    channels = map_channels(grid, (24, 5))
    np.testing.assert_array_equal(channels, np.broadcast_to(np.arange(5), (24, 5)))

    def columns_first(t):
        cells = ops.reshape(t[:, 1:, :], (-1, 6, 4, t.shape[-1]))
        return ops.transpose(cells, (0, 2, 1, 3))

    channels = map_channels(columns_first, (25, 5))
    assert (channels[0] == -1).all()  # the prefix token is not in the map
    np.testing.assert_array_equal(channels[1:], np.broadcast_to(np.arange(5), (24, 5)))

    def reversed_channels(t):
        return ops.take(grid(t), ops.convert_to_tensor(np.arange(4, -1, -1)), axis=-1)

    np.testing.assert_array_equal(
        map_channels(reversed_channels, (24, 5)), np.broadcast_to(np.arange(4, -1, -1), (24, 5))
    )


# --- 4. an explicit TokenGrid must agree with the model ----------------------------------


class ClassToken(layers.Layer):
    def build(self, shape):
        self.cls = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal")

    def call(self, x):
        return ops.concatenate([ops.repeat(self.cls, ops.shape(x)[0], axis=0), x], axis=1)


def class_token_vit():
    """A 32×48 image in 8-px patches: a 4×6 grid behind one class token (25 tokens)."""
    inputs = keras.Input((32, 48, 3))
    x = layers.Reshape((24, 8))(layers.Conv2D(8, 8, strides=8)(inputs))
    x = ClassToken()(x)
    y = layers.LayerNormalization(name="norm1")(x)
    x = layers.Add()([x, layers.MultiHeadAttention(2, 4)(y, y)])
    return keras.Model(inputs, layers.Dense(3)(layers.LayerNormalization()(x)[:, 0]))


def test_token_grid_contradicting_the_class_token_or_the_aspect_is_refused():
    vit = class_token_vit()
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype("float32")
    for wrong in (
        keras_cam.TokenGrid(5, 5, prefix=0),  # no prefix on a class-token model
        keras_cam.TokenGrid(6, 4, prefix=1),  # transposed against the 32×48 input
        keras_cam.TokenGrid(3, 8, prefix=1),  # another aspect
    ):
        for layer in ("norm1", None):
            with pytest.raises(ValueError, match=r"contradicts .*TokenGrid\(height=4, width=6"):
                keras_cam.explain(vit, x, layer=layer, tokens=wrong, verbose=0)
    auto = keras_cam.explain(vit, x, layer="norm1", verbose=0)
    right = keras_cam.explain(vit, x, layer="norm1", tokens=keras_cam.TokenGrid(4, 6, 1), verbose=0)
    np.testing.assert_allclose(right.raw, auto.raw, rtol=1e-5, atol=1e-7)
    assert right.raw.shape == (2, 4, 6)


# --- 5. segmentation regions read by shape alone -----------------------------------------


@pytest.mark.parametrize("count", [32, 16, 1])
def test_one_segmentation_region_with_a_channel_axis_is_shared_whatever_the_batch(count):
    mask = np.zeros((32, 32, 1), bool)
    mask[:8, :8] = True
    for region in (mask, mask[..., 0], np.repeat(mask[None], count, 0), np.repeat(mask, 1, -1)):
        regions = T.segmentation(1, region=region).region_masks(count, (32, 32))
        assert regions.shape == (count, 32, 32)
        assert (regions == mask[None, ..., 0]).all()
    per_image = np.zeros((count, 32, 32), bool)
    per_image[np.arange(count), np.arange(count) % 32, 0] = True
    for region in (per_image, per_image[..., None]):
        np.testing.assert_array_equal(
            T.segmentation(1, region=region).region_masks(count, (32, 32)), per_image
        )


def test_segmentation_regions_of_another_count_or_shape_are_refused():
    with pytest.raises(ValueError, match=r"one mask per image \(N, H, W\), but there are 4"):
        T.segmentation(1, region=np.ones((3, 8, 8))).region_masks(4, (8, 8))
    with pytest.raises(ValueError, match=r"got shape \(4, 8, 8, 2\)"):
        T.segmentation(1, region=np.ones((4, 8, 8, 2))).region_masks(4, (8, 8))
    with pytest.raises(ValueError, match=r"got shape \(8,\)"):
        T.segmentation(1, region=np.ones(8)).region_masks(4, (8, 8))


def segmenter(classes=3):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    return keras.Model(inputs, layers.Conv2D(classes, 1, activation="softmax")(x))


def test_a_shared_region_explains_the_same_with_or_without_its_channel_axis():
    model, x = segmenter(), images(n=SIZE)  # as many images as mask rows
    mask = np.zeros((SIZE, SIZE, 1), bool)
    mask[:6, :6] = True
    flat = keras_cam.explain(model, x, targets=T.segmentation(1, region=mask[..., 0]), verbose=0)
    channel = keras_cam.explain(model, x, targets=T.segmentation(1, region=mask), verbose=0)
    np.testing.assert_allclose(channel.raw, flat.raw, rtol=1e-6)
    np.testing.assert_allclose(channel.scores, flat.scores, rtol=1e-6)


# --- 13. class targets on a per-pixel output -----------------------------------------


def test_segmentation_model_with_class_targets_says_to_use_segmentation():
    model = segmenter()
    for targets in ("predicted", 1, [0, 1], "top2", "positive"):
        with pytest.raises(
            ValueError, match=r"shape \(None, 16, 16, 3\).*segmentation\(class_id\)"
        ):
            keras_cam.explain(model, images(), targets=targets, verbose=0)
    assert keras_cam.explain(model, images(), targets=T.segmentation(1), verbose=0).raw.ndim == 3


# --- 12. output= on explain() and sanity_check() ---------------------------------------


def two_outputs(as_dict):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    g = layers.GlobalAveragePooling2D()(x)
    kind = layers.Dense(3, activation="softmax", name="kind_head")(g)
    size = layers.Dense(1, name="size_head")(g)
    return keras.Model(inputs, {"kind": kind, "size": size} if as_dict else [kind, size])


@pytest.mark.parametrize("as_dict", [False, True])
def test_explain_and_sanity_check_take_output(as_dict):
    model, x = two_outputs(as_dict), images()
    outputs = model(x)
    kind, size = (outputs["kind"], outputs["size"]) if as_dict else outputs
    with pytest.raises(ValueError, match="Pass output="):
        keras_cam.explain(model, x, verbose=0)
    with pytest.raises(ValueError, match="Pass output="):
        keras_cam.sanity_check(model, x)
    by_key, by_name = (
        keras_cam.explain(model, x, output=name, verbose=0)
        for name in ("kind" if as_dict else 0, "kind_head")
    )
    np.testing.assert_array_equal(by_key.predicted, to_numpy(kind).argmax(1))
    np.testing.assert_allclose(by_key.confidence, to_numpy(kind).max(1), rtol=1e-5)
    np.testing.assert_allclose(by_name.raw, by_key.raw, rtol=1e-6)
    assert -1.0 <= keras_cam.sanity_check(model, x, output="kind_head") <= 1.0
    regression = keras_cam.explain(
        model, x, output="size" if as_dict else 1, targets=T.output(), verbose=0
    )
    np.testing.assert_allclose(regression.scores, to_numpy(size)[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output='age' is not an output"):
        keras_cam.explain(model, x, output="age", verbose=0)
    with pytest.raises(ValueError, match="the given explainer explains"):
        keras_cam.sanity_check(
            model,
            x,
            output="kind_head",
            explainer=keras_cam.CAMExplainer(model, output="size_head"),
        )


# --- 15. subclassed and dict-input models ------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.conv = layers.Conv2D(4, 3, activation="relu", name="conv")
        self.pool = layers.GlobalAveragePooling2D()
        self.head = layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_subclassed_model_is_refused_with_how_to_wrap_it(tmp_path):
    sub, x = Subclassed(), images()
    sub(x)
    for call in (
        lambda: keras_cam.explain(sub, x, verbose=0),
        lambda: keras_cam.explain(sub, x, layer="conv", verbose=0),
        lambda: keras_cam.CAMExplainer(sub),
        lambda: keras_cam.sanity_check(sub, x),
    ):
        with pytest.raises(TypeError, match=r"subclassed keras.Model.*not supported.*keras.Input"):
            call()
    sub.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(TypeError, match="subclassed"):
        sub.fit(x, np.zeros(2), epochs=1, verbose=0, callbacks=[keras_cam.CAMCallback(x, tmp_path)])
    # The wrapper the message describes shares the trained weights and explains.
    inputs = keras.Input((SIZE, SIZE, 3))
    wrapped = keras.Model(inputs, sub.head(sub.pool(sub.conv(inputs))))
    np.testing.assert_allclose(to_numpy(wrapped(x)), to_numpy(sub(x)), rtol=1e-6)
    assert keras_cam.explain(wrapped, x, verbose=0).layer == "conv"


def dict_input_model():
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    outputs = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    return keras.Model({"images": inputs}, outputs)


def test_dict_input_model_takes_its_own_dict_in_explain_and_the_probe(tmp_path):
    model, x = dict_input_model(), images(n=4)
    by_dict = keras_cam.explain(model, {"images": x}, verbose=0)
    by_array = keras_cam.explain(model, x, verbose=0)
    np.testing.assert_allclose(by_dict.raw, by_array.raw, rtol=1e-6)
    assert by_dict.heatmaps.shape == (4, SIZE, SIZE)
    assert keras_cam.sanity_check(model, {"images": x}) == pytest.approx(
        keras_cam.sanity_check(model, x)
    )
    with pytest.raises(ValueError, match=r"key 'pixels' but model .* takes \['images'\]"):
        keras_cam.explain(model, {"pixels": x}, verbose=0)
    with pytest.raises(ValueError, match="dict of 2 inputs"):
        keras_cam.explain(model, {"images": x, "extra": x}, verbose=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    labels = np.arange(4) % 3
    callback = keras_cam.CAMCallback(
        ({"images": x}, labels), tmp_path, view=keras_cam.ViewOptions(images=("grid",))
    )
    model.fit({"images": x}, labels, epochs=1, verbose=0, callbacks=[callback])
    with open(tmp_path / "cam_metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4
    assert {row["method"] for row in rows} == {"gradcam"}


# --- 16. smaller gaps ------------------------------------------------------------------


def test_alarm_thresholds_must_be_finite_numbers():
    for kwargs in ({"above": float("nan")}, {"below": float("inf")}, {"above": -np.inf}):
        with pytest.raises(ValueError, match="can never be crossed"):
            keras_cam.Alarm("focus", **kwargs)
    with pytest.raises(ValueError, match="must be a number"):
        keras_cam.Alarm("focus", above="0.5")
    assert str(keras_cam.Alarm("focus", above=np.float32(0.5))) == "focus above 0.5 for 1 event"


def test_positive_targets_on_a_softmax_head_are_refused():
    with pytest.raises(ValueError, match=r"ends in a softmax.*'top<k>'"):
        keras_cam.explain(conv_classifier(SIZE), images(), targets="positive", verbose=0)
    sigmoid = conv_classifier(SIZE, activation="sigmoid")
    result = keras_cam.explain(sigmoid, images(), targets="positive", verbose=0)
    assert result.heatmaps.shape == (2, 3, SIZE, SIZE)


def test_float_targets_and_complex_images_are_refused_by_what_they_are():
    model = conv_classifier(SIZE)
    for value in (1.0, np.float32(2.0), np.array(1)):
        with pytest.raises(ValueError, match=r"is not a class index.*integer class index") as info:
            keras_cam.explain(model, images(), targets=value, verbose=0)
        assert "sequence" not in str(info.value)
    with pytest.raises(ValueError, match="complex"):
        keras_cam.explain(model, images().astype(np.complex64), verbose=0)


def test_unbatched_probe_error_shows_the_shape_passed(tmp_path):
    model, x = conv_classifier(SIZE), images(n=4)
    model.compile("sgd", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(x[0], tmp_path)
    with pytest.raises(ValueError, match=r"one image of shape \(16, 16, 3\).*images\[None\]"):
        model.fit(x, np.zeros(4), epochs=1, verbose=0, callbacks=[callback])
