"""CAMExplainer against independent computations: an explicit GradientTape and plain numpy."""

import gc
import logging
import sys
import warnings
import weakref
from typing import ClassVar

import keras
import numpy as np
import pytest
from conftest import (
    conv_classifier,
    feature_map_methods,
    gradient,
    model_that_barely_reads_its_features,
    skip_if_channels_first_cannot_run,
)
from keras import layers, ops

import keras_cam
from keras_cam.compute import backend_module
from keras_cam.core import explainer_cache
from keras_cam.core.explainer import _normalise
from keras_cam.core.progress import planned_passes
from keras_cam.methods import ScoreCAM


def numpy_gradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * activations).sum(axis=-1), 0.0)


def numpy_normalise(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)


def tape_activations_and_gradients(model, x, layer_name, classes, probability=False):
    """Independent of keras_cam: run the layers by hand, logits computed from the Dense kernel."""
    target = model.get_layer(layer_name)
    features = keras.Model(model.input, target.output)
    after = model.layers[model.layers.index(target) + 1 :]
    a = ops.convert_to_numpy(features(x))

    def score(activations):
        h = activations
        for layer in after[:-1]:
            h = layer(h)
        last = after[-1]
        logits = ops.matmul(h, last.kernel) + last.bias
        out = ops.softmax(logits) if probability else logits
        return ops.take_along_axis(out, ops.convert_to_tensor(classes[:, None]), axis=1)

    return a, gradient(score, a)


def nonlinear_head_model() -> keras.Model:
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(6, 3, padding="same", activation="tanh", name="target")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(8, activation="relu")(x)
    outputs = layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_gradcam_matches_explicit_tape_and_numpy(score):
    model = nonlinear_head_model()
    x = np.random.default_rng(1).normal(size=(5, 12, 12, 3)).astype("float32")
    classes = np.array([0, 1, 2, 1, 0])
    result = keras_cam.CAMExplainer(model, layer="target", score=score)(x, targets=classes)
    a, g = tape_activations_and_gradients(
        model, x, "target", classes, probability=score == "probability"
    )
    expected = numpy_gradcam(a, g)
    scale = expected.max()
    assert scale > 0
    np.testing.assert_allclose(result.raw, expected, atol=1e-5 * scale)
    # The target layer is at full resolution, so upsampling is the identity.
    np.testing.assert_allclose(result.heatmaps, numpy_normalise(expected), atol=1e-4)
    np.testing.assert_array_equal(result.classes, classes)
    probabilities = model.predict(x, verbose=0)
    np.testing.assert_allclose(result.scores, probabilities[np.arange(5), classes], rtol=1e-5)
    np.testing.assert_array_equal(result.predicted, probabilities.argmax(1))


def test_logit_and_probability_gradients_differ_when_confident():
    model = nonlinear_head_model()
    model.get_layer("out").set_weights(
        [
            np.random.default_rng(5).normal(size=(8, 3)).astype("float32"),
            np.array([40.0, 0.0, 0.0], "float32"),
        ]
    )
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 3)).astype("float32")
    logit = keras_cam.explain(model, x, layer="target", targets=0)
    probability = keras_cam.explain(model, x, layer="target", targets=0, score="probability")
    # p ≈ 1 saturates the softmax: its gradient vanishes, the logit's does not.
    assert logit.raw.max() > 0
    assert probability.raw.max() < 1e-6 * logit.raw.max()


@pytest.mark.parametrize("method", ["gradcam", "xgradcam", "hirescam"])
def test_gradient_methods_on_a_linear_gap_dense_head_equal_cam(model, images, method):
    gradcam = keras_cam.explain(model, images, method=method)
    cam = keras_cam.explain(model, images, method="cam")
    assert gradcam.layer == cam.layer == "conv2"
    # d logit_k / dA_ijc = W[c, k] / (h·w) everywhere: Grad-CAM's mean gradient, XGrad-CAM's
    # activation-weighted mean and HiResCAM's per-location gradient all equal W[c, k] / (h·w),
    # so each map is CAM scaled by the positive factor 1/(h·w).
    h, w = cam.raw.shape[1:]
    np.testing.assert_allclose(gradcam.raw, cam.raw / (h * w), atol=1e-6 * cam.raw.max())
    np.testing.assert_allclose(gradcam.heatmaps, cam.heatmaps, atol=1e-4)
    np.testing.assert_array_equal(gradcam.classes, cam.classes)


def test_the_user_model_is_left_unchanged(model, images):
    before = model.predict(images, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    keras_cam.explain(model, images)
    assert model.get_layer("dense").activation is keras.activations.softmax
    np.testing.assert_array_equal(model.predict(images, verbose=0), before)
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("method", feature_map_methods())
def test_compiled_once_and_sees_current_weights(model, images, method):
    explainer = keras_cam.CAMExplainer(model, method)
    first = explainer(images, targets=1)
    again = explainer(images, targets=[0, 1, 2, 0])
    assert explainer.trace_count == 1
    kernel, bias = model.get_layer("dense").get_weights()
    model.get_layer("dense").set_weights([-kernel, bias])
    conv_kernel, conv_bias = model.get_layer("conv2").get_weights()
    scale = np.random.default_rng(5).uniform(0.5, 1.5, conv_kernel.shape).astype("float32")
    model.get_layer("conv2").set_weights([conv_kernel * scale, conv_bias])
    flipped = explainer(images, targets=1)
    assert explainer.trace_count == 1
    # Sobel-CAM is the baseline that ignores the model: its map must not move.
    assert np.allclose(first.raw, flipped.raw) == (method == "sobelcam")
    np.testing.assert_array_equal(again.classes, [0, 1, 2, 0])
    expected = keras_cam.explain(model, images, method=method, targets=1)
    np.testing.assert_allclose(flipped.raw, expected.raw, rtol=1e-5, atol=1e-7)


def linear_head_reference(base_features, dense, x, classes):
    a = ops.convert_to_numpy(base_features(x))
    kernel = dense.get_weights()[0]
    h, w = a.shape[1:3]
    return np.maximum(np.einsum("nijc,cn->nij", a, kernel[:, classes]) / (h * w), 0.0)


def small_base(name="base") -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="b_conv1")(inputs)
    x = layers.MaxPooling2D(name="b_pool")(x)
    x = layers.Conv2D(5, 3, padding="same", activation="relu", name="b_conv2")(x)
    return keras.Model(inputs, x, name=name)


def test_nested_frozen_base_in_sequential_needs_no_layer_argument(images):
    base = small_base()
    base.trainable = False
    dense = layers.Dense(3)
    model = keras.Sequential([base, layers.GlobalAveragePooling2D(), dense])
    model.build((None, 16, 16, 3))
    result = keras_cam.explain(model, images, targets=[2, 1, 0, 2])
    assert result.layer == "base/b_conv2"
    expected = linear_head_reference(base, dense, images, np.array([2, 1, 0, 2]))
    np.testing.assert_allclose(result.raw, expected, atol=1e-5 * expected.max())
    assert result.heatmaps.shape == (4, 16, 16)


def test_nested_base_in_functional_model_with_preprocessing(images):
    base = small_base()
    inputs = keras.Input((16, 16, 3))
    scaled = layers.Rescaling(2.0)(inputs)
    pooled = layers.GlobalAveragePooling2D()(base(scaled, training=False))
    dense = layers.Dense(3)
    model = keras.Model(inputs, dense(pooled))
    result = keras_cam.explain(model, images, layer="base/b_conv2", targets=1)
    expected = linear_head_reference(base, dense, images * 2.0, np.ones(4, int))
    np.testing.assert_allclose(result.raw, expected, atol=1e-5 * expected.max())
    # A unique leaf name is enough.
    assert keras_cam.CAMExplainer(model, layer="b_conv1").layer == "base/b_conv1"
    # So is the layer object itself, also inside a nested base.
    assert keras_cam.CAMExplainer(model, layer=base.get_layer("b_conv2")).layer == "base/b_conv2"


def test_sequential_without_input_is_built_on_first_call(images):
    model = keras.Sequential(
        [
            layers.Conv2D(4, 3, activation="relu", name="c"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(2),
        ]
    )
    assert not model.built
    result = keras_cam.explain(model, images)
    assert result.layer == "c"
    assert result.raw.shape == (4, 14, 14)
    assert result.heatmaps.shape == (4, 16, 16)


def test_channels_first_model_gives_the_channels_last_maps(images):
    def build(data_format):
        shape = (3, 16, 16) if data_format == "channels_first" else (16, 16, 3)
        inputs = keras.Input(shape)
        x = layers.Conv2D(4, 3, padding="same", activation="relu", data_format=data_format)(inputs)
        x = layers.Conv2D(5, 3, padding="same", data_format=data_format, name="t")(x)
        x = layers.GlobalAveragePooling2D(data_format=data_format)(x)
        return keras.Model(inputs, layers.Dense(3)(x))

    last, first = build("channels_last"), build("channels_first")
    first.set_weights(last.get_weights())
    skip_if_channels_first_cannot_run(first, images.transpose(0, 3, 1, 2))
    expected = keras_cam.explain(last, images, targets=1)
    result = keras_cam.explain(first, images, targets=1)
    assert result.layer == "t"
    np.testing.assert_allclose(result.raw, expected.raw, atol=1e-5 * expected.raw.max())


def test_single_sigmoid_unit_explains_class_zero_with_the_negated_score(images):
    model = conv_classifier(classes=1, activation="sigmoid")
    one = keras_cam.explain(model, images, targets=1)
    zero = keras_cam.explain(model, images, targets=0)
    a = ops.convert_to_numpy(keras.Model(model.input, model.get_layer("conv2").output)(images))
    kernel = model.get_layer("dense").get_weights()[0][:, 0]
    signed = np.einsum("nijc,c->nij", a, kernel) / (16 * 16)
    atol = 1e-5 * np.abs(signed).max()
    np.testing.assert_allclose(one.raw, np.maximum(signed, 0), atol=atol)
    np.testing.assert_allclose(zero.raw, np.maximum(-signed, 0), atol=atol)
    p = model.predict(images, verbose=0)[:, 0]
    np.testing.assert_allclose(one.scores, p, rtol=1e-5)
    np.testing.assert_allclose(zero.scores, 1 - p, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(one.predicted, (p > 0.5).astype(int))


def test_callable_target_equals_the_class_it_selects(model, images):
    by_index = keras_cam.explain(model, images, targets=2)
    by_callable = keras_cam.explain(model, images, targets=lambda logits: logits[:, 2])
    np.testing.assert_allclose(by_callable.raw, by_index.raw, rtol=1e-6)


def test_label_targets_accept_sparse_and_one_hot_labels(model, images):
    labels = np.array([2, 0, 1, 1])
    sparse = keras_cam.explain(model, images, targets="label", labels=labels)
    one_hot = keras_cam.explain(model, images, targets="label", labels=np.eye(3)[labels])
    np.testing.assert_array_equal(sparse.classes, labels)
    np.testing.assert_allclose(one_hot.raw, sparse.raw)


def test_display_formats_uint8_and_grayscale_give_heatmaps_at_display_size():
    model = conv_classifier(channels=1)
    gray = np.random.default_rng(3).integers(0, 256, size=(2, 16, 16), dtype=np.uint8)
    from_2d = keras_cam.explain(model, gray)
    from_4d = keras_cam.explain(model, gray[..., None])
    assert from_2d.heatmaps.shape == (2, 16, 16)
    np.testing.assert_allclose(from_2d.raw, from_4d.raw)


def test_preprocess_maps_display_images_to_model_input(model):
    display = np.random.default_rng(4).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    upsample = lambda im: np.repeat(np.repeat(im / 255.0, 2, axis=1), 2, axis=2)  # noqa: E731
    result = keras_cam.explain(model, display, preprocess=upsample)
    direct = keras_cam.explain(model, upsample(display))
    np.testing.assert_allclose(result.raw, direct.raw)
    assert result.heatmaps.shape == (2, 8, 8)


@pytest.mark.parametrize("method", feature_map_methods())
def test_all_zero_activations_give_finite_zero_maps(images, method):
    if method == "sobelcam":
        pytest.skip("Sobel-CAM maps the input's edges, not the activations")
    model = conv_classifier()
    for layer_name in ("conv1", "conv2"):
        layer = model.get_layer(layer_name)
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    smoothings = [{}, {"aug_smooth": True}]
    if keras_cam.methods.get_method(method).has_channel_contributions:
        smoothings.append({"eigen_smooth": True})
    for smoothing in smoothings:
        result = keras_cam.explain(model, images, method=method, **smoothing)
        assert np.isfinite(result.heatmaps).all()
        assert (result.heatmaps == 0).all()
        assert (result.raw == 0).all()


def test_non_finite_maps_raise_a_clear_error(model, images):
    dense = model.get_layer("dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.full_like(kernel, np.nan), bias])
    with pytest.raises(FloatingPointError, match=r"layer 'conv2' is not finite"):
        keras_cam.explain(model, images)


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        (np.zeros((2, 20, 20, 3)), {}, r"expects input of shape \(None, 16, 16, 3\).*Resize"),
        (np.zeros((16, 16, 3)), {}, r"batch axis"),
        (np.zeros((2, 16, 16, 3)), {"targets": 3}, r"Class index 3 is out of range.*3 classes"),
        (np.zeros((2, 16, 16, 3)), {"targets": "label"}, r"targets='label' needs labels"),
        (
            np.zeros((2, 16, 16, 3)),
            {"targets": "label", "labels": [1, 2, 0]},
            r"3 labels for 2 images",
        ),
        (np.zeros((2, 16, 16, 3)), {"targets": [1]}, r"one integer class index per image"),
        (np.zeros((2, 16, 16, 3)), {"score": "prob"}, r"score must be one of"),
    ],
)
def test_bad_input_names_the_problem(model, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_cam.explain(model, images, **kwargs)


def test_preprocess_that_edits_in_place_leaves_the_display_images_alone(model, images):
    def in_place(batch):
        batch -= 0.5
        return batch

    display = images.copy()
    keras_cam.explain(model, display, preprocess=in_place)
    np.testing.assert_array_equal(display, images)


@pytest.mark.parametrize("final", ["softmax_layer", "activation_layer"])
def test_logits_are_read_through_separate_softmax_layers(images, final):
    dense_softmax = conv_classifier()
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for layer in dense_softmax.layers[1:-1]:
        x = layer(x)
    logits = layers.Dense(3, name="logits")(x)
    last = layers.Softmax() if final == "softmax_layer" else layers.Activation("softmax")
    separate = keras.Model(inputs, last(logits))
    separate.get_layer("logits").set_weights(dense_softmax.get_layer("dense").get_weights())
    expected = keras_cam.explain(dense_softmax, images, targets=1)
    result = keras_cam.explain(separate, images, targets=1)
    np.testing.assert_allclose(result.raw, expected.raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-5)
    # The softmax is back in place for the user.
    np.testing.assert_allclose(separate.predict(images, verbose=0).sum(axis=1), 1.0, rtol=1e-5)


def test_several_methods_share_one_forward_and_backward_pass(model, images, monkeypatch):
    compute = backend_module()
    passes = []
    original = compute.activations_and_gradients

    def counted(*args):
        passes.append(args[-1])  # need_gradients
        return original(*args)

    monkeypatch.setattr(compute, "activations_and_gradients", counted)
    names = ["gradcam", "layercam", "gradcam++", "eigencam", "ablationcam"]
    explainer = keras_cam.CAMExplainer(model, names)
    results = explainer(images)
    assert list(results) == names
    assert passes == [True]  # one pass, with gradients, for all five methods
    explainer(images)
    assert explainer.trace_count == 1
    for name in names:
        single = keras_cam.explain(model, images, method=name)
        np.testing.assert_allclose(results[name].raw, single.raw, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(results[name].classes, single.classes)


@pytest.mark.usefixtures("no_gradients")
def test_gradient_free_methods_skip_the_backward_pass(model, images):
    results = keras_cam.CAMExplainer(model, ["eigencam", "scorecam", "ablationcam", "cam"])(images)
    assert all(np.isfinite(result.heatmaps).all() for result in results.values())


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (["gradcam", "GradCAM"], "listed twice"),
        ([], "empty"),
        ("gradcampp", "Available methods: .*'gradcam\\+\\+'"),
    ],
)
def test_bad_method_lists_name_the_problem(model, method, message):
    with pytest.raises(ValueError, match=message):
        keras_cam.CAMExplainer(model, method)


@pytest.mark.parametrize("units", [3, 1])
def test_confidence_of_a_linear_head_is_a_probability(units):
    # A Dense(k) trained from_logits=True: the reported confidence is softmax over the
    # logits (sigmoid for one unit), computed here from the model's raw output.
    model = conv_classifier(classes=units, activation=None)
    x = np.random.default_rng(3).uniform(size=(5, 16, 16, 3)).astype("float32")
    result = keras_cam.explain(model, x)
    logits = keras.ops.convert_to_numpy(model(x)).astype(np.float64)
    if units == 1:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        expected = np.where(logits[:, 0] > 0, p, 1.0 - p)
    else:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected = (e / e.sum(axis=1, keepdims=True)).max(axis=1)
    np.testing.assert_allclose(result.confidence, expected, rtol=1e-5)
    np.testing.assert_allclose(
        result.scores, logits.max(axis=1) if units > 1 else np.abs(logits[:, 0]), rtol=1e-5
    )


def test_a_single_image_on_a_model_of_dynamic_input_size_asks_for_a_batch_axis(images):
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"batch axis: images\[None\]"):
        keras_cam.explain(model, images[0])
    callback = keras_cam.CAMCallback(images[0], "unused")
    callback.set_model(model)
    with pytest.raises(ValueError, match=r"batch axis: images\[None\]"):
        callback.on_train_begin()
    assert keras_cam.explain(model, images[:1]).heatmaps.shape == (1, 16, 16)


def test_a_one_channel_model_of_dynamic_size_still_reads_3d_arrays_as_grayscale():
    inputs = keras.Input((None, None, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    gray = np.random.default_rng(0).uniform(size=(3, 10, 12)).astype("float32")
    assert keras_cam.explain(model, gray).heatmaps.shape == (3, 10, 12)


def test_maps_constant_up_to_rounding_have_nothing_to_show():
    one_ulp = np.nextafter(np.float32(1), np.float32(2))
    almost_constant = np.array([[[1.0, one_ulp], [one_ulp, 1.0]]], dtype="float32") * 3.7
    normalised = ops.convert_to_numpy(_normalise(ops.convert_to_tensor(almost_constant)))
    np.testing.assert_array_equal(normalised, np.zeros_like(almost_constant))
    contrast = np.array([[[1.0, 1.001], [1.0, 1.0]]], dtype="float32")
    normalised = ops.convert_to_numpy(_normalise(ops.convert_to_tensor(contrast)))
    np.testing.assert_allclose(normalised, [[[0, 1], [0, 0]]], atol=1e-3)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam"])
def test_a_constant_feature_map_gives_zero_heatmaps_on_every_backend(method):
    """Constant activations upsampled to an odd size: rounding noise must not become a pattern."""
    model = conv_classifier(size=7)
    for name, bias in (("conv1", 0.3), ("conv2", 0.7)):
        layer = model.get_layer(name)
        kernel, _ = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.full(kernel.shape[-1], bias, "float32")])
    images = np.random.default_rng(0).uniform(size=(3, 13, 13, 3)).astype("float32")
    result = keras_cam.CAMExplainer(model, method)(images, preprocess=lambda x: x[:, ::2, ::2])
    raw = result.raw
    assert raw.max() > 0
    assert np.ptp(raw, axis=(1, 2)).max() <= 1e-6 * raw.max()
    np.testing.assert_array_equal(result.heatmaps, np.zeros_like(result.heatmaps))


def hidden_softmax_model(hidden: bool) -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(inputs)
    x = layers.Dense(3, name="dense")(layers.GlobalAveragePooling2D()(x))
    if hidden:
        outputs = layers.Lambda(lambda logits: ops.softmax(logits), name="probabilities")(x)
    else:
        outputs = layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs)


def test_a_softmax_hidden_from_the_score_switch_warns_once(images):
    explainer = keras_cam.CAMExplainer(hidden_softmax_model(hidden=True))
    with pytest.warns(UserWarning, match=r"look like probabilities.*'probabilities'.*Lambda"):
        explainer(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # not Keras' own DeprecationWarnings
        explainer(images)  # once per explainer
        keras_cam.explain(hidden_softmax_model(hidden=False), images)  # switched off: logits
        keras_cam.explain(hidden_softmax_model(hidden=True), images, score="probability")
        keras_cam.explain(conv_classifier(activation=None), images)


def test_preprocess_that_changes_the_batch_size_is_an_error(model, images):
    with pytest.raises(ValueError, match=r"preprocess turned 4 images into.*keep the batch size"):
        keras_cam.explain(model, images, preprocess=lambda x: x[:2])


@pytest.mark.parametrize(
    ("method", "message"),
    [(None, r"method must be a method name"), (keras_cam.methods.GradCAM, r"a method class")],
)
def test_a_method_that_is_no_method_instance_is_a_type_error(model, images, method, message):
    with pytest.raises(TypeError, match=message):
        keras_cam.explain(model, images, method=method)


def test_a_map_negligible_next_to_the_layers_activations_is_all_zero_not_stretched():
    model = model_that_barely_reads_its_features()
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    explainer = keras_cam.CAMExplainer(model)
    result = explainer(x)
    activations = ops.convert_to_numpy(
        keras.Model(model.inputs, model.get_layer("conv2").output)(x)
    )
    peaks = np.abs(activations).reshape(4, -1).max(axis=1)
    raw_peaks = result.raw.reshape(4, -1).max(axis=1)
    assert (raw_peaks > 0).any()  # a pattern that stretching would show at full strength
    assert (raw_peaks <= 1e-6 * peaks).all()
    np.testing.assert_array_equal(result.heatmaps, 0.0)
    # The same maps a billion times larger are not negligible: shown, stretched to [0, 1].
    kernel, bias = model.get_layer("dense").get_weights()
    model.get_layer("dense").set_weights([kernel * 1e9, bias])
    assert explainer(x).heatmaps.max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("score", "shape"),
    [(lambda logits: logits, r"\(4, 3\)"), (lambda logits: ops.sum(logits[:, 0]), r"\(\)")],
)
def test_a_callable_target_must_give_one_score_per_image(model, images, score, shape):
    with pytest.raises(
        ValueError, match=rf"one score per image, shape \(4,\).*returned shape {shape}"
    ):
        keras_cam.explain(model, images, targets=score)


def test_explain_reuses_its_explainer_per_model_and_options_and_lets_the_model_go(images, caplog):
    model = conv_classifier()
    with caplog.at_level(logging.WARNING):
        for _ in range(6):
            keras_cam.explain(model, images)
    assert "retracing" not in caplog.text
    cache = model.__dict__[explainer_cache._ATTRIBUTE]
    (explainer,) = cache.values()
    assert explainer.trace_count == 1
    if keras.backend.backend() == "tensorflow":  # one more compile: TF pass only
        # Options that change the compiled function get their own explainer.
        keras_cam.explain(model, images, method="layercam")
        assert len(cache) == 2
        assert explainer.trace_count == 1
    alive = weakref.ref(model)
    del model, cache, explainer
    gc.collect()
    assert alive() is None


def test_verbose_shows_a_progress_bar_of_the_forward_passes_as_model_predict_does(
    model, images, capsys, monkeypatch
):
    keras_cam.explain(model, images, verbose=0)
    assert capsys.readouterr().out == ""
    keras_cam.explain(model, images, verbose=1)
    shown = capsys.readouterr().out
    assert "0/4" in shown  # the planned total, as the call starts
    assert "4/4" in shown
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    keras_cam.explain(model, images)  # "auto": silent where the output is not read live
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"verbose must be 'auto', 0, 1 or 2"):
        keras_cam.explain(model, images, verbose="yes")
    # Score-CAM adds one masked pass per image and channel of conv2 (5): 4 + 4 · 5.
    score_cam = keras_cam.CAMExplainer(model, ["gradcam", ScoreCAM()])
    assert planned_passes(score_cam, 4) == 24
    assert planned_passes(keras_cam.CAMExplainer(model, ScoreCAM(max_channels=2)), 4) == 12


@pytest.mark.slow  # the scale is numpy after the compiled call: one backend is enough
def test_normalize_probe_puts_every_map_of_the_call_on_one_scale_without_retracing():
    model = nonlinear_head_model()
    x = np.random.default_rng(1).normal(size=(5, 12, 12, 3)).astype("float32")
    x[1] *= 0.05  # a faint image: its map is weak, and must look weak
    classes = np.array([0, 1, 2, 1, 0])
    expected = numpy_gradcam(*tape_activations_and_gradients(model, x, "target", classes))
    explainer = keras_cam.CAMExplainer(model, ["gradcam", "layercam"], layer="target")
    # The target layer is at full resolution: the heatmaps are the raw maps over one peak.
    probe = explainer(x, targets=classes, normalize="probe")
    np.testing.assert_allclose(probe["gradcam"].heatmaps, expected / expected.max(), atol=1e-4)
    layercam = probe["layercam"]  # each method on its own scale: their units differ
    np.testing.assert_allclose(layercam.heatmaps, layercam.raw / layercam.raw.max(), atol=1e-5)
    fixed = explainer(x, targets=classes, normalize=float(expected[2].max()))["gradcam"]
    np.testing.assert_allclose(
        fixed.heatmaps, np.clip(expected / expected[2].max(), 0, 1), atol=1e-4
    )
    image = explainer(x, targets=classes)["gradcam"]  # the default: each map to its own range
    np.testing.assert_allclose(image.heatmaps, numpy_normalise(expected), atol=1e-4)
    assert explainer.trace_count == 1
    top = keras_cam.explain(model, x, layer="target", targets="top2", normalize="probe")
    assert top.heatmaps.shape == (5, 2, 12, 12)
    np.testing.assert_allclose(top.heatmaps, top.raw / top.raw.max(), atol=1e-5)
    with pytest.raises(ValueError, match=r"normalize='run' is the callback's"):
        keras_cam.explain(model, x, normalize="run")


class RecordingProgbar(keras.utils.Progbar):
    """A Progbar that keeps every value it was moved to."""

    made: ClassVar[list["RecordingProgbar"]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []
        RecordingProgbar.made.append(self)

    def update(self, current, values=None, finalize=None):
        self.seen.append(current)
        super().update(current, values, finalize)


def test_the_progress_bar_advances_once_per_chunk_of_masked_passes_without_retracing(
    model, images, monkeypatch
):
    monkeypatch.setattr(keras.utils, "Progbar", RecordingProgbar)
    RecordingProgbar.made.clear()
    score_cam = ScoreCAM(batch_size=3)
    for _ in range(2):
        keras_cam.explain(model, images[:2], method=score_cam, verbose=1)
    # 2 images · 5 channels of conv2 = 10 masked passes in chunks of 3: 3 full, 1 of 1;
    # then the 2 unmasked passes of the call itself, and the final update.
    for bar in RecordingProgbar.made:
        assert bar.target == 12  # said up front
        steps = np.diff(bar.seen[:-1])
        assert sorted(steps) == [1, 2, 3, 3, 3]
        assert bar.seen[0] == 0
        assert bar.seen[-2:] == [12, 12]
    assert len(RecordingProgbar.made) == 2
    (explainer,) = model.__dict__[explainer_cache._ATTRIBUTE].values()
    assert explainer.trace_count == 1
    assert explainer.on_passes is None  # nothing reported once the call is over
