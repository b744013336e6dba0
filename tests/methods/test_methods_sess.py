"""SESS in float64 numpy: scaled images, sliding windows, Grad-CAM per patch, fusion, blur.

The reference follows the paper step by step on explicit arrays (a scaled image, a
cropped patch, a zero canvas of the scale with the patch's map pasted in, the canvas
resized back, NumPy's mirrored padding for the blur), where the library folds the
cropping, pasting and blurring into matrices. Grad-CAM of each patch comes from
`cam_references` (the backend's own autodiff, the head written out in numpy).
"""

import keras
import numpy as np
import pytest
from cam_references import (
    CLASSES,
    correlation,
    head_logits,
    interpolate,
    ref_gradcam,
    reference_case,
    tape,
)
from keras import ops

import keras_cam
from keras_cam.methods import SESS

SETTINGS = {
    "overlapping, pre-filtered": dict(num_scales=3, step_size=3, pre_filter_ratio=0.25),
    "max pool, threshold, no blur": dict(scales=[8, 13], pool="max", smooth=False),
    "mean over shown pixels": dict(scales=[8, 11], theta=0.3, softmax_scores=False),
}


def strided_model():
    """The reference model with a 4 × 4 target layer on 8 × 8 images (maps are enlarged)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv1")(
        inputs
    )
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.Conv2D(3, 1, activation="relu", name="mix")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))


@pytest.fixture(scope="module", params=["target at the input's size", "strided target"])
def case(request):
    model, x, _, _ = reference_case()
    if request.param == "strided target":
        keras.utils.set_random_seed(5)
        model = strided_model()
    return model, x


@pytest.fixture(scope="module")
def results(case):
    """Every setting in one explainer: one trace serves all the comparisons."""
    model, x = case
    methods = [SESS(**options) for options in SETTINGS.values()]
    for method, label in zip(methods, SETTINGS, strict=True):
        method.name = f"sess: {label}"
    explainer = keras_cam.CAMExplainer(model, methods, layer="target")
    return explainer(x, targets=CLASSES)


def _pgc_scale(maps):
    """pytorch-grad-cam's per-map scaling: shift to 0, divide by the range + 1e-7."""
    maps = maps - maps.min(axis=(-2, -1), keepdims=True)
    return maps / (maps.max(axis=(-2, -1), keepdims=True) + 1e-7)


def _starts(length, stride, window):
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]  # the last window is moved back inside


def _blur(maps, taps=11, sigma=5.0):
    offsets = np.arange(taps) - taps // 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(maps, ((0, 0), (5, 5), (5, 5)), mode="reflect")  # dcb|abcd|cba
    side = maps.shape[-1]
    rows = sum(w * padded[:, i : i + side, :] for i, w in enumerate(kernel))
    return sum(w * rows[:, :, i : i + side] for i, w in enumerate(kernel))


def ref_sess(model, x, scales=None, num_scales=12, step_size=None, pre_filter_ratio=0.0,
             theta=0.0, pool="mean", smooth=True, softmax_scores=True):  # fmt: skip
    side = x.shape[1]
    scales = scales or [side + round(side * 2 / 7) * i for i in range(num_scales)]
    pasted, scores = [], []
    for scale in scales:
        scaled = interpolate(x.astype(np.float64), (scale, scale))
        starts = _starts(scale, step_size or side, side)
        for top in starts:
            for left in starts:
                patch = scaled[:, top : top + side, left : left + side].astype("float32")
                a, g = tape(model, patch, CLASSES)
                logits = ops.convert_to_numpy(head_logits(model, a.astype("float32")))
                logits = logits.astype(np.float64)
                if softmax_scores:
                    logits = np.exp(logits - logits.max(1, keepdims=True))
                    logits /= logits.sum(1, keepdims=True)
                scores.append(np.maximum(logits[np.arange(len(x)), CLASSES], 0))
                cam = _pgc_scale(np.maximum(ref_gradcam(model, x, a, g), 0))
                cam = _pgc_scale(interpolate(cam, (side, side)))
                canvas = np.zeros((len(x), scale, scale))
                canvas[:, top : top + side, left : left + side] = cam
                pasted.append(interpolate(canvas, (side, side)))
    pasted, scores = np.stack(pasted), np.stack(scores)  # (patches, N, ...)
    fused = []
    for i in range(len(x)):
        kept = np.argsort(scores[:, i], kind="stable")[int(len(scores) * pre_filter_ratio) :]
        best = scores[kept[-1], i]
        weights = scores[kept, i] / best if best > 0 else np.ones(len(kept))
        maps = pasted[kept, i] * weights[:, None, None]
        if pool == "max":
            fused.append(maps.max(0))
        else:
            shown = maps > theta
            total, counts = np.where(shown, maps, 0).sum(0), shown.sum(0)
            fused.append(np.where(counts > 0, total / np.maximum(counts, 1), 0))
    fused = np.stack(fused)
    return _pgc_scale(_blur(fused) if smooth else fused)


@pytest.mark.parametrize("label", sorted(SETTINGS))
def test_sess_equals_numpy_reference(case, results, label):
    model, x = case
    expected = ref_sess(model, x, **SETTINGS[label])
    heatmaps = results[f"sess: {label}"].heatmaps
    assert heatmaps.shape == x.shape[:3]
    for ours, theirs in zip(heatmaps, expected, strict=True):
        assert theirs.max() > 0.5, "a near-zero reference compares nothing"
        assert correlation(ours, theirs) >= 0.9999
    scaled = expected / expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(heatmaps / heatmaps.max(axis=(1, 2), keepdims=True), scaled,
                               atol=1e-4)  # fmt: skip


def test_default_windows_count_the_papers_patches():
    # 224: scales 224, 288, ..., 928 with non-overlapping windows moved back at the edges.
    windows = SESS().windows(224)
    per_scale = {}
    for scale, top, _left in windows:
        per_scale.setdefault(scale, set()).add(top)
    assert sorted(per_scale) == [224 + 64 * i for i in range(12)]
    assert per_scale[224] == {0}
    assert per_scale[288] == {0, 64}
    assert per_scale[928] == {0, 224, 448, 672, 704}
    assert len(windows) == sum(len(tops) ** 2 for tops in per_scale.values())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(pool="median"), "pool must be one of"),
        (dict(pre_filter_ratio=1.0), "pre_filter_ratio must be in"),
        (dict(theta=-0.1), "theta must be in"),
        (dict(scales=[]), "scales must be a list"),
        (dict(base="scorecam"), "base must be a gradient method"),
        (dict(step_size=0), "step_size must be"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(options, message):
    with pytest.raises(ValueError, match=message):
        SESS(**options)


def test_scales_below_the_image_and_non_square_images_are_refused():
    inputs = keras.Input((8, 12, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    images = np.zeros((1, 8, 12, 3), "float32")
    with pytest.raises(ValueError, match=r"square window .* Use square images"):
        keras_cam.explain(model, images, method=SESS(num_scales=1))
    with pytest.raises(ValueError, match="at least the image side 8"):
        SESS(scales=[6, 8]).windows(8)


def test_callback_runs_sess_beside_gradcam_in_one_compiled_function(tmp_path):
    from conftest import read_events, two_epoch_fit

    callback = two_epoch_fit(tmp_path, ["gradcam", SESS(num_scales=2)])
    assert callback.explainer.trace_count == 1
    events = read_events(str(tmp_path))
    assert sorted(events["cam/sess/grid"]) == [0, 1]
    assert sorted(events["cam/gradcam/grid"]) == [0, 1]


@pytest.mark.slow  # a real `keras-cam` process: TensorFlow only in CI
def test_cli_explains_with_sess_at_its_defaults(tmp_path):
    from cli_runs import keras_cam_command, read_rows
    from conftest import conv_classifier
    from PIL import Image

    keras.utils.set_random_seed(7)
    conv_classifier(size=16).save(tmp_path / "tiny.keras")
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"image{i}.png")
    done = keras_cam_command(
        "explain", str(tmp_path / "tiny.keras"), str(tmp_path / "image*.png"),
        "--out", str(tmp_path / "cams"), "--method", "sess", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["method"] for row in read_rows(tmp_path / "cams")] == ["sess", "sess"]
    listing = keras_cam_command("methods", cwd=tmp_path)
    assert "sess" in listing.stdout
    assert "2207.01769" in listing.stdout
