"""Every method, through the explainer, against plain numpy on the same activations and gradients.

The activations and gradients come from the backend's autodiff through the
model's head written out from the weights; the maps are then computed in
float64 numpy from each paper's formula (`cam_references`, shared with the
1-D and 3-D tests).
"""

import keras
import numpy as np
import pytest
from cam_references import (
    CLASSES,
    REFERENCES,
    assert_maps_equal,
    channel_sum,
    features,
    ref_eigencam,
    reference_case,
)
from keras import layers, ops

import keras_cam
from keras_cam.core.layers import pooled_head, split_model
from keras_cam.methods import AblationCAM, ScoreCAM


@pytest.fixture(scope="module")
def case():
    return reference_case()


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


# The ReLU heads get a positive bias so that no backend's random draw leaves a class score
# at 0 (Ablation-CAM divides by it) or every channel's contribution negative.
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
                layers.Dense(6, activation="relu", bias_initializer="ones"),
                layers.Dense(3),
            ],
            id="gmp-dense-dense",
        ),
        pytest.param(
            lambda: [
                layers.Conv2D(3, 1, activation="relu", bias_initializer="ones"),
                layers.GlobalAveragePooling2D(),
            ],
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
