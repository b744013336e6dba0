"""Sinks: a user's own sink and TensorBoard get the same events; one reopen path; the CSV file."""

import csv
import logging
import warnings

import numpy as np
import pytest
from conftest import conv_classifier, read_events

import keras_cam
from keras_cam.sinks.csv_file import CSVSink
from keras_cam.sinks.event import Event, EventWriteError, ReopeningSink

X = np.random.default_rng(0).integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
Y = np.arange(12) % 3


class Recording:
    """A user's sink: keeps every event; can be told to fail at some steps."""

    def __init__(self, failing_steps=()):
        self.failing_steps = set(failing_steps)
        self.events, self.opened, self.closed = [], 0, 0

    def open(self):
        self.opened += 1

    def write(self, event):
        if event.step in self.failing_steps:
            raise OSError(f"cannot write step {event.step}")
        self.events.append(event)

    def close(self):
        self.closed += 1


def fit(callback, epochs=3):
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.fit(X / 255.0, Y, epochs=epochs, verbose=0, callbacks=[callback])
    return [w for w in seen if str(w.message).startswith("keras_cam")]


def test_a_users_sink_gets_every_scalar_and_image_tensorboard_gets(tmp_path):
    own = Recording()
    callback = keras_cam.CAMCallback(
        (X[:4], Y[:4]),
        tmp_path,
        sinks=[own],
        preprocess=lambda im: im / 255.0,
        method=["gradcam", "layercam"],
        view=keras_cam.ViewOptions(max_images=4),
    )
    assert fit(callback) == []
    assert [event.step for event in own.events] == [0, 1, 2]
    assert own.opened == own.closed == 1
    written = read_events(str(tmp_path))
    for event in own.events:
        for tag, value in event.scalars.items():
            assert written[tag][event.step] == pytest.approx(value, rel=1e-6)
        for tag, pages in event.images.items():
            assert pages.dtype == np.uint8
            assert pages.shape[-1] == 3
            np.testing.assert_array_equal(np.stack(written[tag][event.step]), pages)
        for tag, values in event.histograms.items():
            assert written[tag][event.step][:, 2].sum() == len(values)
    # Nothing reached TensorBoard that the user's sink did not get (but the layout).
    ours = {tag for event in own.events for tag in (*event.scalars, *event.images)}
    ours |= {tag for event in own.events for tag in event.histograms}
    assert set(written) - ours == {"custom_scalars__config__"}
    expected = {"cam/compare", "cam/gradcam/grid", "cam/layercam/timeline"}
    assert expected <= set(own.events[0].images)
    assert "cam/gradcam/drift" in own.events[1].scalars
    assert "cam/gradcam/drift" not in own.events[0].scalars  # nothing to compare with yet
    # The CSV rows are the event's rows: one per method and probe image.
    with open(tmp_path / "cam_metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 * 2 * 4 == sum(len(event.rows) for event in own.events)
    focus = own.events[2].rows[5]
    assert (focus["method"], focus["image"]) == ("layercam", 1)
    assert float(rows[2 * 8 + 5]["focus"]) == pytest.approx(focus["focus"], rel=1e-5)


def test_a_sink_failing_for_two_events_loses_them_warns_once_and_writes_after(tmp_path, caplog):
    own = Recording(failing_steps=(1, 2))
    callback = keras_cam.CAMCallback(X[:2], sinks=[own], view=keras_cam.ViewOptions(max_images=2))
    with caplog.at_level(logging.WARNING, logger="keras_cam"):
        ours = fit(callback, epochs=5)
    assert len(ours) == 1
    assert "OSError: cannot write step 1" in str(ours[0].message)
    assert [event.step for event in own.events] == [0, 3, 4]
    assert own.opened == 3  # at train begin, then after each failed write
    assert "written again" in caplog.text


def test_reopening_sink_closes_a_failed_sink_and_reopens_it_at_the_next_event():
    own = Recording(failing_steps=(1,))
    sink = ReopeningSink(own)
    sink.open()
    sink.write(Event(0))
    with pytest.raises(EventWriteError, match="step 1") as raised:
        sink.write(Event(1))
    assert isinstance(raised.value.__cause__, OSError)  # the sink's own error says why
    assert (own.opened, own.closed) == (1, 1)
    sink.write(Event(2))
    sink.close()
    assert [event.step for event in own.events] == [0, 2]
    assert (own.opened, own.closed) == (2, 2)


def test_csv_rows_under_another_header_go_to_a_new_file(tmp_path):
    path = tmp_path / "cam_metrics.csv"
    path.write_text("step,method,image,focus\n0,gradcam,0,0.5\n")
    sink = CSVSink(path)
    sink.open()
    rows = [{"step": 3, "method": "gradcam", "image": 0, "drift": None, "focus": 0.25}]
    sink.write(Event(3, rows=rows))
    sink.write(Event(4, rows=[{**rows[0], "step": 4, "drift": 0.125}]))
    sink.close()
    assert path.read_text() == "step,method,image,focus\n0,gradcam,0,0.5\n"  # untouched
    assert (tmp_path / "cam_metrics_2.csv").read_text().splitlines() == [
        "step,method,image,drift,focus",
        "3,gradcam,0,,0.25",
        "4,gradcam,0,0.125,0.25",
    ]


def test_a_callback_needs_somewhere_to_write_and_sinks_need_the_three_methods():
    with pytest.raises(ValueError, match="nowhere to write: pass log_dir="):
        keras_cam.CAMCallback(X)
    with pytest.raises(TypeError, match=r"open\(\), write\(event\) and close\(\)"):
        keras_cam.CAMCallback(X, sinks=[print])
    with pytest.raises(TypeError, match=r"view must be a keras_cam\.ViewOptions"):
        keras_cam.CAMCallback(X, "logs", view={"max_images": 4})
    assert isinstance(Recording(), keras_cam.Sink)
