"""SS-CAM, IS-CAM and Smooth Grad-CAM++ against float64 numpy from their formulas.

The noise is each method's own stateless draw from its seed, read back eagerly and fed
to the reference, so the comparison is exact; the references score masked inputs and
take gradients at noisy inputs through the model itself, independently of `keras_cam`.
"""

import keras
import numpy as np
import pytest
from cam_references import (
    CLASSES,
    assert_maps_equal,
    channel_sum,
    features,
    logit_of,
    min_max,
    ref_gradcam_plus_plus,
    ref_scorecam,
    reference_case,
    reference_model,
    softmax,
    spatial,
    tape,
)

import keras_cam
from keras_cam.methods import ISCAM, SSCAM, SmoothGradCAMPlusPlus


@pytest.fixture(scope="module")
def case():
    return reference_case()


def _integrated_weights(model, x, a, perturbed_masks):
    """softmax_c of the mean over samples of S(X ⊙ mask_s,c), the masks from
    `perturbed_masks(masks (C, H, W)) -> (S, C, H, W)` (the target keeps the input size)."""
    weights = np.zeros((len(a), a.shape[-1]))
    for i in range(len(a)):
        masks = perturbed_masks(min_max(np.moveaxis(a[i], -1, 0)))
        masked = (x[i][None, None] * masks[..., None]).reshape(-1, *x.shape[1:])
        classes = np.full(len(masked), CLASSES[i])
        scores = logit_of(model, features(model, masked.astype("float32")), classes)
        weights[i] = softmax(scores.reshape(masks.shape[:2]).mean(axis=0))
    return weights


def ref_sscam(model, x, a, method):
    noise = keras.ops.convert_to_numpy(method.noise(x.shape[1:3])).astype(np.float64)
    weights = _integrated_weights(model, x, a, lambda m: m[None] + noise[:, None])
    return channel_sum(weights, a)


def ref_iscam(model, x, a, samples):
    scales = np.cumsum(np.arange(1, samples + 1) / samples)  # k_i = Σ_{j≤i} j/N
    weights = _integrated_weights(model, x, a, lambda m: scales[:, None, None, None] * m[None])
    return channel_sum(weights, a)


def ref_smoothgradcampp(model, x, a, method):
    noise = keras.ops.convert_to_numpy(method.noise(x.shape)).astype(np.float64)
    grads = np.stack([tape(model, (x + n).astype("float32"), CLASSES)[1] for n in noise])
    d1, d2, d3 = (np.mean(grads**p, axis=0) for p in (1, 2, 3))
    sums = a.sum(axis=spatial(a), keepdims=True)
    denominator = 2 * d2 + sums * d3
    alpha = np.where(denominator != 0, d2 / np.where(denominator != 0, denominator, 1), 0)
    return channel_sum((alpha * np.maximum(d1, 0)).sum(axis=spatial(a)), a)


def test_sscam_equals_numpy_reference(case):
    model, x, a, _ = case
    method = SSCAM(samples=6, std=0.5, seed=2, batch_size=16)
    result = keras_cam.explain(model, x, method=method, layer="target", targets=CLASSES)
    assert result.method == "sscam"
    assert_maps_equal(result.raw, ref_sscam(model, x, a, method))


def test_iscam_equals_numpy_reference(case):
    model, x, a, _ = case
    result = keras_cam.explain(
        model, x, method=ISCAM(samples=4, batch_size=7), layer="target", targets=CLASSES
    )
    assert result.method == "iscam"
    assert_maps_equal(result.raw, ref_iscam(model, x, a, 4))


def test_smoothgradcampp_equals_numpy_reference(case):
    model, x, a, _ = case
    method = SmoothGradCAMPlusPlus(samples=3, std=0.2, seed=5)
    result = keras_cam.explain(model, x, method=method, layer="target", targets=CLASSES)
    assert result.method == "smoothgradcam++"
    assert_maps_equal(result.raw, ref_smoothgradcampp(model, x, a, method))


def test_without_noise_they_reduce_to_their_parents(case):
    """σ = 0: SS-CAM is Score-CAM and Smooth Grad-CAM++ is Grad-CAM++; IS-CAM with one
    step scales the mask by 1 and is Score-CAM too."""
    model, x, a, g = case
    methods = [SSCAM(samples=2, std=0.0), SmoothGradCAMPlusPlus(std=0.0), ISCAM(samples=1)]
    results = keras_cam.CAMExplainer(model, methods, layer="target")(x, targets=CLASSES)
    assert_maps_equal(results["sscam"].raw, ref_scorecam(model, x, a, g))
    assert_maps_equal(results["iscam"].raw, ref_scorecam(model, x, a, g))
    assert_maps_equal(results["smoothgradcam++"].raw, ref_gradcam_plus_plus(model, x, a, g))


def test_noise_is_fixed_by_the_seed_in_one_compiled_function(case):
    model, x, a, _ = case
    methods = [SSCAM(samples=3, std=1.0, seed=1), SmoothGradCAMPlusPlus(seed=1), "gradcam"]
    explainer = keras_cam.CAMExplainer(model, methods, layer="target")
    first = explainer(x, targets=CLASSES)
    again = explainer(x, targets=CLASSES)
    assert explainer.trace_count == 1
    for name in ("sscam", "smoothgradcam++"):
        np.testing.assert_array_equal(first[name].raw, again[name].raw)
    # Another seed moves the map by more than the references' tolerance (the tiny
    # model's near-uniform softmax keeps the change small).
    other = ref_sscam(model, x, a, SSCAM(samples=3, std=1.0, seed=4))
    assert np.abs(other - first["sscam"].raw).max() > 1e-4 * other.max()


def test_progress_counts_every_sample():
    """IS-CAM and SS-CAM run samples × channels passes per image; the bar plans for them."""
    from keras_cam.core.progress import planned_passes

    model = reference_model()
    explainer = keras_cam.CAMExplainer(model, [ISCAM(samples=3), "scorecam"], layer="target")
    assert planned_passes(explainer, 2) == 2 * (1 + 3 * 5 + 5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SSCAM(samples=0), "samples must be"),
        (lambda: SSCAM(std=-1), "std must be"),
        (lambda: SSCAM(seed=-1), "seed must be"),
        (lambda: ISCAM(samples=1.5), "samples must be"),
        (lambda: SmoothGradCAMPlusPlus(std="0.3"), "std must be"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


CLI_METHODS = ["kpcacam", "sscam", "iscam", "smoothgradcam++", "finercam"]


@pytest.mark.slow  # a real `keras-cam` process: TensorFlow only in CI
def test_cli_runs_the_new_methods(tmp_path):
    from cli_runs import keras_cam_command, read_rows
    from conftest import conv_classifier
    from PIL import Image

    keras.utils.set_random_seed(7)
    model = tmp_path / "tiny.keras"
    conv_classifier(size=16).save(model)
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"image{i}.png")
    out = tmp_path / "cams"
    done = keras_cam_command(
        "explain", str(model), str(tmp_path / "image*.png"), "--out", str(out),
        "--method", ",".join(CLI_METHODS), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(out)
    assert [row["method"] for row in rows] == CLI_METHODS * 2
    listing = keras_cam_command("methods", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr[-3000:]
    for name in CLI_METHODS:
        assert name in listing.stdout


def test_callback_runs_the_new_methods_in_one_compiled_function(tmp_path):
    """A real fit: the callback explains with every new method through one trace, and
    each map's image reaches the event file."""
    from conftest import read_events, two_epoch_fit

    methods = [
        "kpcacam",
        SSCAM(samples=2),
        ISCAM(samples=2),
        SmoothGradCAMPlusPlus(samples=2),
        "finercam",
    ]
    callback = two_epoch_fit(tmp_path, methods)
    assert callback.explainer.trace_count == 1
    events = read_events(str(tmp_path))
    for name in ("kpcacam", "sscam", "iscam", "smoothgradcam++", "finercam"):
        assert sorted(events[f"cam/{name}/grid"]) == [0, 1]
