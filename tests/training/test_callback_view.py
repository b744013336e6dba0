"""The callback's events and view: names, drawing errors, the TF-free writer on a real full
disk, Ctrl-C, steps across fits, stable compare pages, the timeline's ranges, logs."""

import ast
import gc
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import checkout_env, conv_classifier, read_events, user_signals
from test_faults import event_counts, fill, small_tmpfs

import keras_cam
from keras_cam.core import interrupts
from keras_cam.render import event as painter_module
from keras_cam.render.compare_table import compare_pages
from keras_cam.render.timeline import Timeline

X = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
Y = np.arange(8) % 3
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def compiled():
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def keras_cam_warnings(seen):
    return [str(w.message) for w in seen if str(w.message).startswith("keras_cam")]


def test_class_names_from_readlines_are_cleaned_and_every_event_is_written(tmp_path):
    names = ["cat\n", "dog \r\n", "bird\n"]  # open(path).readlines()
    callback = keras_cam.CAMCallback((X, Y), tmp_path, class_names=names)
    assert callback.class_names == ["cat", "dog", "bird"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compiled().fit(X, Y, epochs=2, verbose=0, callbacks=[callback])
    assert keras_cam_warnings(seen) == []
    events = read_events(str(tmp_path))
    assert sorted(events["cam/gradcam/grid"]) == [0, 1]
    assert (tmp_path / "cam_metrics.csv").exists()


def test_a_class_name_with_a_line_break_inside_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"class_names\[1\] = 'big\\ndog' holds a line break"):
        keras_cam.CAMCallback(X, tmp_path, class_names=["cat", "big\ndog", "bird"])


def test_a_drawing_error_is_warned_as_such_and_opens_no_new_event_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("can't measure length of multiline text")

    monkeypatch.setattr(painter_module, "card_pages", broken)
    callback = keras_cam.CAMCallback(X, tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        history = compiled().fit(X, Y, epochs=4, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 4
    ours = keras_cam_warnings(seen)
    assert len(ours) == 1, ours
    assert "ValueError: can't measure length of multiline text" in ours[0]
    assert "not a write error" in ours[0]
    assert "writing works again" not in ours[0]
    # One event file for the whole run, and the numbers of every event are in it.
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    events = read_events(str(tmp_path))
    assert sorted(events["cam/gradcam/focus"]) == [0, 1, 2, 3]
    assert "cam/gradcam/grid" not in events


def open_files_under(directory: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory)):
                count += 1
        except OSError:
            continue
    return count


def test_the_tf_free_writer_on_a_real_full_disk_leaks_no_file_and_prints_no_traceback(
    tmp_path, capfd
):
    with small_tmpfs(tmp_path / "disk") as disk:

        def fill_after_first_event(epoch, logs):
            if epoch == 1:
                callback._jobs.join()  # the first event is on the disk
                fill(disk)

        callback = keras_cam.CAMCallback(
            X[:4], sinks=[keras_cam.TensorBoardSink(disk / "logs", writer="tensorboard")]
        )
        filler = keras.callbacks.LambdaCallback(on_epoch_begin=fill_after_first_event)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            history = compiled().fit(X, Y, epochs=6, verbose=0, callbacks=[filler, callback])
        assert len(history.history["loss"]) == 6
        ours = keras_cam_warnings(seen)
        assert len(ours) == 1, ours
        assert "No space left on device" in ours[0]
        assert "writing works again" in ours[0]
        # Every event file opened on the full disk is closed again.
        assert open_files_under(disk) == 0
        (disk / "filler").unlink()
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out
    assert "Exception in thread" not in printed.err


SIGINT_IN_A_CHUNK = """
import os, signal, numpy as np, keras
from conftest import conv_classifier
import keras_cam
x = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
model = conv_classifier()
model.compile("adam", "sparse_categorical_crossentropy")
cam = keras_cam.CAMCallback(
    x, {log_dir!r}, method="scorecam",
    explain=keras_cam.ExplainOptions(batch_size=1), watch=keras_cam.WatchOptions(metrics=()),
)

def arm(epoch, logs):
    if epoch == 2:  # Ctrl-C as the first chunk of masked passes of this event finishes
        cam.explainer.on_passes = lambda passes: os.kill(os.getpid(), signal.SIGINT)

arming = keras.callbacks.LambdaCallback(on_epoch_begin=arm)
announce = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, flush=True))
model.fit(x, np.arange(4) % 3, epochs=8, verbose=0, callbacks=[arming, cam, announce])
print("fit returned", flush=True)
"""


def test_ctrl_c_inside_a_chunked_event_stops_fit(tmp_path):
    script = SIGINT_IN_A_CHUNK.format(log_dir=str(tmp_path / "cam"))
    # No timing: the signal is sent from inside the event itself.
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=user_signals,
    )
    assert "KeyboardInterrupt" in done.stderr, done.stderr[-2000:]
    assert done.returncode != 0
    assert done.stdout.split() == ["0", "1"]  # stopped in epoch 2's event, not skipped


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost one
def test_a_ctrl_c_lost_in_a_destructor_stops_fit_at_the_epoch_end(tmp_path):
    class RaisesInDelete:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # Python prints "Exception ignored" here

    class LoseCtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                RaisesInDelete()
                gc.collect()

    user_signals()
    epochs = keras.callbacks.History()
    callback = keras_cam.CAMCallback(X[:4], tmp_path, watch=keras_cam.WatchOptions(metrics=()))
    try:
        with pytest.raises(KeyboardInterrupt):
            compiled().fit(X, Y, epochs=6, verbose=0, callbacks=[LoseCtrlC(), callback, epochs])
    finally:
        interrupts.unwatch()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert len(epochs.history.get("loss", [])) == 1  # epoch 1's end stopped fit


def test_a_framework_error_with_an_interrupt_inside_becomes_keyboard_interrupt():
    def host():
        raise KeyboardInterrupt

    def compiled_call():  # as tf.numpy_function hands it back
        try:
            interrupts.host_hook(host)()
        except KeyboardInterrupt:
            raise RuntimeError("UnknownError: KeyboardInterrupt in the py_func") from None

    with pytest.raises(KeyboardInterrupt):
        interrupts.interruptible(compiled_call)()

    def failing():
        raise RuntimeError("a real error")

    with pytest.raises(RuntimeError):  # an error without an interrupt stays what it is
        interrupts.interruptible(failing)()


def test_fitting_twice_or_a_second_model_continues_the_steps(tmp_path, caplog):
    callback = keras_cam.CAMCallback(X[:4], tmp_path)
    model = compiled()
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[callback])
    with caplog.at_level(logging.WARNING, logger="keras_cam"):
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[callback])
    assert "continue at step 2" in caplog.text
    compiled().fit(X, Y, epochs=1, verbose=0, callbacks=[callback])  # another model
    counts = event_counts(tmp_path)
    assert sorted(step for tag, step in counts if tag == "cam/gradcam/grid") == [0, 1, 2, 3, 4]
    assert set(counts.values()) == {1}  # no step written twice


def test_compare_pages_hold_the_same_images_whatever_the_ranges():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    for methods in (["gradcam", "layercam"], ["gradcam", "layercam", "scorecam", "eigencam"]):
        pictures = {name: images for name in methods}
        captions = [f"image {i}" for i in range(16)]
        shapes = {
            compare_pages(images, pictures, captions, dict.fromkeys(methods, label), "jet").shape
            for label in ("0-1", "0-0.47", "0-1.2e-05", "0-8.8e-88", "per map", "0-3e+02")
        }
        assert len(shapes) == 1, shapes  # the same pages, each with the same rows


def test_the_timeline_states_each_columns_range():
    timeline = Timeline(images=1, thumbnail=8)
    overlays = np.zeros((1, 8, 8, 3), np.uint8)
    timeline.add(0, overlays, scale="0-0.002")
    timeline.add(1, overlays, scale="0-0.47")
    assert timeline.column_titles == ["Epoch 1 · 0-0.002", "Epoch 2 · 0-0.47"]
    per_map = Timeline()
    per_map.add(0, overlays)
    assert per_map.column_titles == ["Epoch 1"]


def test_cam_metrics_go_to_the_logs_only_when_named(tmp_path):
    quiet = compiled().fit(
        X, Y, epochs=2, verbose=0, callbacks=[keras_cam.CAMCallback(X[:4], tmp_path / "a")]
    )
    assert not [key for key in quiet.history if key.startswith("cam_")]
    named = keras_cam.CAMCallback(
        X[:4], tmp_path / "b", watch=keras_cam.WatchOptions(log_metrics=["focus"])
    )
    history = compiled().fit(X, Y, epochs=2, verbose=0, callbacks=[named])
    assert [key for key in history.history if key.startswith("cam_")] == ["cam_gradcam_focus"]
    with pytest.raises(ValueError, match=r"log_metrics names \['energy_in_mask'\]"):
        keras_cam.CAMCallback(
            X, tmp_path, watch=keras_cam.WatchOptions(log_metrics=["energy_in_mask"])
        )


@pytest.mark.parametrize(
    ("script", "build"),
    [
        ("demo.py", "build_model"),
        ("sequence_cam.py", "build_model"),
        ("volume_cam.py", "build_model"),
        ("shortcut_learning.py", "build_model"),
        ("segmentation_cam.py", "build_segmenter"),
        ("regression_cam.py", "build_regressor"),
    ],
)
def test_examples_seed_before_the_model_is_built(script, build):
    tree = ast.parse((EXAMPLES / script).read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [
        (node.lineno, ast.unparse(node.func))
        for node in ast.walk(main)
        if isinstance(node, ast.Call)
    ]
    seeded = min(line for line, name in calls if name.endswith("set_random_seed"))
    built = min(line for line, name in calls if name == build)
    assert seeded < built
