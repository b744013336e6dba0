"""ShapleyCAM, FullGrad, guided backpropagation, Guided Grad-CAM and RefineCAM in float64 numpy.

The reference model of `cam_references` (conv1 → target → mix → mean → Dense, every
conv 'same' and ReLU'd) is written out below in numpy from its weights, forward and
backward, with the ordinary ReLU rule or the guided one; the references follow each
paper's formula, independently of `keras_cam`. The target layer keeps the input's
resolution, so every resizing is the identity.
"""

import keras
import numpy as np
import pytest
from cam_references import (
    CLASSES,
    assert_maps_equal,
    channel_sum,
    correlation,
    ref_gradcam,
    ref_gradcam_plus_plus,
    reference_case,
)
from keras import layers

import keras_cam
from keras_cam.methods import GuidedGradCAM, RefineCAM, ShapleyCAM
from keras_cam.methods.refine_cam import find_layers, stage_ends


@pytest.fixture(scope="module")
def case():
    return reference_case()


METHODS = ["gradcam", "shapleycam", "guidedbackprop", "guidedgradcam", "fullgrad"]


@pytest.fixture(scope="module")
def results(case):
    """Every method of this file in one explainer: one trace serves all the comparisons."""
    model, x, _, _ = case
    explainer = keras_cam.CAMExplainer(
        model, [*METHODS, RefineCAM(layers=["conv1"])], layer="target"
    )
    found = explainer(x, targets=CLASSES)
    assert explainer.trace_count == 1
    return found


def _weights(model):
    return {
        name: [np.asarray(w, np.float64) for w in model.get_layer(name).get_weights()]
        for name in ("conv1", "target", "mix", "out")
    }


def _patches(x):
    """(N, H, W, C) -> (N, H, W, 3, 3, C): the 3×3 'same' neighbourhood of each pixel."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    return np.stack(
        [
            np.stack([padded[:, i : i + height, j : j + width] for j in range(3)], axis=3)
            for i in range(3)
        ],
        axis=3,
    )


def _conv(x, kernel, bias):
    return np.einsum("nhwijc,ijcd->nhwd", _patches(x), kernel) + bias


def _conv_input_gradient(upstream, kernel):
    """∂/∂x of Σ upstream ⊙ conv(x): each output scatters back through its 3×3 taps."""
    n, height, width, _ = upstream.shape
    padded = np.zeros((n, height + 2, width + 2, kernel.shape[2]))
    for i in range(3):
        for j in range(3):
            padded[:, i : i + height, j : j + width] += upstream @ kernel[i, j].T
    return padded[:, 1:-1, 1:-1]


def forward(model, x):
    """Every pre-activation z and the logits, float64."""
    w = _weights(model)
    z1 = _conv(np.asarray(x, np.float64), *w["conv1"])
    z2 = _conv(np.maximum(z1, 0), *w["target"])
    zm = np.maximum(z2, 0) @ w["mix"][0][0, 0] + w["mix"][1]
    logits = np.maximum(zm, 0).mean(axis=(1, 2)) @ w["out"][0] + w["out"][1]
    return {"x": np.asarray(x, np.float64), "z1": z1, "z2": z2, "zm": zm, "logits": logits}


def backward(model, found, d_logits, guided=False):
    """Gradients of Σ d_logits ⊙ logits at the input, each pre-activation and the target's
    output (after its ReLU); the guided rule keeps only positive gradients at each ReLU."""

    def through_relu(upstream, z):
        keep = (z > 0) & (upstream > 0) if guided else z > 0
        return upstream * keep

    w = _weights(model)
    hw = found["zm"].shape[1] * found["zm"].shape[2]
    d_pooled = d_logits @ w["out"][0].T
    d_zm = through_relu(
        np.broadcast_to(d_pooled[:, None, None] / hw, found["zm"].shape), found["zm"]
    )
    d_a2 = d_zm @ w["mix"][0][0, 0].T
    d_z2 = through_relu(d_a2, found["z2"])
    d_a1 = _conv_input_gradient(d_z2, w["target"][0])
    d_z1 = through_relu(d_a1, found["z1"])
    d_x = _conv_input_gradient(d_z1, w["conv1"][0])
    return {"x": d_x, "z1": d_z1, "a1": d_a1, "z2": d_z2, "a2": d_a2, "zm": d_zm}


def one_hot(classes, count=3):
    return np.eye(count)[classes]


def min_max(maps, axes=(1, 2), epsilon=0.0):
    shifted = maps - maps.min(axis=axes, keepdims=True)
    top = shifted.max(axis=axes, keepdims=True)
    if epsilon:
        return shifted / (top + epsilon)
    return np.where(top > 0, shifted / np.where(top > 0, top, 1), 0)


# ShapleyCAM ---------------------------------------------------------------------------


def ref_shapleycam(model, x, a, rest=True):
    """w_c = mean_ij (∂S/∂A - ½ ∇²S·A). The head is piecewise linear in A (ReLU, mean,
    Dense), so each logit's Jacobian J_k = ∂y_k/∂A is constant near A and the only
    curvature is ReST's log-sum-exp: S = 2 y_c - LSE(y), ∂S/∂A = 2 J_c - Σ_k p_k J_k,
    ∇²S·A = -Σ_k J_k Σ_l (diag p - p pᵀ)_kl ⟨J_l, A⟩."""
    found = forward(model, x)
    jacobian = np.stack(
        [backward(model, found, one_hot(np.full(len(x), k)))["a2"] for k in range(3)], axis=1
    )
    picked = jacobian[np.arange(len(x)), CLASSES]
    if not rest:
        return channel_sum(picked.mean(axis=(1, 2)), a)
    y = found["logits"]
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gradient = 2 * picked - np.einsum("nk,nk...->n...", p, jacobian)
    along = np.einsum("nkhwc,nhwc->nk", jacobian, a)  # ⟨J_l, A⟩
    curvature = np.einsum(
        "nk,nkl->nl",
        along,
        -(np.einsum("nk,kl->nkl", p, np.eye(3)) - np.einsum("nk,nl->nkl", p, p)),
    )
    product = np.einsum("nk,nk...->n...", curvature, jacobian)
    return channel_sum((gradient - 0.5 * product).mean(axis=(1, 2)), a)


def test_shapleycam_equals_numpy_reference(case, results):
    model, x, a, _g = case
    result = results["shapleycam"]
    assert result.method == "shapleycam"
    assert_maps_equal(result.raw, ref_shapleycam(model, x, a))
    # The half Hessian-vector product matters: the map is not ReST's Grad-CAM.
    assert correlation(ref_shapleycam(model, x, a), ref_shapleycam(model, x, a, rest=False)) < 0.999


@pytest.mark.slow  # a property, not a reference: TensorFlow only in CI
def test_shapleycam_of_the_logit_through_a_piecewise_linear_head_is_gradcam(case):
    model, x, a, g = case
    explainer = keras_cam.CAMExplainer(
        model, [ShapleyCAM(target="score"), "gradcam"], layer="target"
    )
    results = explainer(x, targets=CLASSES)
    assert explainer.trace_count == 1
    np.testing.assert_allclose(results["shapleycam"].raw, results["gradcam"].raw, atol=1e-5)
    assert_maps_equal(results["shapleycam"].raw, ref_gradcam(model, x, a, g))
    with pytest.raises(ValueError, match="target must be one of"):
        ShapleyCAM(target="logit")


@pytest.mark.slow  # the ReST reference above checks the Hessian on every backend
def test_shapleycam_hessian_through_a_smooth_head():
    """A softplus head has curvature of its own: ShapleyCAM(target="score") is then not
    Grad-CAM, and its Hessian-vector product equals a central difference of the gradient."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((4, 4, 3))
    hidden = layers.Conv2D(3, 1, name="target")(inputs)
    hidden = layers.Conv2D(3, 1, activation="softplus", name="smooth")(hidden)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(hidden)))
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    features = keras.Model(inputs, model.get_layer("target").output)
    head_input = keras.Input((4, 4, 3))
    head = keras.Model(
        head_input, model.layers[-1](model.layers[-2](model.get_layer("smooth")(head_input)))
    )
    a = np.asarray(keras.ops.convert_to_numpy(features(x)), np.float64)

    from conftest import gradient

    def grad_at(v):
        return gradient(lambda t: head(t)[:, 1], v).astype(np.float64)

    step = 1e-2
    hvp = (grad_at(a + step * a) - grad_at(a - step * a)) / (2 * step)
    expected = channel_sum((grad_at(a) - 0.5 * hvp).mean(axis=(1, 2)), a)
    result = keras_cam.explain(
        model, x, method=ShapleyCAM(target="score"), layer="target", targets=1
    )
    np.testing.assert_allclose(
        result.raw, np.maximum(expected, 0), atol=2e-4 * np.abs(expected).max()
    )
    grad_cam = channel_sum(grad_at(a).mean(axis=(1, 2)), a)
    assert correlation(np.maximum(expected, 0), np.maximum(grad_cam, 0)) < 0.9999


# Guided backpropagation and Guided Grad-CAM ------------------------------------------


def ref_guided(model, x):
    found = forward(model, x)
    return backward(model, found, one_hot(CLASSES), guided=True)["x"]


def test_guided_backprop_equals_numpy_reference(case, results):
    model, x, _a, _g = case
    result = results["guidedbackprop"]
    expected = np.abs(ref_guided(model, x)).max(axis=-1)
    assert result.raw.shape == x.shape[:3]
    assert_maps_equal(result.raw, expected)
    plain = np.abs(backward(model, forward(model, x), one_hot(CLASSES))["x"]).max(axis=-1)
    assert correlation(expected, plain) < 0.99  # the guided rule changed the gradient


def test_guided_gradcam_equals_numpy_reference(case, results):
    model, x, a, g = case
    result = results["guidedgradcam"]
    mask = min_max(np.maximum(ref_gradcam(model, x, a, g), 0))
    assert_maps_equal(result.raw, mask * np.abs(ref_guided(model, x)).max(axis=-1))


def test_relu_layers_are_guided_and_put_back(case):
    """The reference model with its ReLUs as `ReLU` and `Activation` layers: the same
    guided map; the layers are put back after the pass."""
    model, x, _, _ = case
    inputs = keras.Input((8, 8, 3))
    hidden = layers.ReLU()(layers.Conv2D(4, 3, padding="same", name="conv1")(inputs))
    hidden = layers.Conv2D(5, 3, padding="same", name="target")(hidden)
    hidden = layers.Activation("relu")(hidden)
    hidden = layers.Conv2D(3, 1, activation="relu", name="mix")(hidden)
    outputs = layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(hidden))
    relus = keras.Model(inputs, outputs)
    for name in ("conv1", "target", "mix", "out"):
        relus.get_layer(name).set_weights(model.get_layer(name).get_weights())
    result = keras_cam.explain(relus, x, method="guidedbackprop", targets=CLASSES)
    assert_maps_equal(result.raw, np.abs(ref_guided(model, x)).max(axis=-1))
    assert "call" not in vars(relus.layers[2])
    assert relus.get_layer("mix").activation is keras.activations.relu


# FullGrad -----------------------------------------------------------------------------


def ref_fullgrad(model, x):
    """ψ(|∂S/∂x ⊙ x|) per input channel + Σ over conv layers Σ_c ψ(|b_c ∂S/∂z_c|), with
    ψ(m) = (m - min)/(max(m - min) + 1e-7) per image and channel."""
    found = forward(model, x)
    grads = backward(model, found, one_hot(CLASSES))
    w = _weights(model)
    total = min_max(np.abs(grads["x"] * found["x"]), epsilon=1e-7).sum(-1)
    for layer, z in (("conv1", "z1"), ("target", "z2"), ("mix", "zm")):
        total = total + min_max(np.abs(w[layer][1] * grads[z]), epsilon=1e-7).sum(-1)
    return total


def test_fullgrad_equals_numpy_reference(case, results):
    model, x, _a, _g = case
    result = results["fullgrad"]  # the explainer's layer= is not used
    assert result.raw.shape == x.shape[:3]
    assert_maps_equal(result.raw, ref_fullgrad(model, x))


# RefineCAM ----------------------------------------------------------------------------


def test_refinecam_equals_numpy_reference(case, results):
    """The product of the normalised Grad-CAM++ maps at conv1 (its output, after ReLU)
    and at the target layer; each scaled twice, as pytorch-grad-cam does (before and
    after its resizing)."""
    model, x, a, g = case
    found = forward(model, x)
    grads = backward(model, found, one_hot(CLASSES))

    def scaled(maps):
        return min_max(min_max(np.maximum(maps, 0), epsilon=1e-7), epsilon=1e-7)

    a1 = np.maximum(found["z1"], 0)
    expected = scaled(ref_gradcam_plus_plus(model, x, a1, grads["a1"]))
    expected = expected * scaled(ref_gradcam_plus_plus(model, x, a, g))
    assert_maps_equal(results["refinecam"].raw, expected)


def test_refinecam_default_layers_end_each_stage_between_input_and_target():
    inputs = keras.Input((16, 16, 3))
    hidden = layers.Conv2D(2, 3, padding="same", name="full")(inputs)
    hidden = layers.Conv2D(2, 3, strides=2, padding="same", name="half_a")(hidden)
    hidden = layers.Conv2D(2, 3, padding="same", name="half_b")(hidden)
    hidden = layers.Conv2D(2, 3, strides=2, padding="same", name="quarter")(hidden)
    hidden = layers.Conv2D(2, 3, strides=2, padding="same", name="eighth")(hidden)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(hidden)))
    assert stage_ends(model, (2, 2)) == ["half_b", "quarter"]
    assert stage_ends(model, (4, 4)) == ["half_b"]
    assert find_layers(model, ["quarter", "half_a"]) == [
        model.get_layer("quarter"),
        model.get_layer("half_a"),
    ]
    with pytest.raises(ValueError, match="no single layer 'nope'"):
        find_layers(model, ["nope"])
    with pytest.raises(ValueError, match="layers must be a list"):
        RefineCAM(layers="half_b")
    with pytest.raises(ValueError, match="base must be a gradient method"):
        RefineCAM(base="scorecam")


# Together -----------------------------------------------------------------------------


def test_every_map_is_finite_and_scaled_and_documented(results):
    for name in [*METHODS, "refinecam"]:
        assert np.isfinite(results[name].heatmaps).all()
        assert results[name].heatmaps.max() == pytest.approx(1.0)
        cls = type(keras_cam.methods.get_method(name))
        assert name in keras_cam.available_methods()
        if name != "gradcam":
            assert cls.paper
            assert cls.cost
            assert "Example:" in cls.__doc__
    with pytest.raises(ValueError, match="base must be a gradient method"):
        GuidedGradCAM(base="fullgrad")


def test_input_gradient_methods_explain_one_output_of_a_dict_output_model():
    """FullGrad, guided backprop and RefineCAM probe layers through the whole model: on a
    model with named outputs, `output=` picks one, and the maps are those of the model
    cut at that output."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    pooled = layers.GlobalAveragePooling2D()(x)
    kind, size = layers.Dense(3, name="kind")(pooled), layers.Dense(1, name="size")(pooled)
    two_headed = keras.Model(inputs, {"kind": kind, "size": size})
    one_headed = keras.Model(inputs, kind)
    x = np.random.default_rng(2).uniform(0, 1, size=(2, 8, 8, 3)).astype("float32")
    methods = ["fullgrad", "guidedbackprop", RefineCAM(layers=["conv1"])]
    both = keras_cam.explain(two_headed, x, method=methods, layer="target", output="kind")
    one = keras_cam.explain(one_headed, x, method=methods, layer="target")
    for name, result in both.items():
        assert result.raw.max() > 0, name
        np.testing.assert_allclose(result.raw, one[name].raw, rtol=1e-5, atol=1e-6)
