"""Property-based tests of the numeric core: any activations, any images, never a silent NaN."""

import keras
import numpy as np
import pytest
from conftest import feature_map_methods
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import layers

import keras_cam
from keras_cam.render.overlay import overlay, to_rgb_uint8

SHAPE = (2, 4, 4, 3)


def probe_model(nonlinear_head: bool) -> keras.Model:
    """The target layer passes its input through (identity 1×1 conv): activations = images."""
    inputs = keras.Input(SHAPE[1:])
    target = layers.Conv2D(3, 1, use_bias=False, name="target")
    x = target(inputs)
    if nonlinear_head:  # gradients that vary over space; CAM needs GAP → Dense
        x = layers.Conv2D(4, 1, activation="tanh")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    target.set_weights([np.eye(3, dtype="float32")[None, None]])
    return model


EXPLAINERS = {}


def explainer(method):
    if method not in EXPLAINERS:
        model = probe_model(nonlinear_head=method != "cam")
        EXPLAINERS[method] = keras_cam.CAMExplainer(model, method, layer="target")
    return EXPLAINERS[method]


special = st.sampled_from([0.0, -0.0, 1e-38, 1e-45, 1e30, -1e30, 3e38, np.inf, -np.inf, np.nan])
any_float = st.floats(width=32, allow_nan=True, allow_infinity=True)
activations = st.one_of(
    hnp.arrays(np.float32, SHAPE, elements=st.one_of(any_float, special)),
    hnp.arrays(np.float32, SHAPE, elements=st.floats(-2, 2, width=32)),
    st.builds(lambda v: np.full(SHAPE, v, np.float32), st.one_of(special, st.floats(-5, 5))),
)


@pytest.mark.parametrize("method", feature_map_methods())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=activations)
def test_every_map_is_finite_in_0_1_or_the_documented_error(method, values):
    try:
        result, error = explainer(method)(values, targets=[0, 2]), None
    except FloatingPointError as raised:
        result, error = None, raised
    if error is not None:
        # The documented error, only for inputs that can overflow or are not finite.
        assert "not finite" in str(error)
        assert not np.isfinite(values).all() or np.abs(values).max() > 1e20
        return
    assert np.isfinite(result.heatmaps).all()
    assert result.heatmaps.min() >= 0.0
    assert result.heatmaps.max() <= 1.0
    assert np.isfinite(result.raw).all()
    assert (result.raw >= 0).all()


IMAGE_DTYPES = st.sampled_from([np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64])


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    dtype=IMAGE_DTYPES,
    shape=hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
    channels=st.sampled_from([None, 1, 3, 4]),
    alpha=st.floats(0, 1),
)
def test_overlay_never_gives_nan_or_out_of_range_pixels(data, dtype, shape, channels, alpha):
    image_shape = shape if channels is None else (*shape, channels)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        elements = st.integers(max(info.min, -(2**40)), min(info.max, 2**40))
    else:
        elements = st.floats(
            allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8
        )
    images = data.draw(hnp.arrays(dtype, image_shape, elements=elements))
    maps = data.draw(
        hnp.arrays(
            np.float32, shape, elements=st.floats(allow_nan=True, allow_infinity=True, width=32)
        )
    )
    result = overlay(images, maps, alpha=alpha)
    assert result.dtype == np.uint8
    assert result.shape == (*shape, 3)
    assert to_rgb_uint8(images).shape == (*shape, 3)
