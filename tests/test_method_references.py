"""Every method, through the explainer, against plain numpy on the same activations and gradients.

The activations and gradients come from an explicit GradientTape through the
model's layers, with the logits computed from the weights by hand; the maps
are then computed in float64 numpy from each paper's formula.
"""

import keras
import numpy as np
import pytest
from conftest import gradient
from keras import layers, ops

import keras_cam
from keras_cam.layers import pooled_head, split_model
from keras_cam.methods import AblationCAM, ScoreCAM

CLASSES = np.array([0, 2, 1])


def reference_model() -> keras.Model:
    """Target layer at input resolution (Score-CAM's upsampling is the identity), nonlinear head."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    x = layers.Conv2D(3, 1, activation="relu", name="mix")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


def head_logits(model, activations):
    """The head written out from the weights: 1×1 conv, ReLU, spatial mean, Dense."""
    mix, out = model.get_layer("mix"), model.get_layer("out")
    hidden = ops.relu(ops.einsum("nhwc,cd->nhwd", activations, mix.kernel[0, 0]) + mix.bias)
    return ops.matmul(ops.mean(hidden, axis=(1, 2)), out.kernel) + out.bias


def features(model, x):
    return ops.convert_to_numpy(keras.Model(model.input, model.get_layer("target").output)(x))


def tape(model, x, classes):
    a = features(model, x)
    picked = ops.convert_to_tensor(classes[:, None])
    g = gradient(lambda v: ops.take_along_axis(head_logits(model, v), picked, axis=1), a)
    return a.astype(np.float64), g


def logit_of(model, activations, classes):
    logits = ops.convert_to_numpy(head_logits(model, ops.convert_to_tensor(activations, "float32")))
    return logits[np.arange(len(classes)), classes].astype(np.float64)


def channel_sum(weights, a):
    return (weights[:, None, None, :] * a).sum(-1)


def ref_gradcam(model, x, a, g):
    return channel_sum(g.mean(axis=(1, 2)), a)


def ref_gradcam_plus_plus(model, x, a, g):
    sums = a.sum(axis=(1, 2), keepdims=True)
    denominator = 2 * g**2 + sums * g**3
    alpha = np.where(denominator != 0, g**2 / np.where(denominator != 0, denominator, 1), 0)
    return channel_sum((alpha * np.maximum(g, 0)).sum(axis=(1, 2)), a)


def ref_xgradcam(model, x, a, g):
    sums = a.sum(axis=(1, 2), keepdims=True)
    share = np.where(sums != 0, a / np.where(sums != 0, sums, 1), 0)
    return channel_sum((share * g).sum(axis=(1, 2)), a)


def ref_hirescam(model, x, a, g):
    return (g * a).sum(-1)


def ref_layercam(model, x, a, g):
    return (np.maximum(g, 0) * a).sum(-1)


def ref_eigencam(model, x, a, g):
    maps = []
    for image in a:
        flat = image.reshape(-1, image.shape[-1])
        centred = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        if projection @ image.mean(-1).reshape(-1) < 0:
            projection = -projection
        maps.append(projection.reshape(image.shape[:2]))
    return np.stack(maps)


def top_channels(a, max_channels):
    order = np.argsort(-a.mean(axis=(1, 2)), axis=-1, kind="stable")
    return order[:, :max_channels] if max_channels else np.sort(order, axis=-1)


def ref_scorecam(model, x, a, g, max_channels=None):
    weights = np.zeros(a.shape[::3])
    for i, kept in enumerate(top_channels(a, max_channels)):
        masks = a[i][..., kept]
        low, high = masks.min(axis=(0, 1)), masks.max(axis=(0, 1))
        masks = np.where(high > low, (masks - low) / np.where(high > low, high - low, 1), 0)
        masked = (x[i][None] * masks.transpose(2, 0, 1)[..., None]).astype("float32")
        scores = logit_of(model, features(model, masked), np.full(len(kept), CLASSES[i]))
        weights[i, kept] = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    return channel_sum(weights, a)


def ref_ablationcam(model, x, a, g, max_channels=None):
    weights = np.zeros(a.shape[::3])
    for i, kept in enumerate(top_channels(a, max_channels)):
        ablated = np.repeat(a[i][None], len(kept), axis=0)
        ablated[np.arange(len(kept)), ..., kept] = 0
        base = logit_of(model, a[i][None], CLASSES[i : i + 1])[0]
        dropped = logit_of(model, ablated, np.full(len(kept), CLASSES[i]))
        weights[i, kept] = (base - dropped) / abs(base)
    return channel_sum(weights, a)


REFERENCES = {
    "gradcam": ref_gradcam,
    "gradcam++": ref_gradcam_plus_plus,
    "xgradcam": ref_xgradcam,
    "hirescam": ref_hirescam,
    "layercam": ref_layercam,
    "eigencam": ref_eigencam,
    "scorecam": ref_scorecam,
    "ablationcam": ref_ablationcam,
}


@pytest.fixture(scope="module")
def case():
    keras.utils.set_random_seed(7)
    model = reference_model()
    x = np.random.default_rng(3).uniform(0, 1, size=(3, 8, 8, 3)).astype("float32")
    a, g = tape(model, x, CLASSES)
    return model, x, a, g


def assert_maps_equal(actual, expected):
    expected = np.maximum(expected, 0)
    scale = max(float(np.abs(expected).max()), 1e-12)
    np.testing.assert_allclose(actual / scale, expected / scale, atol=1e-5)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_method_equals_numpy_reference(case, name):
    model, x, a, g = case
    result = keras_cam.explain(model, x, method=name, layer="target", targets=CLASSES)
    assert result.method == name
    assert result.raw.shape == a.shape[:3]
    assert_maps_equal(result.raw, REFERENCES[name](model, x, a, g))
    assert np.isfinite(result.heatmaps).all()
    assert result.heatmaps.min() >= 0
    assert result.heatmaps.max() <= 1


@pytest.mark.parametrize("method_class", [ScoreCAM, AblationCAM])
@pytest.mark.parametrize(("batch_size", "max_channels"), [(4, None), (3, 2), (64, 4)])
def test_perturbation_chunks_and_channel_selection(case, method_class, batch_size, max_channels):
    """Chunks that do not divide the 3×K passes (padded) and a subset of channels."""
    model, x, a, g = case
    method = method_class(batch_size=batch_size, max_channels=max_channels)
    result = keras_cam.explain(model, x, method=method, layer="target", targets=CLASSES)
    reference = REFERENCES[method.name](model, x, a, g, max_channels=max_channels)
    assert_maps_equal(result.raw, reference)


def test_eigen_smooth_is_the_principal_component_of_the_weighted_activations(case):
    model, x, a, g = case
    result = keras_cam.explain(
        model, x, method="gradcam", layer="target", targets=CLASSES, eigen_smooth=True
    )
    weighted = g.mean(axis=(1, 2), keepdims=True) * a
    # Signed like the unsmoothed map, the channel sum (∝ the channel mean ref_eigencam uses).
    assert_maps_equal(result.raw, ref_eigencam(model, x, weighted, None))


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(lambda: [layers.GlobalAveragePooling2D(), layers.Dense(3)], id="gap-dense"),
        pytest.param(
            lambda: [layers.GlobalAveragePooling2D(), layers.Dropout(0.5), layers.Dense(3)],
            id="gap-dropout-dense",
        ),
        pytest.param(
            lambda: [
                layers.GlobalMaxPooling2D(),
                layers.Dense(6, activation="relu"),
                layers.Dense(3),
            ],
            id="gmp-dense-dense",
        ),
        pytest.param(
            lambda: [layers.Conv2D(3, 1, activation="relu"), layers.GlobalAveragePooling2D()],
            id="conv-gap",
        ),
    ],
)
def test_ablationcam_shortcuts_equal_rerunning_the_head(head):
    """Ablating after the pooling, or through the Dense layer, equals re-running the whole head."""
    keras.utils.set_random_seed(2)
    head_layers = head()
    inputs = keras.Input((6, 6, 3))
    hidden = layers.Conv2D(4, 3, padding="same", activation="relu", name="target")(inputs)
    outputs = hidden
    for layer in head_layers:
        outputs = layer(outputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(4).uniform(0, 1, size=(3, 6, 6, 3)).astype("float32")
    a = features(model, x)

    def logits(activations):
        for layer in head_layers:
            activations = layer(activations, training=False)
        values = ops.convert_to_numpy(activations)
        return values[np.arange(len(values)), CLASSES[: len(values)]]

    base = logits(a)
    weights = np.zeros((3, 4))
    for channel in range(4):
        ablated = a.copy()
        ablated[..., channel] = 0
        weights[:, channel] = (base - logits(ablated)) / np.abs(base)
    shortcut = pooled_head(model, split_model(model, "target"))
    kinds = [type(layer).__name__ for layer in head_layers]
    if kinds[0].startswith("Global"):
        assert shortcut.pooling is head_layers[0]
        assert (shortcut.dense is head_layers[1]) == (kinds[1] == "Dense")
    else:
        assert shortcut is None
    method = AblationCAM(batch_size=5)
    result = keras_cam.explain(model, x, method=method, layer="target", targets=CLASSES)
    assert_maps_equal(result.raw, channel_sum(weights, a.astype(np.float64)))
