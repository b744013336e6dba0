"""The head's activation is found through pass-through layers and nested models (issue 22.6).

Grad-CAM of a GAP -> Dense head has a closed form: the gradient of logit c
with respect to activation A[i, j, k] is W[k, c] / (h·w), so the raw map is
relu(Σ_k W[k, c] A_k / (h·w)). Every variant of the same classifier (softmax
as a separate layer, before a Reshape/Flatten, wrapped in an outer Model)
must give exactly that map, the logit gradient, never the probability's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_cam
from keras_cam.core import scores

CLASSES = 3


def _classifier(ending: str) -> tuple[keras.Model, keras.layers.Layer, keras.layers.Layer]:
    """A small CNN classifier; returns (model, feature layer, logits Dense)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")
    x = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    if ending == "activation_layer":
        dense = keras.layers.Dense(CLASSES, name="logits")
        outputs = keras.layers.Activation("softmax")(dense(x))
    elif ending == "softmax_then_reshape":
        dense = keras.layers.Dense(CLASSES, activation="softmax", name="logits")
        outputs = keras.layers.Reshape((CLASSES,))(dense(x))
    elif ending == "softmax_then_flatten":
        dense = keras.layers.Dense(CLASSES, activation="softmax", name="logits")
        shaped = keras.layers.Reshape((1, 1, CLASSES))(dense(x))
        outputs = keras.layers.Dropout(0.5)(keras.layers.Flatten()(shaped))
    else:
        raise AssertionError(ending)
    return keras.Model(inputs, outputs, name="classifier"), conv, dense


def _wrapped(model: keras.Model) -> keras.Model:
    """The classifier as one layer of an outer model, as in fine-tuning."""
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, model(inputs), name="outer")


def _reference(model, conv, dense, images):
    """Closed-form Grad-CAM of the logit of the predicted class (numpy), and the logits."""
    activations = keras.ops.convert_to_numpy(
        keras.Model(model.inputs, conv.output)(images.astype("float32"))
    )
    pooled = activations.mean(axis=(1, 2))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
    logits = pooled @ kernel + bias
    classes = logits.argmax(axis=-1)
    h, w = activations.shape[1:3]
    weights = kernel[:, classes].T / (h * w)  # (N, C)
    raw = np.maximum(np.einsum("nijk,nk->nij", activations, weights), 0.0)
    return raw, logits, classes


@pytest.mark.parametrize(
    "ending", ["activation_layer", "softmax_then_reshape", "softmax_then_flatten"]
)
@pytest.mark.parametrize("wrap", [False, True], ids=["direct", "wrapped"])
def test_maps_are_logit_gradients_however_the_softmax_is_placed(ending, wrap):
    model, conv, dense = _classifier(ending)
    images = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    raw, logits, classes = _reference(model, conv, dense, images)
    explained = _wrapped(model) if wrap else model

    result = keras_cam.explain(explained, images, layer="features", verbose=0)

    np.testing.assert_array_equal(result.classes, classes)
    np.testing.assert_allclose(result.raw, raw, rtol=1e-4, atol=1e-6)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    # The reported score is the probability (one softmax, not two).
    np.testing.assert_allclose(
        result.scores, probabilities[np.arange(len(images)), classes], rtol=1e-4
    )


def test_probability_score_differs_from_the_logit_map():
    """The check above is sharp: the probability's gradient gives another map."""
    model, conv, dense = _classifier("activation_layer")
    images = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    raw, _, _ = _reference(model, conv, dense, images)
    result = keras_cam.explain(
        _wrapped(model), images, layer="features", score="probability", verbose=0
    )
    assert not np.allclose(result.raw, raw, rtol=1e-2)


def test_head_layer_is_found_through_nesting_and_reshapes():
    model, _, dense = _classifier("softmax_then_flatten")
    outer = _wrapped(model)
    assert scores.head_layer(outer.outputs[0]) is dense
    assert scores.output_activation(scores.head_layer(outer.outputs[0])) == "softmax"


def test_a_regrouping_reshape_is_not_looked_through():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(6, activation="softmax")
    reshape = keras.layers.Reshape((2, 3))
    model = keras.Model(inputs, reshape(dense(inputs)))
    assert scores.head_layer(model.outputs[0]) is reshape
    assert scores.output_activation(reshape) is None


def test_cam_explainer_uses_the_wrapped_heads_logits():
    """`CAMExplainer` (which the callback runs) reads the same head."""
    model, conv, dense = _classifier("activation_layer")
    images = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    raw, _, _ = _reference(model, conv, dense, images)
    explainer = keras_cam.CAMExplainer(_wrapped(model), layer="features")
    np.testing.assert_allclose(explainer(images).raw, raw, rtol=1e-4, atol=1e-6)
