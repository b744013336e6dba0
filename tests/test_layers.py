"""Finding the target layer and splitting the model there."""

import keras
import numpy as np
import pytest
from conftest import conv_classifier, to_numpy
from keras import layers

import keras_cam
from keras_cam.layers import spatial_layers, split_model


def test_automatic_layer_is_the_last_spatial_layer_before_the_head(model):
    split = split_model(model)
    assert split.path == "conv2"
    assert [type(layer).__name__ for layer in split.head_layers] == [
        "GlobalAveragePooling2D",
        "Dense",
    ]
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    recomposed = split.head(split.features(x, training=False), training=False)
    np.testing.assert_allclose(to_numpy(recomposed), to_numpy(model(x)), rtol=1e-6)


def test_split_leaves_the_user_graph_as_it_was(model):
    outputs = [layer.output for layer in model.layers]
    config = model.get_config()
    split_model(model, "conv1")
    split_model(model)
    assert [layer.output for layer in model.layers] == outputs
    assert model.get_config() == config


def test_unknown_layer_lists_the_spatial_candidates(model):
    with pytest.raises(ValueError, match=r"No layer 'conv9'.*conv1, conv2"):
        split_model(model, "conv9")


def test_layer_without_spatial_output_is_rejected(model):
    with pytest.raises(ValueError, match=r"'gap' has output shape \(None, 5\), not a 4-D"):
        split_model(model, "gap")


def test_model_without_spatial_layer_is_rejected():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, layers.Dense(2)(layers.Dense(4)(inputs)))
    with pytest.raises(ValueError, match="no layer with a 4-D"):
        split_model(model)


def test_layer_inside_a_residual_branch_is_not_a_cut_point():
    inputs = keras.Input((8, 8, 3))
    trunk = layers.Conv2D(4, 3, padding="same", name="trunk")(inputs)
    branch = layers.Conv2D(4, 3, padding="same", name="branch")(trunk)
    merged = layers.Add(name="merge")([trunk, branch])
    outputs = layers.Dense(2)(layers.GlobalAveragePooling2D()(merged))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"does not depend on 'branch' alone"):
        split_model(model, "branch")
    assert split_model(model).path == "merge"


def test_nested_paths_and_candidates():
    base = conv_classifier(name="base")
    base = keras.Model(base.input, base.get_layer("conv2").output, name="base")
    model = keras.Sequential([base, layers.GlobalAveragePooling2D(), layers.Dense(2)])
    model.build((None, 16, 16, 3))
    assert spatial_layers(model) == ["base/conv1", "base/conv2", "base"]
    assert split_model(model).path == "base/conv2"
    assert split_model(model, "base/conv1").path == "base/conv1"
    with pytest.raises(ValueError, match=r"No layer .base/conv1/x.*base/conv2"):
        split_model(model, "base/conv1/x")


def test_subclassed_and_multi_input_models_are_rejected_multi_output_ones_need_output():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 3)
            self.head = layers.Dense(2)

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    subclassed = Subclassed()
    subclassed(np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="subclassed model"):
        split_model(subclassed)

    inputs = keras.Input((8, 8, 3))
    pooled = layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3)(inputs))
    two_heads = keras.Model(inputs, [layers.Dense(2)(pooled), layers.Dense(3)(pooled)])
    # Several outputs split fine (the head returns both; `output=` picks one), but
    # explaining without choosing one names them.
    split = split_model(two_heads)
    assert [tuple(t.shape) for t in split.head(split.features(np.zeros((1, 8, 8, 3))))] == [
        (1, 2),
        (1, 3),
    ]
    with pytest.raises(ValueError, match=r"has 2 outputs: 0 .*\(None, 2\), 1 .*Pass output="):
        keras_cam.explain(two_heads, np.zeros((1, 8, 8, 3), "float32"))
    two_inputs = keras.Model([inputs, keras.Input((4,))], pooled)
    with pytest.raises(ValueError, match="has 2 inputs"):
        split_model(two_inputs)
