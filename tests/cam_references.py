"""Every method's map in float64 numpy, from its paper's formula, over any number of spatial axes.

Shared by the reference tests of image models (`test_method_references.py`) and of
sequence and volume models (`test_rank.py`). The models they check end in a head
written out here from the weights: the target layer, a pointwise conv `mix`, ReLU,
the mean over positions, a Dense layer `out`. Activations come from a Keras
sub-model, gradients from the backend's own autodiff (`conftest.gradient`).
"""

import keras
import numpy as np
from conftest import gradient
from keras import ops

CLASSES = np.array([0, 2, 1])


def spatial(a: np.ndarray) -> tuple[int, ...]:
    """The spatial axes of channels-last activations (N, *spatial, C)."""
    return tuple(range(1, a.ndim - 1))


def head_logits(model, activations):
    """The head from the weights: pointwise conv, ReLU, mean over positions, Dense."""
    mix, out = model.get_layer("mix"), model.get_layer("out")
    kernel = ops.reshape(mix.kernel, mix.kernel.shape[-2:])
    hidden = ops.relu(ops.einsum("n...c,cd->n...d", activations, kernel) + mix.bias)
    pooled = ops.mean(hidden, axis=tuple(range(1, len(hidden.shape) - 1)))
    return ops.matmul(pooled, out.kernel) + out.bias


def features(model, x):
    return ops.convert_to_numpy(keras.Model(model.input, model.get_layer("target").output)(x))


def tape(model, x, classes):
    a = features(model, x)
    picked = ops.convert_to_tensor(classes[:, None])
    g = gradient(lambda v: ops.take_along_axis(head_logits(model, v), picked, axis=1), a)
    return a.astype(np.float64), g.astype(np.float64)


def logit_of(model, activations, classes):
    """`head_logits` in numpy (the perturbation references score many inputs)."""
    mix, out = (
        [np.asarray(w, np.float64) for w in model.get_layer(name).get_weights()]
        for name in ("mix", "out")
    )
    hidden = np.maximum(activations @ mix[0].reshape(mix[0].shape[-2:]) + mix[1], 0)
    logits = hidden.reshape(len(hidden), -1, hidden.shape[-1]).mean(1) @ out[0] + out[1]
    return logits[np.arange(len(classes)), classes]


def interpolate(maps: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Linear resizing along each axis in turn, pixel centres aligned, clamped at the edges."""
    for axis, target in enumerate(size, start=1):
        source = maps.shape[axis]
        position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, source - 1)
        shape = [1] * maps.ndim
        shape[axis] = target
        share = (position - low).reshape(shape)
        maps = np.take(maps, low, axis=axis) * (1 - share) + np.take(maps, high, axis=axis) * share
    return maps


def min_max(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1]; a constant map becomes 0."""
    axes = tuple(range(1, maps.ndim))
    low, high = maps.min(axis=axes, keepdims=True), maps.max(axis=axes, keepdims=True)
    return np.where(high > low, (maps - low) / np.where(high > low, high - low, 1), 0)


def channel_sum(weights, a):
    return (weights.reshape(len(a), *[1] * (a.ndim - 2), -1) * a).sum(-1)


def ref_gradcam(model, x, a, g):
    return channel_sum(g.mean(axis=spatial(a)), a)


def ref_gradcam_plus_plus(model, x, a, g):
    sums = a.sum(axis=spatial(a), keepdims=True)
    denominator = 2 * g**2 + sums * g**3
    alpha = np.where(denominator != 0, g**2 / np.where(denominator != 0, denominator, 1), 0)
    return channel_sum((alpha * np.maximum(g, 0)).sum(axis=spatial(a)), a)


def ref_xgradcam(model, x, a, g):
    sums = a.sum(axis=spatial(a), keepdims=True)
    share = np.where(sums != 0, a / np.where(sums != 0, sums, 1), 0)
    return channel_sum((share * g).sum(axis=spatial(a)), a)


def ref_hirescam(model, x, a, g):
    return (g * a).sum(-1)


def ref_layercam(model, x, a, g):
    return (np.maximum(g, 0) * a).sum(-1)


def ref_eigencam(model, x, a, g):
    maps = []
    for item in a:
        flat = item.reshape(-1, item.shape[-1])
        centred = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        if projection @ item.mean(-1).reshape(-1) < 0:
            projection = -projection
        maps.append(projection.reshape(item.shape[:-1]))
    return np.stack(maps)


def top_channels(a, max_channels):
    """Per item, the kept channels: all, or the `max_channels` of highest mean activation."""
    order = np.argsort(-a.mean(axis=spatial(a)), axis=-1, kind="stable")
    return order[:, :max_channels] if max_channels else np.sort(order, axis=-1)


def softmax(scores):
    return np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()


def ref_scorecam(model, x, a, g, max_channels=None):
    weights = np.zeros((len(a), a.shape[-1]))
    for i, kept in enumerate(top_channels(a, max_channels)):
        channels = np.moveaxis(a[i][..., kept], -1, 0)  # (K, *spatial)
        masks = min_max(interpolate(channels, x.shape[1:-1]))
        masked = (x[i][None] * masks[..., None]).astype("float32")
        scores = logit_of(model, features(model, masked), np.full(len(kept), CLASSES[i]))
        weights[i, kept] = softmax(scores)
    return channel_sum(weights, a)


def ref_ablationcam(model, x, a, g, max_channels=None):
    weights = np.zeros((len(a), a.shape[-1]))
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


def correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def assert_maps_equal(actual, expected):
    """The library's raw maps equal the reference after ReLU (relative to its peak)."""
    expected = np.maximum(expected, 0)
    assert expected.max() > 0, "an all-zero reference map compares nothing"
    scale = float(expected.max())
    np.testing.assert_allclose(actual / scale, expected / scale, atol=1e-5)
    assert correlation(actual, expected) >= 0.999


def reference_model() -> keras.Model:
    """Target layer at input resolution (Score-CAM's upsampling is the identity), nonlinear head."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.Conv2D(3, 1, activation="relu", name="mix")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


def reference_case() -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray]:
    """The seeded reference model, three images, and the target layer's activations and
    gradients of the CLASSES' scores (a GradientTape-free reference: `tape`)."""
    keras.utils.set_random_seed(7)
    model = reference_model()
    x = np.random.default_rng(3).uniform(0, 1, size=(3, 8, 8, 3)).astype("float32")
    a, g = tape(model, x, CLASSES)
    return model, x, a, g
