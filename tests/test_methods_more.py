"""The methods added after the first nine, against float64 numpy from each paper's formula.

Same tiny model and the same activations and gradients (backend autodiff through the
head written out from the weights) as `test_method_references.py`; the references
below are written from the formulas, independently of `keras_cam`.
"""

import keras
import numpy as np
import pytest
from cam_references import CLASSES, assert_maps_equal, correlation, spatial, tape
from keras import layers

import keras_cam
from keras_cam.methods import FEM, get_method


def reference_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    x = layers.Conv2D(3, 1, activation="relu", name="mix")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def case():
    keras.utils.set_random_seed(7)
    model = reference_model()
    x = np.random.default_rng(3).uniform(0, 1, size=(3, 8, 8, 3)).astype("float32")
    a, g = tape(model, x, CLASSES)
    return model, x, a, g


def principal_projection(features, reference):
    """Each item's centred (L, C) matrix projected on its first right singular vector,
    signed to correlate positively with `reference`."""
    maps = []
    for item, ref in zip(features, reference, strict=True):
        flat = item.reshape(-1, item.shape[-1])
        centred = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        if projection @ ref.reshape(-1) < 0:
            projection = -projection
        maps.append(projection.reshape(item.shape[:-1]))
    return np.stack(maps)


def ref_fem(a, g, k=2.0):
    axes = spatial(a)
    threshold = a.mean(axis=axes, keepdims=True) + k * a.std(axis=axes, keepdims=True)
    weights = (a > threshold).mean(axis=axes, keepdims=True)
    return (weights * a).sum(-1)


def ref_gradcamelementwise(a, g):
    return np.maximum(g * a, 0).sum(-1)


def ref_eigengradcam(a, g):
    return principal_projection(g * a, (g * a).sum(-1))


REFERENCES = {
    "fem": ref_fem,
    "gradcamelementwise": ref_gradcamelementwise,
    "eigengradcam": ref_eigengradcam,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_method_equals_numpy_reference(case, name):
    model, x, a, g = case
    result = keras_cam.explain(model, x, method=name, layer="target", targets=CLASSES)
    assert result.method == name
    assert result.raw.shape == a.shape[:3]
    assert_maps_equal(result.raw, REFERENCES[name](a, g))
    assert np.isfinite(result.heatmaps).all()
    assert 0 <= result.heatmaps.min() <= result.heatmaps.max() <= 1


def test_fem_threshold_counts_locations_above_k_sigma():
    """One channel, by hand: values 0, 0, 0, 4 have mean 1 and std √3."""
    a = np.array([0.0, 0.0, 0.0, 4.0], "float32").reshape(1, 2, 2, 1)
    for k, share in [(1.0, 0.25), (1.8, 0.0)]:  # 1 + √3 ≈ 2.73 < 4 < 1 + 1.8·√3 ≈ 4.12
        weights = keras.ops.convert_to_numpy(FEM(k=k).channel_weights(a, None, None))
        np.testing.assert_allclose(weights.reshape(-1), [share])
    with pytest.raises(ValueError, match="k must be a number"):
        FEM(k="2")


def test_fem_k_changes_the_map(case):
    model, x, a, g = case
    result = keras_cam.explain(model, x, method=FEM(k=0.5), layer="target", targets=CLASSES)
    assert_maps_equal(result.raw, ref_fem(a, g, k=0.5))
    assert correlation(ref_fem(a, g, k=0.5), ref_fem(a, g)) < 0.9999


def test_all_new_methods_in_one_compiled_function(case):
    """Several methods in one call share one trace and give each its own map."""
    model, x, a, g = case
    names = sorted(REFERENCES)
    explainer = keras_cam.CAMExplainer(model, names, layer="target")
    results = explainer(x, targets=CLASSES)
    assert explainer.trace_count == 1
    for name in names:
        assert_maps_equal(results[name].raw, REFERENCES[name](a, g))


def test_registry_lists_the_new_methods():
    listed = keras_cam.available_methods()
    for name in REFERENCES:
        assert name in listed
        assert get_method(name).name == name
