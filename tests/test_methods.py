"""Each method against weights computed by hand on 2×2×C activations."""

import keras
import numpy as np
import pytest
from keras import layers, ops

from keras_cam.layers import split_model
from keras_cam.methods import available_methods, get_method

ACTIVATIONS = np.array(
    [[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 3.0], [1.0, 1.0]]]], dtype="float32"
)  # (1, 2, 2, 2): channel 0 = [[1, 2], [0, 1]], channel 1 = [[0, 1], [3, 1]]
GRADIENTS = np.array(
    [[[[0.5, -1.0], [1.5, -1.0]], [[-0.5, -1.0], [0.5, 1.0]]]], dtype="float32"
)  # channel 0 = [[.5, 1.5], [-.5, .5]] (mean .5), channel 1 = [[-1, -1], [-1, 1]] (mean -.5)


def test_gradcam_weights_are_spatial_mean_of_gradients():
    method = get_method("gradcam")
    weights = ops.convert_to_numpy(method.channel_weights(ACTIVATIONS, GRADIENTS, None))
    np.testing.assert_allclose(weights.reshape(-1), [0.5, -0.5])
    cam = ops.convert_to_numpy(method.cam(ACTIVATIONS, GRADIENTS, None))
    # 0.5 * channel0 - 0.5 * channel1, by hand:
    np.testing.assert_allclose(cam[0], [[0.5, 0.5], [-1.5, 0.0]])


def test_cam_weights_are_dense_kernel_column():
    inputs = keras.Input((2, 2, 2))
    x = layers.Conv2D(2, 1, name="conv")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(3, name="dense")
    model = keras.Model(inputs, dense(x))
    kernel = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], dtype="float32")
    dense.set_weights([kernel, np.zeros(3, "float32")])
    method = get_method("cam")
    method.prepare(split_model(model))
    classes = np.array([1], dtype="int32")
    cam = ops.convert_to_numpy(method.cam(ACTIVATIONS, GRADIENTS, classes))
    # class 1 weights (-2, 0): -2 * channel 0
    np.testing.assert_allclose(cam[0], [[-2.0, -4.0], [0.0, -2.0]])


def test_cam_on_single_sigmoid_unit_negates_for_class_zero():
    inputs = keras.Input((2, 2, 2))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(2, 1, name="conv")(inputs))
    dense = layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([np.array([[2.0], [-1.0]], "float32"), np.zeros(1, "float32")])
    method = get_method("cam")
    method.prepare(split_model(model))
    weights = ops.convert_to_numpy(
        method.channel_weights(np.concatenate([ACTIVATIONS] * 2), None, np.array([1, 0]))
    )
    np.testing.assert_allclose(weights.reshape(2, 2), [[2.0, -1.0], [-2.0, 1.0]])


def test_cam_rejects_a_head_that_is_not_gap_dense():
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(2, 1, name="conv")(inputs)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(3)(x))
    with pytest.raises(ValueError, match=r"GlobalAveragePooling2D then Dense.*gradcam"):
        get_method("cam").prepare(split_model(model, "conv"))


def test_unknown_method_lists_available_ones():
    with pytest.raises(ValueError, match=r"Unknown CAM method 'gradcan'.*'cam'.*'gradcam'"):
        get_method("gradcan")


def test_available_methods_describe_each_method():
    methods = available_methods()
    assert set(methods) >= {"gradcam", "cam"}
    assert "Selvaraju" in methods["gradcam"]
    assert "Zhou" in methods["cam"]
