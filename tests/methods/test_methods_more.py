"""The methods added after the first nine, against float64 numpy from each paper's formula.

Same tiny model and the same activations and gradients (backend autodiff through the
head written out from the weights) as `test_method_references.py`; the references
below are written from the formulas, independently of `keras_cam`.
"""

import keras
import numpy as np
import pytest
from cam_references import (
    CLASSES,
    assert_maps_equal,
    channel_sum,
    correlation,
    logit_of,
    reference_case,
    spatial,
    tape,
)
from keras import layers
from scipy import ndimage

import keras_cam
from keras_cam.methods import FEM, KPCACAM, FinerCAM, RandomCAM, get_method


@pytest.fixture(scope="module")
def case():
    return reference_case()


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


def ref_randomcam(a, g, seed=0):
    """The weights are the backend's stateless draw from the seed, read back eagerly."""
    draw = keras.random.uniform((len(a), a.shape[-1]), -1.0, 1.0, seed=seed)
    return channel_sum(keras.ops.convert_to_numpy(draw).astype(np.float64), a)


def ref_sobelcam(x, size):
    """scipy's Sobel filters ("mirror" is OpenCV's default border), block means to `size`."""
    grey = np.asarray(x, np.float64) @ np.array([0.299, 0.587, 0.114])
    # One image at a time: scipy smooths across every other axis, the batch's too.
    edges = np.stack(
        [
            0.5 * np.abs(ndimage.sobel(image, axis=1, mode="mirror"))
            + 0.5 * np.abs(ndimage.sobel(image, axis=0, mode="mirror"))
            for image in grey
        ]
    )
    n, height, width = edges.shape
    rows, cols = size
    return edges.reshape(n, rows, height // rows, cols, width // cols).mean(axis=(2, 4))


def ref_kpcacam(a, g, gamma=None):
    """Kernel PCA written out: sigmoid kernel of channel-centred locations, centred kernel
    matrix, top eigenvector times √eigenvalue, its largest-magnitude entry positive."""
    maps = []
    for item in a:
        flat = item.reshape(-1, item.shape[-1])
        centred = flat - flat.mean(axis=0)
        kernel = np.tanh((gamma or 1 / flat.shape[1]) * centred @ centred.T + 1)
        n = len(kernel)
        ones = np.full((n, n), 1 / n)
        kernel = kernel - ones @ kernel - kernel @ ones + ones @ kernel @ ones
        values, vectors = np.linalg.eigh(kernel)
        top = vectors[:, -1] * np.sign(vectors[np.argmax(np.abs(vectors[:, -1])), -1])
        maps.append((top * np.sqrt(max(values[-1], 0))).reshape(item.shape[:-1]))
    return np.stack(maps)


REFERENCES = {
    "fem": ref_fem,
    "kpcacam": ref_kpcacam,
    "gradcamelementwise": ref_gradcamelementwise,
    "eigengradcam": ref_eigengradcam,
    "randomcam": ref_randomcam,
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


def test_sobelcam_is_the_inputs_edge_map(case):
    model, x, a, _ = case
    result = keras_cam.explain(model, x, method="sobelcam", layer="target")
    assert_maps_equal(result.raw, ref_sobelcam(x, a.shape[1:3]))


def test_sobelcam_averages_edges_down_to_the_layer_resolution():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    hidden = layers.Conv2D(2, 2, strides=2, activation="relu", name="target")(inputs)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(hidden)))
    x = np.random.default_rng(2).uniform(0, 1, size=(2, 8, 8, 1)).astype("float32")
    result = keras_cam.explain(model, x, method="sobelcam", layer="target")
    grey = np.repeat(x, 3, axis=-1)  # one channel is its own grey (the weights sum to 1)
    assert_maps_equal(result.raw, ref_sobelcam(grey, (4, 4)))


def test_randomcam_is_deterministic_given_its_seed(case):
    model, x, a, g = case
    explainer = keras_cam.CAMExplainer(model, [RandomCAM(seed=3), "gradcam"], layer="target")
    first = explainer(x, targets=CLASSES)["randomcam"].raw
    again = explainer(x, targets=[1, 1, 1])["randomcam"].raw
    assert explainer.trace_count == 1
    np.testing.assert_array_equal(first, again)
    assert_maps_equal(first, ref_randomcam(a, g, seed=3))
    assert correlation(first, np.maximum(ref_randomcam(a, g, seed=4), 0)) < 0.99
    with pytest.raises(ValueError, match="seed"):
        RandomCAM(seed=-1)


def test_registry_lists_the_new_methods():
    listed = keras_cam.available_methods()
    for name in [*REFERENCES, "sobelcam"]:
        assert name in listed
        assert get_method(name).name == name


def test_kpcacam_reference_is_scikit_learns_kernel_pca(case):
    """The numpy reference above is what pytorch-grad-cam calls: scikit-learn's KernelPCA."""
    decomposition = pytest.importorskip("sklearn.decomposition")
    _, _, a, g = case
    for item, expected in zip(a, ref_kpcacam(a, g), strict=True):
        flat = item.reshape(-1, item.shape[-1])
        kpca = decomposition.KernelPCA(n_components=1, kernel="sigmoid")
        projection = kpca.fit_transform(flat - flat.mean(axis=0))[:, 0]
        np.testing.assert_allclose(projection, expected.reshape(-1), atol=1e-8)


def test_kpcacam_gamma_changes_the_map(case):
    model, x, a, g = case
    result = keras_cam.explain(model, x, method=KPCACAM(gamma=50.0), layer="target")
    assert_maps_equal(result.raw, ref_kpcacam(a, g, gamma=50.0))
    assert correlation(ref_kpcacam(a, g, gamma=50.0), ref_kpcacam(a, g)) < 0.9999
    for bad in (0, -1.0, "1", True):
        with pytest.raises(ValueError, match="gamma must be"):
            KPCACAM(gamma=bad)


def finer_score_gradient(logits, classes, alpha=1.0, comparisons=3, weighting="softmax"):
    """∂S/∂y of the Finer-CAM score by hand, float64, and each image's compared classes."""
    rows = []
    for y, m in zip(np.asarray(logits, np.float64), classes, strict=True):
        distance = np.abs(y - y[m])
        distance[m] = np.inf
        nearest = np.argsort(distance, kind="stable")[: min(comparisons, len(y) - 1)]
        if weighting == "mean":
            grad = -alpha * np.bincount(nearest, minlength=len(y)) / len(nearest)
            grad[m] += 1
        else:
            p = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
            dp = np.diag(p) - np.outer(p, p)  # dp_k/dy_j = p_k (δ_kj - p_j), row k
            terms = y[m] - alpha * y[nearest]
            numerator, denominator = p[nearest] @ terms, p[nearest].sum() + 1e-9
            d_numerator = dp[nearest].T @ terms - alpha * np.bincount(
                nearest, weights=p[nearest], minlength=len(y)
            )
            d_numerator[m] += p[nearest].sum()
            d_denominator = dp[nearest].sum(axis=0)
            grad = (d_numerator * denominator - numerator * d_denominator) / denominator**2
        rows.append(grad)
    return np.stack(rows)


def ref_finercam(model, x, a, classes, **options):
    """Grad-CAM on ∂S/∂A = Σ_j ∂S/∂y_j · ∂y_j/∂A, each ∂y_j/∂A from the backend's autodiff."""
    count = model.output.shape[-1]
    all_logits = np.stack([logit_of(model, a, np.full(len(a), c)) for c in range(count)], axis=1)
    weights = finer_score_gradient(all_logits, classes, **options)
    jacobian = np.stack([tape(model, x, np.full(len(a), c))[1] for c in range(count)], axis=1)
    g = np.einsum("nk,nk...->n...", weights, jacobian)
    return channel_sum(g.mean(axis=spatial(a)), a)


@pytest.mark.parametrize(
    "options",
    [{}, {"alpha": 0.6, "weighting": "mean"}, {"alpha": 0.3, "comparisons": 1}],
    ids=["pytorch-grad-cam", "torchcam", "one-comparison"],
)
def test_finercam_equals_gradcam_of_the_contrastive_score(case, options):
    model, x, a, _ = case
    result = keras_cam.explain(
        model, x, method=FinerCAM(**options), layer="target", targets=CLASSES
    )
    assert result.method == "finercam"
    assert_maps_equal(result.raw, ref_finercam(model, x, a, CLASSES, **options))


def test_finercam_in_one_function_with_its_base(case):
    """α = 0 (softmax weighting) leaves y_m: Finer-CAM's map is its base method's."""
    model, x, _, _ = case
    methods = [FinerCAM(alpha=0.0, base="layercam"), "layercam", "gradcam"]
    explainer = keras_cam.CAMExplainer(model, methods, layer="target")
    results = explainer(x, targets=CLASSES)
    assert explainer.trace_count == 1
    np.testing.assert_allclose(results["finercam"].raw, results["layercam"].raw, atol=1e-6)
    with pytest.raises(ValueError, match="base must be a gradient method"):
        FinerCAM(base="scorecam")
    with pytest.raises(ValueError, match="weighting must be"):
        FinerCAM(weighting="max")
