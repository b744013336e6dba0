"""DisplayScale: which raw map value gets the full colour, checked against plain numpy."""

import numpy as np
import pytest

from keras_cam.core.result import CAMResult
from keras_cam.core.scales import check_offline_normalize, fixed_scale, flat_maps
from keras_cam.render.display_scale import DisplayScale


def result(raw, flat=()):
    raw = np.asarray(raw, dtype=np.float32)
    # The explainer's heatmaps: each map to its own range, all zero where flat.
    low = raw.min(axis=(1, 2), keepdims=True)
    heatmaps = (raw - low) / (raw.max(axis=(1, 2), keepdims=True) - low)
    heatmaps[list(flat)] = 0.0
    count = len(raw)
    ids = np.zeros(count, np.int64)
    return CAMResult(heatmaps, raw, ids, np.zeros(count), "layer", "gradcam", ids, np.zeros(count))


def maps(seed, scale):
    return (
        np.random.default_rng(seed).uniform(size=(3, 2, 4))
        * np.array([1.0, 0.5, 0.1])[:, None, None]
        * scale
    )


def test_image_scale_is_the_explainers_own_heatmaps():
    event = result(maps(0, 2.0))
    shown, top = DisplayScale("image")(event)
    np.testing.assert_array_equal(shown, event.heatmaps)
    assert top is None


def test_probe_scale_divides_every_map_by_the_largest_raw_value_of_the_event():
    scale = DisplayScale("probe")
    for seed, factor in ((0, 2.0), (1, 0.25)):
        raw = maps(seed, factor)
        shown, top = scale(result(raw))
        assert top == pytest.approx(raw.max())
        np.testing.assert_allclose(shown, raw / raw.max(), rtol=1e-6)
        # A weak image stays weak: its peak is its share of the probe's largest value.
        assert shown[2].max() == pytest.approx(raw[2].max() / raw.max(), rel=1e-6)


def test_run_scale_keeps_the_largest_value_so_far_so_a_fading_map_fades():
    scale = DisplayScale("run")
    events = [maps(0, 1.0), maps(1, 3.0), maps(2, 0.5)]  # grows, then fades
    running = 0.0
    for raw in events:
        running = max(running, raw.max())
        shown, top = scale(result(raw))
        assert top == pytest.approx(running)
        np.testing.assert_allclose(shown, raw / running, rtol=1e-6)
    assert shown.max() == pytest.approx(events[2].max() / events[1].max(), rel=1e-6)


def test_a_flat_map_stays_zero_and_never_sets_the_scale():
    raw = maps(0, 1.0)
    raw[0] *= 1e3  # the strongest map, but flagged flat (negligible) by the explainer
    event = result(raw, flat=[0])
    np.testing.assert_array_equal(flat_maps(event), [True, False, False])
    for normalize in ("probe", "run"):
        shown, top = DisplayScale(normalize)(event)
        assert top == pytest.approx(raw[1:].max())
        np.testing.assert_array_equal(shown[0], 0.0)
        np.testing.assert_allclose(shown[1:], raw[1:] / raw[1:].max(), rtol=1e-6)
    shown, top = DisplayScale("probe")(result(raw, flat=[0, 1, 2]))
    assert top == 0.0
    np.testing.assert_array_equal(shown, 0.0)


def test_an_unknown_scale_names_the_choices():
    with pytest.raises(ValueError, match=r"normalize must be one of 'image', 'probe', 'run'"):
        DisplayScale("batch")


def interpolate(row, centres):
    return np.interp(centres, np.arange(len(row)), row)


def linear_resize(maps, size):
    """Independent linear resize of (N, *spatial): one axis at a time, pixel centres, clamped."""
    for axis, (old, new) in enumerate(zip(maps.shape[1:], size, strict=True), start=1):
        centres = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
        maps = np.apply_along_axis(interpolate, axis, maps, centres)
    return maps


@pytest.mark.parametrize(
    ("raw_size", "size"), [((5,), (15,)), ((2, 4), (4, 8)), ((2, 3, 2), (4, 6, 4))], ids=str
)
def test_fixed_scales_of_explain_are_the_raw_maps_upsampled_over_one_peak(raw_size, size):
    rank = len(raw_size)
    raw = np.random.default_rng(0).uniform(size=(3, *raw_size)).astype(np.float32)
    raw *= np.array([1.0, 0.5, 0.1], np.float32).reshape(-1, *[1] * rank)
    raw[0] *= 1e3  # the strongest map, but flat (negligible) for the explainer
    heatmaps = np.ones((3, *size), np.float32)
    heatmaps[0] = 0.0
    count, ids = 3, np.zeros(3, np.int64)
    event = CAMResult(heatmaps, raw, ids, np.zeros(count), "layer", "gradcam", ids, ids)
    upsampled = linear_resize(raw.astype(np.float64), size)
    upsampled[0] = 0.0
    assert fixed_scale(event, "image", rank) is event
    probe = fixed_scale(event, "probe", rank)
    np.testing.assert_allclose(probe.heatmaps, upsampled / raw[1:].max(), atol=1e-6)
    assert probe.heatmaps[2].max() < probe.heatmaps[1].max() / 2  # a weak map stays dim
    fixed = fixed_scale(event, float(raw[2].max()), rank)  # full colour at the weakest's peak
    np.testing.assert_allclose(fixed.heatmaps, np.clip(upsampled / raw[2].max(), 0, 1), atol=1e-6)
    np.testing.assert_array_equal(fixed.raw, raw)  # only the heatmaps change


@pytest.mark.parametrize(
    ("normalize", "message"),
    [
        ("run", r"'run' is the callback's running maximum.*normalize='probe'.*or a number"),
        ("batch", r"normalize must be 'image' .*'probe' .*or a number > 0"),
        (0.0, r"a finite number > 0, got 0.0"),
        (float("nan"), r"a finite number > 0, got nan"),
        (True, r"normalize must be 'image'"),
    ],
)
def test_offline_scales_refuse_what_explain_cannot_apply(normalize, message):
    with pytest.raises(ValueError, match=message):
        check_offline_normalize(normalize)
