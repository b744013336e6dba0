"""Finding the target layer and splitting the model there."""

import keras
import numpy as np
import pytest
from conftest import conv_classifier, to_numpy
from keras import layers

import keras_cam
from keras_cam.core.layers import spatial_layers, split_model


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


def pooled_head_model(head: str) -> keras.Model:
    """A 4x4 feature map, then one of the heads that end in 1x1 'spatial' layers."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="features")(inputs)
    if head == "keepdims":  # MobileNet: pooled with keepdims, then a 1x1 classifier conv
        x = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
        x = layers.Conv2D(3, 1, name="logits")(x)
    else:  # VGG (KerasHub): a valid conv whose window covers the whole map
        x = layers.Conv2D(6, 4, padding="valid", activation="relu", name="fc1")(x)
        x = layers.Conv2D(3, 1, name="logits")(x)
    return keras.Model(inputs, layers.Flatten()(x))


@pytest.mark.parametrize("head", ["keepdims", "conv_window"])
def test_a_1x1_layer_of_the_head_is_never_the_automatic_layer(head):
    split = split_model(pooled_head_model(head))
    assert split.path == "features"
    assert tuple(split.layer.output.shape[1:3]) == (4, 4)


def test_a_last_stage_that_is_1x1_at_this_input_size_is_a_clear_error():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="stage1")(inputs)
    x = layers.Conv2D(4, 3, strides=4, padding="same", name="stage2")(x)  # 1x1 at 8 px
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(
        ValueError, match=r"'stage2', is 1x1.*layer='stage1' \(4x4\).*larger images"
    ):
        split_model(model)
    with pytest.warns(UserWarning, match=r"'stage2' has a 1x1 spatial output"):
        split_model(model, "stage2")  # asked for by name: allowed, with a warning


@pytest.mark.slow
def test_inception_v3_below_139_px_names_mixed10_and_an_earlier_layer():
    model = keras.applications.InceptionV3(weights=None, input_shape=(96, 96, 3), classes=3)
    with pytest.raises(ValueError, match=r"'mixed10', is 1x1.*layer='mixed7' \(4x4\)"):
        split_model(model)


@pytest.mark.slow
def test_mobilenet_v3_is_explained_before_its_pooling_head():
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(64, 64, 3), classes=3, include_preprocessing=False
    )
    split = split_model(model)
    assert tuple(split.layer.output.shape[1:3]) == (2, 2)
    assert isinstance(split.head_layers[0], layers.GlobalAveragePooling2D)


def test_an_operation_node_is_a_cut_point():
    """`x + f(x)` with the + as an operation (no Add layer), as ConvNeXt builds its blocks."""
    inputs = keras.Input((8, 8, 3))
    trunk = layers.Conv2D(4, 3, padding="same", name="trunk")(inputs)
    block_output = trunk + layers.Conv2D(4, 3, padding="same", name="branch")(trunk)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(block_output)))
    split = split_model(model)
    assert not isinstance(split.layer, keras.layers.Layer)  # the operation itself
    assert split.layer.output is block_output
    assert split_model(model, split.path).path == split.path
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(split.features(x)), to_numpy(trunk_model(model)(x)))
    np.testing.assert_allclose(
        to_numpy(split.head(split.features(x))), to_numpy(model(x)), rtol=1e-6
    )


def trunk_model(model: keras.Model) -> keras.Model:
    add = next(op for op in model.operations if not isinstance(op, keras.layers.Layer))
    return keras.Model(model.inputs, add.output)


def test_a_layer_object_is_accepted_as_layer(model):
    assert split_model(model, model.get_layer("conv1")).path == "conv1"
    stranger = layers.Conv2D(2, 3, name="conv1")
    with pytest.raises(ValueError, match="not a layer of model"):
        split_model(model, stranger)
    with pytest.raises(TypeError, match="layer must be a layer name"):
        split_model(model, 3)
