"""Acting on the maps in real `fit` runs: CAM metrics in Keras logs, alarms, galleries."""

import csv
import glob
import os
import warnings

import keras
import numpy as np
import pytest
from conftest import conv_classifier, grouped, read_events

import keras_cam
from keras_cam.diagnostics.tracking import WORSE_WHEN_HIGHER
from keras_cam.render import event as render_event

SIZE = 16


def shapes_data(n=48, seed=0):
    """Random images with a bright square (the object) whose position sets the class."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, SIZE, SIZE, 3)).astype(np.uint8)
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    labels = rng.integers(0, 3, size=n)
    for i, label in enumerate(labels):
        top, left = [(1, 1), (1, 9), (9, 5)][label]
        masks[i, top : top + 6, left : left + 6] = True
    images[masks] = 230
    return images, labels, masks


def csv_series(log_dir, metric, method="gradcam"):
    """{step: [per-image values]} of one metric, read back from cam_metrics.csv."""
    series = {}
    with open(os.path.join(log_dir, "cam_metrics.csv"), newline="") as file:
        for row in csv.DictReader(file):
            if row["method"] == method and row[metric]:
                series.setdefault(int(row["step"]), []).append(float(row[metric]))
    return series


class WeightsAtEpochEnd(keras.callbacks.Callback):
    """Records the weights after every epoch (placed after the callbacks under test)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def fit(model, callbacks, epochs=4, **kwargs):
    x, y, _ = shapes_data()
    return model.fit(
        x / 255.0, y, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks, **kwargs
    )


def cam_callback(log_dir, **kwargs):
    x, y, masks = shapes_data(seed=1)
    kwargs.setdefault("probe_masks", masks[:8])
    kwargs.setdefault("log_metrics", True)
    return keras_cam.CAMCallback(
        (x[:8], y[:8]),
        log_dir,
        preprocess=lambda im: im / 255.0,
        **grouped(max_images=8, **kwargs),
    )


def compiled_model(learning_rate=0.05):
    model = conv_classifier(size=SIZE)
    model.compile(keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy")
    return model


def test_early_stopping_restores_the_weights_of_the_best_energy_in_mask(tmp_path):
    """Runs on every backend: the one line users write, end to end."""
    model = compiled_model()
    stopping = keras.callbacks.EarlyStopping(
        monitor="cam_gradcam_energy_in_mask", mode="max", patience=2, restore_best_weights=True
    )
    snapshots = WeightsAtEpochEnd()
    history = fit(model, [cam_callback(tmp_path), stopping, snapshots], epochs=5)
    logged = history.history["cam_gradcam_energy_in_mask"]
    from_csv = csv_series(str(tmp_path), "energy_in_mask")
    assert logged == pytest.approx([np.mean(from_csv[e]) for e in sorted(from_csv)], abs=1e-5)
    assert len(logged) == len(history.history["loss"])
    best = int(np.argmax(logged))
    assert stopping.best_epoch == best
    for restored, expected in zip(model.get_weights(), snapshots.weights[best], strict=True):
        np.testing.assert_array_equal(restored, expected)
    assert {"cam_gradcam_focus", "cam_gradcam_pointing_game"} <= set(history.history)
    assert history.history["cam_gradcam_drift"]  # from the second event on


@pytest.mark.slow
def test_checkpoint_lr_schedule_csv_logger_and_tensorboard_read_the_cam_metrics(tmp_path):
    model = compiled_model()
    checkpoint_path = str(tmp_path / "best.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(
        checkpoint_path,
        monitor="cam_gradcam_focus",
        mode="min",
        save_best_only=True,
        save_weights_only=True,
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="cam_gradcam_focus", mode="min", factor=0.5, patience=1, min_delta=0
    )
    logger = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    board = keras.callbacks.TensorBoard(str(tmp_path))  # the same log_dir as ours
    snapshots = WeightsAtEpochEnd()
    callbacks = [cam_callback(tmp_path), checkpoint, plateau, logger, board, snapshots]
    history = fit(model, callbacks, epochs=5)

    focus = history.history["cam_gradcam_focus"]
    best = int(np.argmin(focus))
    saved = compiled_model()
    saved.load_weights(checkpoint_path)
    for loaded, expected in zip(saved.get_weights(), snapshots.weights[best], strict=True):
        np.testing.assert_array_equal(loaded, expected)

    # patience=1: every epoch that does not improve on the best so far halves the rate.
    worse = sum(focus[e] >= min(focus[:e]) for e in range(1, len(focus)))
    learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert learning_rate == pytest.approx(0.05 * 0.5**worse)

    with open(tmp_path / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["cam_gradcam_focus"]) for row in rows] == pytest.approx(focus)

    # Keras' TensorBoard plots our logs as epoch_cam_* in its own run; no tag is written twice.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen = {}
    for path in glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True):
        run = os.path.relpath(os.path.dirname(path), tmp_path)
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                key = (run, value.tag, event.step)
                seen[key] = seen.get(key, 0) + 1
    assert seen
    assert max(seen.values()) == 1
    keras_focus = read_events(str(tmp_path / "train"))["epoch_cam_gradcam_focus"]
    assert [keras_focus[e] for e in range(5)] == pytest.approx(focus, rel=1e-6)
    ours = {tag for run, tag, _ in seen if run == "."}
    theirs = {tag for run, tag, _ in seen if run != "."}
    assert "cam/gradcam/focus" in ours
    assert not ours & theirs


@pytest.mark.slow
def test_epochs_without_an_event_add_nothing_and_patience_counts_events(tmp_path):
    model = compiled_model(learning_rate=0.0)  # frozen: the focus never improves
    stopping = keras.callbacks.EarlyStopping(monitor="cam_gradcam_focus", mode="min", patience=2)
    callback = cam_callback(tmp_path, every_n_epochs=2, probe_masks=None, metrics=("focus",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EarlyStopping warns on the epochs without a value
        history = fit(model, [callback, stopping], epochs=10)
    # Events at epochs 1, 3, 5: the first sets the best, two more exhaust the patience.
    assert stopping.stopped_epoch == 5
    assert len(history.history["loss"]) == 6
    assert len(history.history["cam_gradcam_focus"]) == 3


def test_log_key_names_methods_as_the_issue_asks():
    from keras_cam.diagnostics.tracking import log_key

    assert log_key("gradcam", "energy_in_mask") == "cam_gradcam_energy_in_mask"
    assert log_key("gradcam++", "focus") == "cam_gradcampp_focus"
    assert log_key("my-cam", "drift") == "cam_my_cam_drift"


def text_events(log_dir, tag):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    if tag not in accumulator.Tags()["tensors"]:
        return {}
    return {
        event.step: event.tensor_proto.string_val[0].decode() for event in accumulator.Tensors(tag)
    }


@pytest.mark.slow
def test_an_alarm_warns_writes_text_and_stops_training_at_the_epoch_it_fires(tmp_path):
    # focus always lies in [0, 1]: "above -1 for 2 events" fires at the second event.
    alarm = keras_cam.Alarm("focus", above=-1.0, events=2, stop_training=True)
    model = compiled_model()
    callback = cam_callback(tmp_path, probe_masks=None, metrics=("focus",), alarms=[alarm])
    with pytest.warns(RuntimeWarning, match=r"alarm at epoch 1: gradcam focus = .*for 2 events"):
        history = fit(model, [callback], epochs=6)
    assert len(history.history["loss"]) == 2
    texts = text_events(tmp_path, "cam/alarms")
    assert list(texts) == [1]
    assert "Stopping training" in texts[1]
    # The worst probe images named are those with the highest focus at that epoch.
    focus = np.asarray(csv_series(str(tmp_path), "focus")[1])
    named = texts[1].split("worst probe images: ")[1].split(".")[0]
    assert [int(i) for i in named.split(", ")] == list(np.argsort(-focus, kind="stable")[:3])


@pytest.mark.slow
def test_an_alarm_that_never_breaches_stays_silent(tmp_path):
    alarm = keras_cam.Alarm("energy_in_mask", below=-0.5, stop_training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        history = fit(compiled_model(), [cam_callback(tmp_path, alarms=[alarm])], epochs=3)
    assert len(history.history["loss"]) == 3
    assert text_events(tmp_path, "cam/alarms") == {}


def test_alarm_configuration_errors_name_the_fix(tmp_path):
    x = shapes_data()[0][:4]
    with pytest.raises(ValueError, match=r"add it to watch=WatchOptions\(metrics="):
        keras_cam.CAMCallback(
            x,
            tmp_path,
            watch=keras_cam.WatchOptions(alarms=[keras_cam.Alarm("deletion", below=0.1)]),
        )
    with pytest.raises(ValueError, match="does not run"):
        keras_cam.CAMCallback(
            x,
            tmp_path,
            watch=keras_cam.WatchOptions(
                alarms=[keras_cam.Alarm("focus", above=0.9, method="layercam")]
            ),
        )
    with pytest.raises(ValueError, match="probe_size must be an integer >= max_images"):
        keras_cam.CAMCallback(
            x,
            tmp_path,
            view=keras_cam.ViewOptions(max_images=8),
            watch=keras_cam.WatchOptions(probe_size=4),
        )


@pytest.mark.slow
def test_galleries_show_exactly_the_worst_measured_images(tmp_path, monkeypatch):
    drawn = []  # the grids of the latest epoch: (kind, groups, captions)
    real_grid = render_event.captioned_grid

    def recording_grid(groups, captions, **kwargs):
        if captions and captions[0].startswith("#"):  # a gallery: "#i metric value · ..."
            kind = captions[0].split(" ")[1]
            drawn.append(
                (
                    kind if kind in WORSE_WHEN_HIGHER else "wrong",
                    groups,
                    captions,
                )
            )
        return real_grid(groups, captions, **kwargs)

    monkeypatch.setattr(render_event, "captioned_grid", recording_grid)
    x, y, masks = shapes_data(n=24, seed=3)
    model = compiled_model()
    callback = keras_cam.CAMCallback(
        (x, y),
        tmp_path,
        preprocess=lambda im: im / 255.0,
        explain=keras_cam.ExplainOptions(batch_size=8),
        view=keras_cam.ViewOptions(max_images=4, normalize="image", images=("grid", "overlays")),
        watch=keras_cam.WatchOptions(probe_masks=masks, probe_size=20),
    )
    forget = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: drawn.clear())
    fit(model, [forget, callback], epochs=2)

    energy = csv_series(str(tmp_path), "energy_in_mask")
    assert sorted(energy) == [0, 1]
    assert len(energy[1]) == 20  # one row per measured image
    drift = np.asarray(csv_series(str(tmp_path), "drift")[1])
    events = read_events(str(tmp_path))
    assert sorted(events["cam/gradcam/worst_energy_in_mask"]) == [0, 1]
    assert sorted(events["cam/gradcam/worst_drift"]) == [1]
    assert len(events["cam/gradcam"][1]) == 4  # max_images still bounds what is drawn

    result = keras_cam.explain(model, x[:20] / 255.0)
    overlays = keras_cam.overlay(x[:20], result.heatmaps)
    wrong = np.flatnonzero(result.predicted != y[:20])[:4]
    assert len(wrong)
    assert 1 in events["cam/gradcam/misclassified"]
    expected = {
        "energy_in_mask": np.argsort(np.asarray(energy[1]), kind="stable")[:4],
        "drift": np.argsort(-drift, kind="stable")[:4],
        "wrong": wrong,
    }
    galleries = {kind: (groups, captions) for kind, groups, captions in drawn}
    assert set(expected) <= set(galleries)
    for kind, indices in expected.items():
        groups, captions = galleries[kind]
        assert [int(caption.split(" ")[0][1:]) for caption in captions] == list(indices)
        for i, (image, drawn_overlay) in zip(indices, groups, strict=True):
            np.testing.assert_array_equal(image, x[i])
            np.testing.assert_allclose(drawn_overlay, overlays[i], atol=1)
