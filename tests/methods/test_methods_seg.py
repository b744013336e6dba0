"""Seg-Eigen-CAM and the ROAD metric against float64 numpy written from the papers."""

import keras
import numpy as np
import pytest
from cam_references import CLASSES, assert_maps_equal, reference_case
from keras import layers

import keras_cam
from keras_cam import metrics
from keras_cam.diagnostics.imputation import NEIGHBOURS, noisy_linear_impute
from keras_cam.diagnostics.registry import MetricInputs, get_metric, metric_names


@pytest.fixture(scope="module")
def case():
    return reference_case()


def ref_segeigencam(a, g):
    """SVD of the centred |g| ⊙ A per image, the projection flipped when |min| > |max|."""
    maps = []
    for item in np.abs(g) * a:
        flat = item.reshape(-1, item.shape[-1])
        centred = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=True)
        projection = centred @ vt[0]
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        maps.append(projection.reshape(item.shape[:-1]))
    return np.stack(maps)


def test_segeigencam_equals_numpy(case):
    model, x, a, g = case
    result = keras_cam.explain(model, x, method="segeigencam", layer="target", targets=CLASSES)
    assert_maps_equal(result.raw, ref_segeigencam(a, g))


def dense_impute(image, removed):
    """The same equations written pixel by pixel and solved densely."""
    height, width, _ = image.shape
    unknown = [(r, c) for r in range(height) for c in range(width) if removed[r, c]]
    index = {pixel: i for i, pixel in enumerate(unknown)}
    system = np.zeros((len(unknown), len(unknown)))
    right = np.zeros((len(unknown), image.shape[-1]))
    for i, (r, c) in enumerate(unknown):
        for (dr, dc), weight in NEIGHBOURS:
            rr, cc = r + dr, c + dc
            if 0 <= rr < height and 0 <= cc < width:
                system[i, i] += weight
                if removed[rr, cc]:
                    system[i, index[rr, cc]] -= weight
                else:
                    right[i] += weight * image[rr, cc]
    filled = image.astype(np.float64).copy()
    filled[removed] = np.linalg.solve(system, right)
    return filled


def test_imputation_solves_the_neighbour_equations():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (7, 6, 3))
    removed = rng.uniform(size=(7, 6)) < 0.5
    exact = noisy_linear_impute(image, removed, noise=0.0)
    np.testing.assert_allclose(exact, dense_impute(image, removed), atol=1e-6)
    np.testing.assert_array_equal(exact[~removed], image[~removed].astype(np.float32))
    noisy = noisy_linear_impute(image, removed, noise=0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(noisy[~removed], exact[~removed])
    assert 0.3 < np.std(noisy[removed] - exact[removed]) < 0.7


def linear_model(size=6, channels=2):
    """logits = Flatten(x) @ K + b: the score of any image is a numpy dot product."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, channels))
    model = keras.Model(inputs, layers.Dense(2, name="out")(layers.Flatten()(inputs)))
    return model


def ref_road(model, images, maps, classes, percentiles, most_relevant_first):
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("out").get_weights())

    def score(image, c):
        return image.reshape(-1) @ kernel[:, c] + bias[c]

    changes = []
    for image, heat, c in zip(images, maps, classes, strict=True):
        ranked = heat if most_relevant_first else 1 - heat
        after = [
            score(dense_impute(image, ranked >= np.percentile(ranked, p)), c) for p in percentiles
        ]
        changes.append(np.mean(after) - score(image, c))
    return np.array(changes)


def test_road_equals_numpy_by_hand():
    model = linear_model()
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 1, (3, 6, 6, 2)).astype("float32")
    maps = rng.uniform(0, 1, (3, 6, 6))
    classes = np.array([0, 1, 1])
    options = {"percentiles": (20, 50, 80), "noise": 0.0, "per_image": True}
    most = metrics.road_most_relevant_first(model, images, maps, classes, **options)
    least = metrics.road_least_relevant_first(model, images, maps, classes, **options)
    combined = metrics.road_combined(model, images, maps, classes, **options)
    percentiles = options["percentiles"]
    np.testing.assert_allclose(
        most, ref_road(model, images, maps, classes, percentiles, True), atol=1e-4
    )
    np.testing.assert_allclose(
        least, ref_road(model, images, maps, classes, percentiles, False), atol=1e-4
    )
    np.testing.assert_allclose(combined, (least - most) / 2, atol=1e-6)
    # Through the registry (the callback's and the CLI's path): ROAD with its default noise,
    # seeded, so the same value twice.
    road = get_metric("road")
    inputs = MetricInputs(maps=maps, classes=classes, model=model, images=images)
    np.testing.assert_array_equal(road.compute(inputs), road.compute(inputs))
    np.testing.assert_allclose(road.compute(inputs), combined, atol=0.05)
    with pytest.raises(ValueError, match="percentiles must be"):
        metrics.road_combined(model, images, maps, classes, percentiles=(120,))
    with pytest.raises(ValueError, match=r"\(N, H, W\) images"):
        metrics.road_combined(model, images[:, :, 0], maps[:, :, 0], classes)


def test_arcc_is_the_harmonic_mean_its_code_computes():
    """pytorch-grad-cam's arcc.py by hand: coherency of the map with the method re-run on the
    masked image, 1 − mean map value, 2·ROAD clipped to [0, 1]; harmonic mean of the three."""
    model = linear_model()
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (3, 6, 6, 2)).astype("float32")
    maps = rng.uniform(0, 1, (3, 6, 6))
    classes = np.array([1, 0, 1])

    def explain(x):  # a "method": the masked image's first channel, scaled to [0, 1]
        first = np.asarray(x)[..., 0]
        return first / first.max(axis=(1, 2), keepdims=True)

    values = metrics.arcc(model, images, maps, classes, explain=explain, noise=0.0, per_image=True)
    again = explain(images * maps[..., None])
    coherency = np.array(
        [
            (np.corrcoef(a.ravel(), m.ravel())[0, 1] + 1) / 2
            for a, m in zip(again, maps, strict=True)
        ]
    )
    simplicity = 1 - maps.mean(axis=(1, 2))
    percentiles = (20, 40, 60, 80)
    road = (
        ref_road(model, images, maps, classes, percentiles, False)
        - ref_road(model, images, maps, classes, percentiles, True)
    ) / 2
    road = np.clip(2 * road, 0, 1)
    expected = 3 / (1 / coherency + 1 / simplicity + 1 / (road + 1e-8))
    np.testing.assert_allclose(values, expected, atol=1e-5)
    # Through the registry: the callback passes `explain`; the CLI does not offer ARCC.
    inputs = MetricInputs(maps=maps, classes=classes, model=model, images=images, explain=explain)
    assert np.isfinite(get_metric("arcc").compute(inputs)).all()
    assert "arcc" in metric_names()
    assert "arcc" not in metric_names(without=("explain",))
