"""Large probes in fixed-size chunks, and memory that stays flat over many events."""

import keras
import numpy as np
import pytest
from conftest import conv_classifier, read_events

import keras_cam


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_chunks_equal_one_pass_and_never_retrace(method):
    model = conv_classifier()
    images = np.random.default_rng(0).uniform(0, 1, size=(7, 16, 16, 3)).astype("float32")
    whole = keras_cam.CAMExplainer(model, method)(images, targets="top2")
    chunked = keras_cam.CAMExplainer(model, method, batch_size=3)
    result = chunked(images, targets="top2")  # 14 maps: chunks of 3, the last padded
    result = chunked(images, targets="top2")
    if keras.backend.backend() != "torch":
        assert chunked.trace_count == 1
    np.testing.assert_allclose(result.raw, whole.raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(result.classes, whole.classes)
    np.testing.assert_allclose(result.scores, whole.scores, rtol=1e-6)
    assert result.heatmaps.shape == (7, 2, 16, 16)


def test_a_probe_larger_than_batch_size_in_the_callback(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 3, size=40)
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(
        (x, y),
        tmp_path,
        explain=keras_cam.ExplainOptions(batch_size=16),
        view=keras_cam.ViewOptions(max_images=40, images="overlays", normalize="image"),
    )
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert callback.explainer.trace_count == 1
    events = read_events(str(tmp_path))
    assert len(events["cam/gradcam"][1]) == 40
    expected = keras_cam.overlay(x, keras_cam.explain(model, x).heatmaps)
    np.testing.assert_array_equal(np.stack(events["cam/gradcam"][1]), expected)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="Linux only")
def test_memory_does_not_grow_from_event_to_event(tmp_path):
    """After the timeline is full, further events add no resident memory (the benchmark
    measures 200 events of the demo model)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(
        x, tmp_path, watch=keras_cam.WatchOptions(metrics=("drift", "focus"))
    )
    model.fit(x, np.zeros(8), epochs=1, verbose=0, callbacks=[callback])
    callback.on_train_begin()
    for step in range(40):  # warm-up, and fill the 8-column timeline
        callback._event(step)
    before = resident_bytes()
    for step in range(40, 100):
        callback._event(step)
    growth = resident_bytes() - before
    callback.on_train_end()
    assert growth < 4 * 2**20, f"{growth / 2**20:.1f} MiB over 60 events"
