"""Deep Feature Factorization against a float64 numpy NMF written from scikit-learn's solver."""

import numpy as np
import pytest
from cam_references import CLASSES, assert_maps_equal, reference_case
from conftest import to_numpy

import keras_cam
from keras_cam.methods import DeepFeatureFactorization
from keras_cam.methods.deep_feature_factorization import factorize


@pytest.fixture(scope="module")
def case():
    return reference_case()


def ref_nmf(x, k, seed=0, max_iter=200, tol=1e-4):
    """scikit-learn's NMF(init="random") coordinate descent, element by element, in float64."""
    rng = np.random.RandomState(seed)
    avg = np.sqrt(x.mean() / k)
    h = avg * np.abs(rng.standard_normal((k, x.shape[1])).astype(np.float32).astype(np.float64))
    w = avg * np.abs(rng.standard_normal((x.shape[0], k)).astype(np.float32).astype(np.float64))

    def sweep(data, factor, other):
        gram, cross, violation = other.T @ other, data @ other, 0.0
        for t in range(k):
            for i in range(len(factor)):
                grad = factor[i] @ gram[t] - cross[i, t]
                violation += abs(min(grad, 0.0) if factor[i, t] == 0 else grad)
                if gram[t, t] != 0:
                    factor[i, t] = max(factor[i, t] - grad / gram[t, t], 0.0)
        return violation

    ht, first = h.T.copy(), None
    for _ in range(max_iter):
        violation = sweep(x, w, ht) + sweep(x.T, ht, w)
        first = violation if first is None else first
        if first == 0 or violation <= tol * first:
            break
    return w, ht.T


def ref_dff(a, k):
    """pytorch-grad-cam's `dff()` on channels-last activations: embeddings (C, k), maps."""
    flat = a.reshape(-1, a.shape[-1]).T
    offset = flat.min(axis=1, keepdims=True)
    w, h = ref_nmf(flat - offset, k)
    return w + offset, h.T.reshape(*a.shape[:-1], k)


@pytest.fixture(scope="module")
def reference(case):
    return ref_dff(case[2], 3)


def test_factorize_equals_numpy_nmf(case, reference):
    _, _, a, _ = case
    embeddings, maps = factorize(a.astype("float32"), concepts=3)
    ref_embeddings, ref_maps = reference
    assert ref_maps.max() > 0
    np.testing.assert_allclose(to_numpy(embeddings), ref_embeddings, atol=1e-4)
    np.testing.assert_allclose(
        to_numpy(maps) / ref_maps.max(), ref_maps / ref_maps.max(), atol=1e-4
    )


def test_dff_shows_the_concept_the_class_relies_on(case, reference):
    """explain(): the chosen concept maximises Grad-CAM's weights · the concept's embedding."""
    model, x, _, g = case
    result = keras_cam.explain(
        model, x, method=DeepFeatureFactorization(concepts=3), layer="target", targets=CLASSES
    )
    embeddings, maps = reference
    chosen = np.argmax(g.mean(axis=(1, 2)) @ embeddings, axis=-1)
    assert_maps_equal(result.raw, maps[np.arange(len(x)), ..., chosen])
    assert result.method == "dff"


def test_exact_non_negative_factors_are_recovered():
    """A batch that is exactly W H with k parts (each channel's minimum 0) is rebuilt exactly."""
    rng = np.random.default_rng(1)
    parts = rng.uniform(0, 1, (4, 2))  # C = 4 channels, k = 2 concepts
    loadings = np.zeros((2, 2, 6, 6))
    loadings[0, :, :3], loadings[1, :, 3:] = 1.0, 1.0  # concept 0 on top, 1 below
    loadings *= rng.uniform(0.5, 1.5, loadings.shape)
    loadings[..., 0] = 0.0  # positions with no concept: every channel's minimum is 0
    a = np.einsum("ck,knhw->nhwc", parts, loadings)
    embeddings, maps = (to_numpy(t) for t in factorize(a.astype("float32"), concepts=2))
    rebuilt = np.einsum("ck,nhwk->nhwc", embeddings, maps)
    np.testing.assert_allclose(rebuilt, a, atol=1e-3 * a.max())


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_concept_counts_are_refused(bad):
    with pytest.raises(ValueError, match="concepts must be an integer >= 1"):
        DeepFeatureFactorization(concepts=bad)
