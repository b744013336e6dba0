"""Faults: a disk that fills up and recovers, an interrupted fit, a killed process, short runs."""

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import checkout_env, conv_classifier, read_events, user_signals
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import keras_cam
from keras_cam.sinks import tensorboard as writer_module

X = np.random.default_rng(0).integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
Y = np.arange(16) % 3


def compiled():
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def event_counts(log_dir) -> Counter:
    """(tag, step) -> how many times it was written, over every event file in `log_dir`."""
    counts = Counter()
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                counts[value.tag, event.step] += 1
    return counts


def test_a_full_disk_warns_once_and_writing_resumes(tmp_path, monkeypatch):
    # The events are written on the worker thread: the disk is "full" for the
    # writes of steps 1-3, whenever the worker gets to them.
    for implementation in (writer_module.TensorFlowWriter, writer_module.TensorBoardWriter):
        original = implementation.images

        def images(self, tag, images, step, original=original):
            if step in (1, 2, 3):
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(self, tag, images, step)

        monkeypatch.setattr(implementation, "images", images)
    callback = keras_cam.CAMCallback(X[:4], tmp_path, view=keras_cam.ViewOptions(images="overlays"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        history = compiled().fit(X, Y, epochs=6, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 6
    ours = [w for w in seen if str(w.message).startswith("keras_cam")]
    assert len(ours) == 1
    assert "No space left on device" in str(ours[0].message)
    events = read_events(str(tmp_path))
    assert sorted(events["cam/gradcam"]) == [0, 4, 5]
    # The numbers are written before the pictures: only the failed image writes are lost.
    assert sorted(events["cam/gradcam/focus"]) == [0, 1, 2, 3, 4, 5]


def test_an_interrupted_fit_resumes_without_duplicate_steps(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    model, callback = (
        compiled(),
        keras_cam.CAMCallback(X[:4], tmp_path, view=keras_cam.ViewOptions(images="overlays")),
    )
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, Y, epochs=5, verbose=0, callbacks=[callback, Interrupt()])
    model.fit(X, Y, initial_epoch=2, epochs=4, verbose=0, callbacks=[callback])
    counts = event_counts(tmp_path)
    steps = sorted(step for tag, step in counts if tag == "cam/gradcam")
    assert steps == [0, 1, 2, 3]
    assert set(counts.values()) == {1}  # no step written twice, nothing overwritten
    assert callback.explainer.trace_count == 1


@pytest.mark.parametrize(
    ("every", "on_end", "expected"),
    [(10, False, []), (10, True, [2]), (2, True, [1, 2]), (3, True, [2])],
)
def test_every_n_epochs_longer_than_the_run(tmp_path, every, on_end, expected):
    callback = keras_cam.CAMCallback(
        X[:4], tmp_path, every_n_epochs=every, watch=keras_cam.WatchOptions(log_on_train_end=on_end)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compiled().fit(X, Y, epochs=3, verbose=0, callbacks=[callback])
    steps = sorted(read_events(str(tmp_path)).get("cam/gradcam/grid", {}))
    assert steps == expected


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["tensorflow", "tensorboard"])
def test_a_killed_process_leaves_readable_event_files(tmp_path, writer):
    script = f"""
import numpy as np
from conftest import conv_classifier
import keras_cam
x = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
model = conv_classifier()
model.compile("adam", "sparse_categorical_crossentropy")
sink = keras_cam.TensorBoardSink({str(tmp_path)!r}, writer={writer!r})
view = keras_cam.ViewOptions(images="overlays")
callback = keras_cam.CAMCallback(x, sinks=[sink], view=view)
callback.set_model(model)
callback.on_train_begin()
step = 0
while True:
    callback._event(step)
    print(step, flush=True)
    step += 1
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env=checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600  # a cap, not a timing: load only slows the child
        while process.stdout.readline().strip() != "5":
            assert time.monotonic() < deadline
            assert process.poll() is None
    finally:
        os.kill(process.pid, signal.SIGKILL)  # mid-write, or close to it
        process.wait()
    events = read_events(str(tmp_path))
    steps = sorted(events["cam/gradcam"])
    # SIGKILL cannot be caught: only the events still queued for the worker (at
    # most its capacity, plus the one being written) may be missing.
    capacity = keras_cam.CAMCallback(X, tmp_path)._jobs.capacity
    assert steps[: 6 - capacity - 1] == list(range(6 - capacity - 1))
    for step in steps:
        assert len(events["cam/gradcam"][step]) == 4


@pytest.mark.slow
def test_ctrl_c_between_events_loses_no_event_that_returned(tmp_path):
    # A slow disk keeps events queued on the worker when SIGINT arrives; the
    # process exits through KeyboardInterrupt, and the queued events are
    # written at interpreter exit before the process ends.
    script = f"""
import time, numpy as np, keras
from conftest import conv_classifier
import keras_cam
from keras_cam.sinks import tensorboard as writer_module
for implementation in (writer_module.TensorFlowWriter, writer_module.TensorBoardWriter):
    original = implementation.images
    def images(self, tag, images, step, original=original):
        time.sleep(0.3)
        return original(self, tag, images, step)
    implementation.images = images
x = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
model = conv_classifier()
model.compile("adam", "sparse_categorical_crossentropy")
callback = keras_cam.CAMCallback(x, {str(tmp_path)!r})
announce = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, flush=True))
model.fit(x, np.arange(4) % 3, epochs=1000, verbose=0, callbacks=[callback, announce])
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env=checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=user_signals,
    )
    returned = -1
    try:
        # Generous caps, not timings: a loaded machine only makes the child slower. A
        # SIGINT that some code swallows still stops fit at the next epoch end.
        deadline = time.monotonic() + 600
        while returned < 3:
            assert time.monotonic() < deadline
            assert process.poll() is None
            returned = int(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=300)
    finally:
        process.kill()
    assert "KeyboardInterrupt" in errors
    steps = sorted(read_events(str(tmp_path))["cam/gradcam/grid"])
    assert steps[: returned + 1] == list(range(returned + 1))


@pytest.mark.slow
def test_a_slow_writer_blocks_no_epoch_and_loses_no_event(tmp_path, monkeypatch):
    # No wall-clock threshold: the writer is held until released, so an epoch that
    # waited for it would not return before the release.
    release, written = threading.Event(), []
    for implementation in (writer_module.TensorFlowWriter, writer_module.TensorBoardWriter):
        original = implementation.images

        def images(self, tag, images, step, original=original):
            release.wait(timeout=600)
            written.append((tag, step))
            return original(self, tag, images, step)

        monkeypatch.setattr(implementation, "images", images)
    callback, model = keras_cam.CAMCallback(X[:4], tmp_path), compiled()
    model.fit(X, Y, epochs=1, verbose=0)  # build the model
    callback.set_model(model)
    callback.on_train_begin()
    # The queue holds two events and the worker takes one more: three epochs return
    # while nothing is written yet.
    for epoch in range(3):
        callback.on_epoch_end(epoch)
    assert written == []
    release.set()
    for epoch in range(3, 5):
        callback.on_epoch_end(epoch)
    callback.on_train_end()
    events = read_events(str(tmp_path))
    for tag in ("cam/gradcam/grid", "cam/gradcam/timeline", "cam/gradcam/focus"):
        assert sorted(events[tag]) == list(range(5))


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "512k"):
    """A real, small filesystem mounted at `path` (root only), unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path) -> None:
    """Writes zeros into `disk` until the filesystem is full."""
    with open(disk / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise


@pytest.mark.parametrize("writer", ["tensorflow", "tensorboard"])
def test_a_real_full_disk_stops_events_only_while_it_is_full(tmp_path, writer):
    with small_tmpfs(tmp_path / "disk") as disk:
        logs = disk / "logs"

        def change_the_disk(epoch, logs):
            # Events are written on the worker thread, which may lag a few epochs
            # behind (a first tf.summary write there costs ~80 ms; a JAX epoch on
            # this model ~25 ms): wait for it, so that the disk is full exactly
            # while the events of epochs 1 and 2 are written.
            if epoch in (1, 3):
                callback._jobs.join()
            if epoch == 1:
                fill(disk)
            elif epoch == 3:
                (disk / "filler").unlink()

        disk_events = keras.callbacks.LambdaCallback(on_epoch_begin=change_the_disk)
        callback = keras_cam.CAMCallback(
            X[:4],
            sinks=[keras_cam.TensorBoardSink(logs, writer=writer)],
            view=keras_cam.ViewOptions(images="overlays"),
            watch=keras_cam.WatchOptions(metrics=()),
        )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            history = compiled().fit(X, Y, epochs=6, verbose=0, callbacks=[disk_events, callback])
        assert len(history.history["loss"]) == 6
        ours = [w for w in seen if str(w.message).startswith("keras_cam")]
        assert len(ours) == 1, [str(w.message) for w in ours]
        # Every event written once the disk had room again is readable by TensorBoard,
        # whatever the failed event file ends with.
        steps = sorted(read_events(str(logs))["cam/gradcam"])
        assert steps[0] == 0
        assert steps[-3:] == [3, 4, 5]
        assert len(list(logs.glob("events.out.tfevents.*"))) >= 2


@pytest.mark.parametrize("writer", ["tensorflow", "tensorboard"])
def test_the_sink_opens_a_fresh_event_file_after_any_write_error(tmp_path, writer):
    # Noise does not compress: each event needs new pages on the disk.
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)

    def event(step):
        return keras_cam.Event(step, scalars={"probe/score": float(step)}, images={"probe": image})

    with small_tmpfs(tmp_path / "disk") as disk:
        sink = keras_cam.ReopeningSink(keras_cam.TensorBoardSink(disk / "logs", writer))
        sink.open()
        sink.write(event(0))
        fill(disk)
        failures = []
        for step in (1, 2):
            try:
                sink.write(event(step))
            except Exception as error:  # TensorFlow raises ResourceExhaustedError
                failures.append(error)
        assert failures, "the full disk did not fail any write"
        if writer == "tensorflow":
            import tensorflow as tf

            # The failed writes left no default `tf.summary` writer behind: Keras'
            # TensorBoard callback would write its batch scalars there.
            assert not bool(tf.summary.should_record_summaries())
        (disk / "filler").unlink()
        for step in (3, 4):
            sink.write(event(step))
        sink.close()
        found = read_events(str(disk / "logs"))
        # The numbers go first: a failed event may keep its scalar, never its picture.
        assert {0, 3, 4} <= set(found["probe/score"]) <= {0, 1, 2, 3, 4}
        assert sorted(found["probe"]) == [0, 3, 4]
