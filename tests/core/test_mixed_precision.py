"""Mixed precision: float32 maps from float16/bfloat16 activations, as the float32 model's."""

import keras
import numpy as np
import pytest
from conftest import conv_classifier, feature_map_methods, read_events

import keras_cam

# One method of each way of reading the model: the shared gradients, masked or ablated
# forward passes, the gradients at other layers or inputs, noisy inputs, the activations
# alone. Every method runs in the TensorFlow pass (slow), the kinds under JAX and PyTorch.
EACH_KIND = ["gradcam++", "scorecam", "ablationcam", "fullgrad", "smoothgradcam++", "eigencam"]


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "methods",
    [
        pytest.param(feature_map_methods(), id="every method", marks=pytest.mark.slow),
        pytest.param(
            EACH_KIND,
            id="each kind",
            marks=pytest.mark.skipif(
                keras.backend.backend() == "tensorflow", reason="runs every method there"
            ),
        ),
    ],
)
def test_maps_match_the_float32_model_on_the_same_weights(policy, methods):
    keras.mixed_precision.set_global_policy("float32")
    reference_model = conv_classifier()
    keras.mixed_precision.set_global_policy(policy)
    model = conv_classifier()
    model.set_weights(reference_model.get_weights())
    assert model.get_layer("conv2").compute_dtype in ("float16", "bfloat16")
    images = np.random.default_rng(0).uniform(0, 1, size=(4, 16, 16, 3)).astype("float32")
    results = keras_cam.CAMExplainer(model, methods)(images)
    references = keras_cam.CAMExplainer(reference_model, methods)(images)
    for name in methods:
        maps, expected = results[name].heatmaps, references[name].heatmaps
        assert maps.dtype == np.float32
        assert np.isfinite(maps).all()
        correlation = np.corrcoef(maps.ravel(), expected.ravel())[0, 1]
        assert correlation >= 0.99, f"{name} under {policy}: {correlation:.4f}"


def test_the_callback_works_in_a_mixed_precision_fit(policy, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(16, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=16)
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(x[:4], tmp_path, method=["gradcam", "ablationcam"])
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    events = read_events(str(tmp_path))
    assert sorted(events["cam/gradcam/grid"]) == [0, 1]
    assert all(np.isfinite(v) for v in events["cam/ablationcam/focus"].values())
