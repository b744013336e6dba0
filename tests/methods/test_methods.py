"""Each method against weights computed by hand, and the methods' defining properties."""

import keras
import numpy as np
import pytest
from keras import layers, ops

from keras_cam.core.layers import split_model
from keras_cam.methods import AblationCAM, Forward, ScoreCAM, available_methods, get_method
from keras_cam.methods.principal import first_component_map

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


def hand_forward(scores=None, score_inputs=None, score_ablated=None, inputs=None):
    """A Forward whose passes are plain functions and whose chunk loop is a Python loop."""

    def map_chunks(fn, count, batch_size):
        chunks = [
            ops.convert_to_numpy(fn(np.minimum(np.arange(start, start + batch_size), count - 1)))
            for start in range(0, count, batch_size)
        ]
        return np.concatenate(chunks)[:count]

    return Forward(
        inputs=inputs,
        input_channels_first=False,
        scores=scores,
        score_inputs=score_inputs,
        score_ablated=score_ablated,
        map_chunks=map_chunks,
    )


RNG = np.random.default_rng(11)
MANY_CHANNELS = RNG.uniform(0, 1, size=(2, 3, 3, 6)).astype("float32")


@pytest.mark.parametrize("max_channels", [None, 4])
def test_scorecam_weights_are_a_softmax_over_the_kept_channels(max_channels):
    x = RNG.uniform(0, 1, size=(2, 3, 3, 2)).astype("float32")
    forward = hand_forward(
        score_inputs=lambda masked, classes: ops.sum(masked, axis=(1, 2, 3)), inputs=x
    )
    method = ScoreCAM(batch_size=5, max_channels=max_channels)
    weights = ops.convert_to_numpy(
        method.channel_weights(MANY_CHANNELS, None, np.array([0, 1]), forward)
    )[:, 0, 0, :]
    np.testing.assert_allclose(weights.sum(axis=-1), [1.0, 1.0], rtol=1e-6)
    assert (weights > 0).sum(axis=-1).tolist() == [max_channels or 6] * 2
    if max_channels:
        kept = np.argsort(-MANY_CHANNELS.mean(axis=(1, 2)), axis=-1)[:, :max_channels]
        assert set(np.flatnonzero(weights[0])) == set(kept[0])


def test_ablationcam_gives_a_channel_the_head_ignores_zero_weight():
    kernel = RNG.normal(size=(6, 3)).astype("float32")
    kernel[2] = 0.0  # the head never reads channel 2

    pooled = MANY_CHANNELS.mean(axis=(1, 2))

    def logits(features, classes):
        return np.take_along_axis(features @ kernel, classes[:, None], axis=1)[:, 0]

    def score_ablated(images, channels, classes):
        images, channels, classes = (ops.convert_to_numpy(t) for t in (images, channels, classes))
        features = pooled[images].copy()
        features[np.arange(len(images)), channels] = 0.0
        return logits(features, classes)

    classes = np.array([1, 2])
    forward = hand_forward(
        scores=ops.convert_to_tensor(logits(pooled, classes)), score_ablated=score_ablated
    )
    weights = ops.convert_to_numpy(
        AblationCAM(batch_size=4).channel_weights(MANY_CHANNELS, None, classes, forward)
    )[:, 0, 0, :]
    assert (weights[:, 2] == 0).all()
    # Linear head: removing channel c lowers the logit by W[c, k]·mean(A_c).
    base = np.abs(ops.convert_to_numpy(forward.scores))[:, None]
    expected = kernel[:, classes].T * pooled / base
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.usefixtures("no_gradients")
def test_eigencam_needs_no_gradients_and_ignores_the_target():
    from conftest import conv_classifier

    import keras_cam

    model = conv_classifier()
    x = RNG.uniform(0, 1, size=(3, 16, 16, 3)).astype("float32")
    first = keras_cam.explain(model, x, method="eigencam", targets=0)
    second = keras_cam.explain(model, x, method="eigencam", targets=2)
    np.testing.assert_array_equal(first.raw, second.raw)
    assert (first.classes == 0).all()
    assert (second.classes == 2).all()


def test_principal_component_uses_the_cheaper_gram_matrix_either_way():
    """Few locations (h·w ≤ C) and few channels (h·w > C) give the same projection as an SVD."""
    for shape in [(2, 2, 2, 9), (2, 4, 4, 3)]:
        features = RNG.normal(size=shape).astype("float32")
        reference = features.mean(-1)
        projection = ops.convert_to_numpy(first_component_map(features, reference))
        for image, proj, ref in zip(features, projection, reference, strict=True):
            flat = image.reshape(-1, shape[-1]).astype(np.float64)
            centred = flat - flat.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            expected = centred @ vt[0]
            expected *= np.sign(expected @ ref.reshape(-1))
            np.testing.assert_allclose(proj.reshape(-1), expected, atol=1e-4)


@pytest.mark.parametrize("method_class", [ScoreCAM, AblationCAM])
@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"max_channels": 0}, {"batch_size": 2.5}])
def test_perturbation_arguments_are_checked(method_class, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        method_class(**kwargs)


def test_every_method_is_listed_with_its_paper():
    methods = available_methods()
    papers = {
        "gradcam": "Selvaraju",
        "cam": "Zhou",
        "gradcam++": "Chattopadhay",
        "xgradcam": "Fu",
        "hirescam": "Draelos",
        "layercam": "Jiang",
        "scorecam": "Wang",
        "eigencam": "Muhammad",
        "ablationcam": "Desai",
        "fem": "Fuad",
        "gradcamelementwise": "pytorch-grad-cam",
        "eigengradcam": "pytorch-grad-cam",
        "randomcam": "pytorch-grad-cam",
        "sobelcam": "pytorch-grad-cam",
        "kpcacam": "Karmani",
        "sscam": "Wang",
        "iscam": "Naidu",
        "smoothgradcam++": "Omeiza",
        "finercam": "Zhang",
        "segeigencam": "Chung",
        "shapleycam": "Cai",
        "fullgrad": "Srinivas",
        "guidedbackprop": "Springenberg",
        "guidedgradcam": "Selvaraju",
        "refinecam": "2026",
        "rollout": "Abnar",
        "gradrollout": "Chefer",
        "legrad": "Bousselham",
        "dff": "Collins",
        "sess": "Tang",
    }
    assert set(methods) == set(papers)
    for name, author in papers.items():
        assert author in methods[name]
        assert get_method(name.upper()).name == name
