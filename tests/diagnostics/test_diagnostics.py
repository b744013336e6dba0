"""The callback's diagnostics in real `fit` runs: scalars, histogram, CSV, timeline, top-k."""

import csv

import keras
import numpy as np
import pytest
from conftest import conv_classifier, grouped, read_events, skip_if_channels_first_cannot_run

import keras_cam
from keras_cam.data import make_shapes
from keras_cam.diagnostics import metrics
from keras_cam.render.timeline import Timeline


def shapes_fit(tmp_path, epochs=3, **kwargs):
    data = make_shapes(40, size=16, seed=0)
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    probe = make_shapes(5, size=16, seed=1)
    callback = keras_cam.CAMCallback(
        (probe.images, probe.labels),
        tmp_path,
        class_names=probe.class_names,
        **grouped(probe_masks=probe.masks, **kwargs),
    )
    model.fit(data.images / 255.0, data.labels, epochs=epochs, verbose=0, callbacks=[callback])
    return model, probe, callback, read_events(str(tmp_path))


def test_metric_scalars_histogram_and_csv_per_event(tmp_path):
    model, probe, callback, events = shapes_fit(
        tmp_path, preprocess=lambda x: x / 255.0, metrics=("drift", "focus", "deletion")
    )
    assert callback.metrics == ("drift", "focus", "deletion", "pointing_game", "energy_in_mask")
    for metric in ("focus", "deletion", "pointing_game", "energy_in_mask"):
        assert sorted(events[f"cam/gradcam/{metric}"]) == [0, 1, 2]
    assert sorted(events["cam/gradcam/drift"]) == [1, 2]
    # The last event, recomputed independently from the final weights.
    last = keras_cam.explain(model, probe.images / 255.0)
    expected = {
        "focus": metrics.focus(last.heatmaps),
        "pointing_game": metrics.pointing_game(last.heatmaps, probe.masks),
        "energy_in_mask": metrics.energy_in_mask(last.heatmaps, probe.masks),
    }
    for metric, value in expected.items():
        assert events[f"cam/gradcam/{metric}"][2] == pytest.approx(value, rel=1e-5, abs=1e-6)
    # The per-image drift histogram holds one count per probe image.
    histogram = events["cam/gradcam/per_image"][2]
    assert histogram[:, 2].sum() == pytest.approx(len(probe.images))

    with open(tmp_path / "cam_metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 * 5  # one row per image per event
    assert list(rows[0]) == ["step", "method", "image", *callback.metrics]
    assert [row["step"] for row in rows] == [str(s) for s in (0,) * 5 + (1,) * 5 + (2,) * 5]
    assert all(row["drift"] == "" for row in rows[:5])  # nothing to compare with yet
    drifts = [float(row["drift"]) for row in rows[10:]]
    assert np.mean(drifts) == pytest.approx(events["cam/gradcam/drift"][2], rel=1e-4)
    focus = [float(row["focus"]) for row in rows[10:]]
    np.testing.assert_allclose(focus, metrics.focus(last.heatmaps, per_image=True), rtol=1e-4)


def test_timeline_grows_by_one_column_per_event(tmp_path):
    events = shapes_fit(tmp_path, epochs=3)[3]
    pages = [events["cam/gradcam/timeline"][step] for step in range(3)]
    # 16-pixel images enlarged to thumbnail cells with 4-pixel gaps: image + one per event.
    cell = Timeline().thumbnail
    widths = [step_pages[0].shape[1] for step_pages in pages]
    assert np.diff(widths).tolist() == [cell + 4, cell + 4]
    assert widths[0] == 2 * cell + 4 + 2 * 4
    # The first four probe images, one row each, over pages of equal size.
    for step_pages in pages:
        assert len({page.shape for page in step_pages}) == 1
        assert len(step_pages) in (1, 2, 4)


def test_timeline_memory_is_bounded_and_its_columns_evenly_spread():
    timeline = Timeline(images=2, max_events=8, thumbnail=8)
    for step in range(28):
        overlays = np.full((5, 32, 32, 3), step, np.uint8)  # each column shows its step
        timeline.add(step, overlays)
        assert len(timeline.steps) <= 8
        # Evenly spread: all but the latest one stride apart, from the first event.
        gaps = set(np.diff(timeline.steps[:-1]))
        assert len(gaps) <= 1
        assert timeline.steps[0] == 0
        assert timeline.steps[-1] == step
    assert timeline.steps == [0, 4, 8, 12, 16, 20, 24, 27]
    assert [int(column[0, 0, 0, 0]) for column in timeline._columns] == timeline.steps
    assert timeline._columns[0].shape == (2, 8, 8, 3)


def test_top_k_view_in_the_callback_and_in_explain(tmp_path):
    model, probe, callback, events = shapes_fit(tmp_path, epochs=2, top_k=2)
    assert callback.explainer.trace_count == 1  # the top-k maps ride in the same batch
    (grid,) = events["cam/gradcam/topk"][1]
    # One row per probe image: the image and its two top classes, enlarged to 112 pixels.
    assert grid.shape[1] == 3 * (112 + 2 * 4)
    images = probe.images / 255.0
    top = keras_cam.explain(model, images, targets="top2")
    probabilities = model.predict(images, verbose=0)
    assert np.diff(np.sort(probabilities, axis=1), axis=1).min() > 1e-6  # no ties
    order = np.argsort(-probabilities, axis=1)[:, :2]
    np.testing.assert_array_equal(top.classes, order)
    np.testing.assert_allclose(
        top.scores, np.take_along_axis(probabilities, order, axis=1), rtol=1e-5
    )
    assert top.heatmaps.shape == (5, 2, 16, 16)
    second = keras_cam.explain(model, images, targets=order[:, 1])
    np.testing.assert_allclose(top.raw[:, 1], second.raw, rtol=1e-5, atol=1e-7)


def test_sanity_check_scores_a_map_that_ignores_the_head_as_one():
    model = conv_classifier()
    images = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    weights = [w.copy() for w in model.get_weights()]
    # Eigen-CAM reads only the activations: randomising the head cannot change it.
    assert keras_cam.sanity_check(model, images, method="eigencam") == pytest.approx(1.0)
    gradcam = keras_cam.sanity_check(model, images, method="gradcam")
    everything = keras_cam.sanity_check(model, images, method="eigencam", randomize="all")
    assert gradcam < 0.9
    assert everything < 0.9
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # restored
    with pytest.raises(ValueError, match="randomize"):
        keras_cam.sanity_check(model, images, randomize="top")


def test_rank_correlation_by_hand():
    first = np.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]]])
    second = np.array([[[10.0, 20.0], [40.0, 30.0]], [[5.0, 5.0], [5.0, 5.0]]])
    # ranks 0 1 2 3 vs 0 1 3 2: Spearman 1 − 6·2 / (4·15) = 0.8; a constant map: 0.
    np.testing.assert_allclose(metrics.rank_correlation(first, second, per_image=True), [0.8, 0.0])
    ties = np.array([[[0.0, 0.0], [1.0, 2.0]]])
    assert metrics.rank_correlation(ties, ties) == pytest.approx(1.0)


def test_callback_logs_the_sanity_check_once_at_the_end(tmp_path):
    _, _, _, events = shapes_fit(tmp_path, epochs=2, sanity_check=True)
    assert list(events["cam/gradcam/sanity"]) == [1]
    assert -1.0 <= events["cam/gradcam/sanity"][1] <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": ("drift", "sharpness")}, "Unknown metrics.*sharpness.*available"),
        ({"metrics": ("pointing_game",)}, "need the objects' masks: pass probe_masks"),
        ({"top_k": 0}, "top_k must be"),
        ({"top_k": 2, "targets": lambda outputs: outputs[:, 0]}, "callable target"),
    ],
)
def test_bad_diagnostics_arguments_fail_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_cam.CAMCallback(np.zeros((2, 16, 16, 3)), tmp_path, **grouped(**kwargs))


def test_a_sanity_check_with_no_kernel_to_redraw_fails_before_training(tmp_path):
    # conv -> GAP -> softmax: the head after the conv has no kernel to randomise.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    outputs = keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    callback = keras_cam.CAMCallback(
        np.zeros((2, 16, 16, 3)), tmp_path, watch=keras_cam.WatchOptions(sanity_check=True)
    )
    callback.set_model(model)
    message = r"sanity_check=True.*layer 'conv', but they have none.*earlier layer \(explain="
    with pytest.raises(ValueError, match=message):
        callback.on_train_begin()  # what fit calls before its first batch


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probe_masks": np.zeros((4, 8, 8), bool)}, r"probe_masks must be \(N, H, W\)"),
        ({"top_k": 4}, "top_k=4 but the model scores 3 classes"),
    ],
)
def test_bad_diagnostics_inputs_fail_before_training(tmp_path, kwargs, message):
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(np.zeros((4, 16, 16, 3)), tmp_path, **grouped(**kwargs))
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *a: pytest.fail("trained"))
    with pytest.raises(ValueError, match=message):
        model.fit(
            np.zeros((8, 16, 16, 3)),
            np.zeros(8),
            epochs=1,
            verbose=0,
            callbacks=[callback, counter],
        )


def test_faithfulness_metrics_of_a_channels_first_model(tmp_path):
    """The perturbed display images reach the model as the explainer feeds it: transposed."""
    from keras import layers

    inputs = keras.Input((3, 16, 16))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", data_format="channels_first")(inputs)
    x = layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    probe = make_shapes(4, size=16, seed=1)
    callback = keras_cam.CAMCallback(
        probe.images,
        tmp_path,
        strict=True,
        watch=keras_cam.WatchOptions(metrics=("deletion", "average_drop")),
    )
    channels_first = probe.images.transpose(0, 3, 1, 2).astype("float32")
    skip_if_channels_first_cannot_run(model, channels_first)
    model.fit(channels_first, probe.labels, epochs=1, verbose=0, callbacks=[callback])
    events = read_events(str(tmp_path))
    result = keras_cam.explain(model, probe.images)
    expected = metrics.deletion_auc(
        model,
        probe.images,
        result.heatmaps,
        result.classes,
        preprocess=lambda images: images.transpose(0, 3, 1, 2),
    )
    assert events["cam/gradcam/deletion"][0] == pytest.approx(expected, rel=1e-5)


def test_a_reused_log_dir_with_other_metrics_keeps_every_csv_valid(tmp_path):
    runs = [("drift", "focus"), ("focus", "pointing_game", "energy_in_mask"), ("drift", "focus")]
    for names in runs:
        shapes_fit(tmp_path, epochs=2, metrics=names)
    files = sorted(tmp_path.glob("cam_metrics*.csv"))
    assert [path.name for path in files] == ["cam_metrics.csv", "cam_metrics_2.csv"]
    for path, header, runs_in_file in zip(
        files,
        (
            ["drift", "focus", "pointing_game", "energy_in_mask"],
            ["focus", "pointing_game", "energy_in_mask"],
        ),
        (2, 1),
        strict=True,
    ):
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
        assert rows[0] == ["step", "method", "image", *header]
        assert {len(row) for row in rows} == {len(rows[0])}
        assert len(rows) == 1 + runs_in_file * 2 * 5  # 2 events of 5 probe images per run


def test_timeline_heads_columns_as_keras_prints_epochs_and_frames_right_and_wrong(monkeypatch):
    from keras_cam.render import timeline as diagnostics

    drawn = {}

    def spy(groups, captions, headers, **kwargs):
        drawn.update(groups=groups, headers=headers)
        return real(groups, captions, headers, **kwargs)

    real = diagnostics.card_pages
    monkeypatch.setattr(diagnostics, "card_pages", spy)
    timeline = Timeline(images=2, thumbnail=8)
    overlays = np.full((3, 8, 8, 3), 90, np.uint8)
    timeline.add(0, overlays, correct=np.array([True, False, True]))
    timeline.add(2, overlays)  # labels unknown: no frame
    timeline.image(overlays, ["a", "b"])
    assert drawn["headers"] == ["image", "Epoch 1", "Epoch 3"]
    (_, right, plain), (_, wrong, _) = drawn["groups"]
    for frame in (right[0], right[:, -1]):
        assert (frame == diagnostics.RIGHT).all()
    for frame in (wrong[-1], wrong[:, 0]):
        assert (frame == diagnostics.WRONG).all()
    assert (right[3:5, 3:5] == 90).all()
    assert (plain == 90).all()
