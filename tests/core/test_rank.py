"""1-D (Conv1D on sequences) and 3-D (Conv3D on volumes) models, against independent computations.

Activations come from a Keras sub-model, gradients from the backend's own
autodiff (GradientTape / jax.grad / torch.autograd) through a head written out
from the weights; the maps are then computed in float64 numpy from each
paper's formula, over every spatial axis (`cam_references`). The same
reference code serves every rank, as one method file does in the library.
"""

import csv
import math

import keras
import numpy as np
import pytest
from cam_references import (
    CLASSES,
    REFERENCES,
    assert_maps_equal,
    channel_sum,
    features,
    interpolate,
    min_max,
    tape,
)
from conftest import read_events
from keras import layers, ops

import keras_cam
from keras_cam.core.layers import spatial_rank
from keras_cam.diagnostics import metrics
from keras_cam.methods import AblationCAM, ScoreCAM

# Per spatial rank: the input shape (channels last), the conv and pooling layers.
SHAPES = {1: (12, 2), 3: (4, 5, 4, 2)}
CONV = {1: layers.Conv1D, 3: layers.Conv3D}
GAP = {1: layers.GlobalAveragePooling1D, 3: layers.GlobalAveragePooling3D}
POOL = {1: layers.MaxPooling1D, 3: layers.MaxPooling3D}

# JAX and PyTorch run a representative subset within their time budget (Grad-CAM on a
# sequence model against autodiff, one fit); checks of structure, numpy metrics and
# closed forms run in the TensorFlow pass.
tensorflow_pass = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="one backend suffices: TensorFlow pass"
)
other_backends = pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="TensorFlow runs every method"
)
slow = pytest.mark.slow


def reference_model(rank: int) -> keras.Model:
    """Target layer at half the input's resolution (maps are upsampled), nonlinear head."""
    conv = CONV[rank]
    inputs = keras.Input(SHAPES[rank])
    x = conv(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = POOL[rank](2, name="pool")(x)
    x = conv(5, 3, padding="same", activation="relu", name="target")(x)
    x = conv(6, 1, activation="relu", name="mix")(x)
    x = GAP[rank](name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name=f"reference_{rank}d")


def inputs_for(rank: int, count: int = 3, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, *SHAPES[rank])).astype("float32")


# Score- and Ablation-CAM in chunks that do not divide the N·C passes (the last one padded).
METHODS = {
    "scorecam": ScoreCAM(batch_size=4),
    "ablationcam": AblationCAM(batch_size=4),
}


@pytest.mark.parametrize(
    ("rank", "names"),
    [
        pytest.param(1, tuple(sorted(REFERENCES)), marks=slow, id="1d-every-method"),
        pytest.param(3, tuple(sorted(REFERENCES)), marks=slow, id="3d-every-method"),
        pytest.param(1, ("gradcam",), marks=other_backends, id="1d-gradcam"),
    ],
)
def test_methods_match_numpy_over_all_spatial_axes(rank, names):
    """Raw maps against the formulas; heatmaps are the maps upsampled linearly per axis."""
    keras.utils.set_random_seed(7)
    model = reference_model(rank)
    x = inputs_for(rank)
    a, g = tape(model, x, CLASSES)
    explainer = keras_cam.CAMExplainer(model, [METHODS.get(n, n) for n in names], layer="target")
    results = explainer(x, targets=CLASSES)
    explainer(x[::-1], targets=CLASSES)
    assert explainer.trace_count == 1
    assert explainer.spatial_rank == rank
    for name in names:
        result, expected = results[name], np.maximum(REFERENCES[name](model, x, a, g), 0)
        assert result.raw.shape == a.shape[:-1], name
        assert_maps_equal(result.raw, expected)
        upsampled = min_max(interpolate(expected, x.shape[1:-1]))
        np.testing.assert_allclose(result.heatmaps, upsampled, atol=1e-4, err_msg=name)


def gap_dense_model(rank: int, size: tuple[int, ...]) -> keras.Model:
    conv = CONV[rank]
    inputs = keras.Input(size)
    x = conv(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = POOL[rank](2, name="pool")(x)
    x = conv(5, 3, padding="same", activation="relu", name="target")(x)
    x = GAP[rank](name="gap")(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x), name=f"gap_dense_{rank}d")


@tensorflow_pass
@pytest.mark.parametrize(("rank", "size"), [(1, (16, 3)), (3, (4, 6, 8, 1))])
def test_gap_dense_cam_is_the_kernel_sum_and_grad_cam_is_proportional(rank, size):
    """The closed form of a GAP→Dense head; heatmaps are the raw map linearly upsampled."""
    model = gap_dense_model(rank, size)
    x = np.random.default_rng(1).uniform(0, 1, (2, *size)).astype("float32")
    a = features(model, x).astype(np.float64)
    kernel = ops.convert_to_numpy(model.get_layer("out").kernel).astype(np.float64)
    every_class = np.stack([channel_sum(np.tile(k, (len(a), 1)), a) for k in kernel.T], 1)
    # Each item's class with the most positive evidence: a map with something to show.
    classes = np.maximum(every_class, 0).reshape(len(a), 3, -1).sum(-1).argmax(1)
    results = keras_cam.explain(model, x, method=["cam", "gradcam", "hirescam"], targets=classes)
    cam = np.maximum(every_class[np.arange(len(a)), classes], 0)
    assert results["cam"].layer == "target"
    np.testing.assert_allclose(results["cam"].raw, cam, rtol=1e-5, atol=1e-6)
    positions = math.prod(a.shape[1:-1])
    np.testing.assert_allclose(results["gradcam"].raw * positions, cam, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results["hirescam"].raw * positions, cam, rtol=1e-4, atol=1e-6)
    heatmaps = results["cam"].heatmaps
    assert heatmaps.shape == x.shape[:-1]
    np.testing.assert_allclose(heatmaps, min_max(interpolate(cam, size[:-1])), atol=1e-5)


@tensorflow_pass
def test_a_token_layer_of_an_image_model_is_not_a_sequence_map():
    image = keras.Input((8, 8, 3))
    tokens = layers.Reshape((16, 12))(layers.Conv2D(12, 2, strides=2)(image))
    vit_like = keras.Model(image, layers.Dense(2)(layers.GlobalAveragePooling1D()(tokens)))
    sequences = keras.Input((8, 3))
    conv1d = keras.Model(sequences, layers.Dense(2)(layers.Conv1D(4, 3)(sequences)))
    # A classifier of (N, H, W) grayscale images that reshapes them to 4-D maps.
    gray = keras.Input((8, 8))
    maps = layers.Conv2D(4, 3)(layers.Reshape((8, 8, 1))(gray))
    grayscale = keras.Model(gray, layers.Dense(2)(layers.GlobalAveragePooling2D()(maps)))
    assert [spatial_rank(m) for m in (vit_like, conv1d, grayscale)] == [2, 1, 2]


@tensorflow_pass
@pytest.mark.parametrize("rank", [1, 3])
def test_the_automatic_layer_is_never_a_single_position(rank):
    """A keepdims pooling and a pointwise conv after it are the head, not the target."""
    conv = CONV[rank]
    inputs = keras.Input((8,) * rank + (2,))
    x = conv(4, 3, padding="same", activation="relu", name="target")(inputs)
    x = GAP[rank](keepdims=True, name="gap")(x)
    x = conv(3, 1, name="classifier")(x)
    model = keras.Model(inputs, layers.Flatten()(x))
    assert keras_cam.CAMExplainer(model).layer == "target"


@pytest.mark.parametrize(
    ("rank", "single", "message"),
    [
        (1, (8, 2), r"add a batch axis: sequences\[None\]"),
        (3, (4, 4, 4, 2), r"add a batch axis: volumes\[None\]"),
        (1, (2, 8, 5), r"expects input of shape \(None, 8, 2\)"),
    ],
)
@tensorflow_pass
def test_bad_input_names_the_problem(rank, single, message):
    model = gap_dense_model(rank, (8,) * rank + (2,))
    with pytest.raises(ValueError, match=message):
        keras_cam.explain(model, np.zeros(single, "float32"))


@tensorflow_pass
def test_aug_smooth_is_refused_for_sequences():
    with pytest.raises(ValueError, match=r"aug_smooth flips and zooms 2-D images.*sequences"):
        keras_cam.CAMExplainer(gap_dense_model(1, (8, 2)), aug_smooth=True)


@tensorflow_pass
def test_a_length_one_last_stage_is_a_clear_error():
    inputs = keras.Input((8, 2))
    x = layers.Conv1D(4, 3, padding="same", name="stage1")(inputs)
    x = layers.Conv1D(4, 3, strides=8, padding="same", name="stage2")(x)
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))
    with pytest.raises(ValueError, match=r"'stage2', is 1 .*layer='stage1' \(8\).*sequences"):
        keras_cam.CAMExplainer(model)


# Metrics: random maps and masks of both ranks against plain numpy.


@pytest.fixture(params=[(5, 9), (3, 3, 4, 5)], ids=["1d", "3d"])
def maps_and_masks(request):
    rng = np.random.default_rng(5)
    maps = rng.uniform(0, 1, request.param) ** 3
    masks = rng.uniform(0, 1, request.param) > 0.6
    return maps, masks


@tensorflow_pass
def test_mask_and_distribution_metrics_match_numpy(maps_and_masks):
    maps, masks = maps_and_masks
    flat_maps, flat_masks = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
    hits = flat_masks[np.arange(len(maps)), flat_maps.argmax(axis=1)]
    np.testing.assert_array_equal(metrics.pointing_game(maps, masks, per_image=True), hits)
    energy = (flat_maps * flat_masks).sum(1) / flat_maps.sum(1)
    np.testing.assert_allclose(metrics.energy_in_mask(maps, masks, per_image=True), energy)
    p = flat_maps / flat_maps.sum(1, keepdims=True)
    entropy = -(p * np.log(p)).sum(1) / np.log(flat_maps.shape[1])
    np.testing.assert_allclose(metrics.focus(maps, per_image=True), entropy)
    other = np.random.default_rng(6).uniform(0, 1, maps.shape)
    pearson = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(maps, other, strict=True)]
    np.testing.assert_allclose(metrics.drift(maps, other, per_image=True), 1 - np.array(pearson))
    with pytest.raises(ValueError, match="same shape"):
        metrics.energy_in_mask(maps, masks[:, :1])


def linear_classifier(rank: int, size: tuple[int, ...]) -> keras.Model:
    """Softmax of a Dense layer on the channel means: its scores are easy to write in numpy."""
    inputs = keras.Input(size)
    x = GAP[rank]()(inputs)
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))


@tensorflow_pass
@pytest.mark.parametrize(("rank", "size"), [(1, (10, 2)), (3, (3, 4, 2, 2))])
def test_deletion_and_insertion_remove_time_steps_or_voxels(rank, size):
    model = linear_classifier(rank, size)
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("out").get_weights())
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, (3, *size)).astype("float32")
    maps = rng.uniform(0, 1, x.shape[:-1])
    classes = np.array([0, 1, 1])
    steps = 4

    def score(items, k):
        pooled = items.reshape(len(items), -1, items.shape[-1]).mean(1)
        logits = pooled @ kernel + bias
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True))[np.arange(len(items)), k]

    positions = math.prod(size[:-1])
    mean = x.reshape(len(x), -1, size[-1]).mean(1)

    def area(insert):
        curves = np.zeros((len(x), steps + 1))
        for i in range(len(x)):
            order = np.argsort(-maps[i].ravel(), kind="stable")
            for step in range(steps + 1):
                changed = order[: round(step / steps * positions)]
                flat = x[i].reshape(positions, -1).astype(np.float64)
                if insert:
                    flat = np.repeat(mean[i][None], positions, axis=0)
                    flat[changed] = x[i].reshape(positions, -1)[changed]
                else:
                    flat[changed] = mean[i]
                curves[i, step] = score(flat.reshape(1, *size), classes[i : i + 1])[0]
        return (curves[:, 1:] + curves[:, :-1]).sum(1) / (2 * steps)

    deletion = metrics.deletion_auc(model, x, maps, classes, steps=steps, per_image=True)
    np.testing.assert_allclose(deletion, area(insert=False), rtol=1e-5)
    insertion = metrics.insertion_auc(
        model, x, maps, classes, steps=steps, baseline="mean", per_image=True
    )
    np.testing.assert_allclose(insertion, area(insert=True), rtol=1e-5)
    full = score(x.astype(np.float64), classes)
    weights = maps / maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)
    kept = score(x * weights[..., None], classes)
    drop = metrics.average_drop(model, x, maps, classes, per_image=True)
    np.testing.assert_allclose(drop, np.maximum(full - kept, 0) / full, rtol=1e-5)


@tensorflow_pass
def test_blurred_baselines_are_separable_gaussian_blurs():
    """A sequence blurs like an image column; a volume like its slices, then along depth."""
    rng = np.random.default_rng(9)
    sequence = rng.uniform(0, 1, (2, 16, 3)).astype("float32")
    as_image = np.repeat(sequence[:, :, None], 16, axis=2)  # constant along the width
    np.testing.assert_allclose(
        metrics._blur(sequence), metrics._blur(as_image)[:, :, 8], rtol=1e-5, atol=1e-6
    )
    planes = rng.uniform(0, 1, (2, 16, 16, 1)).astype("float32")
    volume = np.repeat(planes[:, None], 16, axis=1)  # constant along depth
    np.testing.assert_allclose(
        metrics._blur(volume)[:, 5], metrics._blur(planes), rtol=1e-5, atol=1e-6
    )
    along_depth = np.broadcast_to(sequence[:, :, None, None, :1], (2, 16, 16, 16, 1))
    np.testing.assert_allclose(
        metrics._blur(np.ascontiguousarray(along_depth))[:, :, 3, 7],
        metrics._blur(sequence[..., :1]),
        rtol=1e-5,
        atol=1e-6,
    )


# The callback in a real fit.


@pytest.mark.parametrize(
    ("rank", "size", "methods", "forward_metrics"),
    [
        (1, (16, 2), ["gradcam"], ()),
        # Score-CAM and deletion feed perturbed volumes through the model in `fit`.
        pytest.param(3, (4, 6, 6, 1), ["gradcam", "scorecam"], ("deletion",), marks=slow),
        # The smallest volume fit, for the JAX and PyTorch passes (TensorFlow runs the above).
        pytest.param(3, (4, 4, 4, 1), ["gradcam"], (), marks=other_backends, id="3d-gradcam"),
    ],
)
def test_fit_with_the_callback_logs_metrics_for_sequences_and_volumes(
    tmp_path, rank, size, methods, forward_metrics
):
    model = gap_dense_model(rank, size)
    if rank == 3:
        # Only the head trains (so the maps still change): XLA takes about 20 s to compile
        # a Conv3D's backward pass in JAX's train step.
        for layer in model.layers[:-1]:
            layer.trainable = False
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (8, *size)).astype("float32")
    y = rng.integers(0, 3, 8)
    masks = rng.uniform(0, 1, x.shape[:-1]) > 0.5
    callback = keras_cam.CAMCallback(
        (x[:4], y[:4]),
        tmp_path,
        method=methods,
        watch=keras_cam.WatchOptions(
            probe_masks=masks[:4],
            metrics=("drift", "focus", *forward_metrics),
            log_metrics=True,
        ),
    )
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    assert callback.explainer.trace_count == 1
    with open(tmp_path / "cam_metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * len(methods) * 4  # epochs × methods × probe inputs
    # The last event's numbers are those of the trained model's maps, computed anew (by the
    # callback's own explainer: no second compile, and still one trace).
    results = callback.explainer(x[:4])
    assert callback.explainer.trace_count == 1
    events = read_events(str(tmp_path))
    for name, result in results.items():
        last = [row for row in rows if row["step"] == "1" and row["method"] == name]
        energy = metrics.energy_in_mask(result.heatmaps, masks[:4], per_image=True)
        focus = metrics.focus(result.heatmaps, per_image=True)
        np.testing.assert_allclose([float(r["energy_in_mask"]) for r in last], energy, atol=1e-5)
        np.testing.assert_allclose([float(r["focus"]) for r in last], focus, atol=1e-5)
        assert all(r["drift"] for r in last)
        assert events[f"cam/{name}/energy_in_mask"][1] == pytest.approx(energy.mean(), abs=1e-5)
        for metric in forward_metrics:
            assert set(events[f"cam/{name}/{metric}"]) == {0, 1}
        logged = history.history[f"cam_{name}_focus"]
        assert logged[-1] == pytest.approx(focus.mean(), abs=1e-5)
