"""CAMCallback in real `fit` runs, read back from the event files it wrote."""

import csv
import warnings

import keras
import numpy as np
import pytest
from conftest import (
    conv_classifier,
    grouped,
    model_that_barely_reads_its_features,
    read_events,
)
from keras import layers, ops

import keras_cam
from keras_cam.sinks import tensorboard as writer_module


def data(n=24, size=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
        rng.integers(0, classes, size=n),
    )


def compiled(model):
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


class BatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def test_fit_writes_overlays_grid_and_mean_score_at_each_epoch(tmp_path):
    x, y = data()
    model = compiled(conv_classifier())
    callback = keras_cam.CAMCallback(
        (x[:6], y[:6]),
        tmp_path,
        class_names=["a", "b", "c"],
        preprocess=lambda im: im / 255.0,
        view=keras_cam.ViewOptions(images=("grid", "timeline", "overlays"), normalize="image"),
    )
    model.fit(x / 255.0, y, epochs=3, batch_size=8, verbose=0, callbacks=[callback])
    events = read_events(str(tmp_path))
    every_event = {"grid", "mean_score", "focus", "timeline"}
    drift_from_the_second = {"drift", "per_image"}
    assert set(events) == {"cam/gradcam", "custom_scalars__config__"} | {
        f"cam/gradcam/{tag}" for tag in every_event | drift_from_the_second
    }
    assert sorted(events["custom_scalars__config__"]) == [0]  # the layout, written once
    for tag in ["", *(f"/{t}" for t in every_event)]:
        assert sorted(events[f"cam/gradcam{tag}"]) == [0, 1, 2]
    for tag in drift_from_the_second:
        assert sorted(events[f"cam/gradcam/{tag}"]) == [1, 2]
    last = events["cam/gradcam"][2]
    assert len(last) == 6
    assert last[0].shape == (16, 16, 3)
    # The last event used the final weights: recompute it independently of the callback.
    result = keras_cam.explain(model, x[:6] / 255.0)
    np.testing.assert_array_equal(np.stack(last), keras_cam.overlay(x[:6], result.heatmaps))
    assert events["cam/gradcam/mean_score"][2] == pytest.approx(result.scores.mean(), rel=1e-5)
    grid = events["cam/gradcam/grid"][2]
    # Pages of (original | overlay) groups, the 16-pixel images enlarged ×7 to 112 px cells.
    assert len({page.shape for page in grid}) == 1
    assert sum(page.shape[0] for page in grid) > 112
    np.testing.assert_array_equal(grid[0][4:116:7, 4:116:7], x[0])
    np.testing.assert_array_equal(grid[0][4:116:7, 120:232:7], np.stack(last)[0])


def test_compiled_once_over_five_epochs_and_steps_continue_across_fits(tmp_path):
    x, y = data()
    model = compiled(conv_classifier())
    callback = keras_cam.CAMCallback(x[:4], tmp_path, every_n_epochs=2)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[callback])
    assert callback.explainer.trace_count == 1
    model.fit(x, y, initial_epoch=5, epochs=8, verbose=0, callbacks=[callback])
    assert callback.explainer.trace_count == 1
    assert sorted(read_events(str(tmp_path))["cam/gradcam/grid"]) == [1, 3, 5, 7]


def training_run(with_callback, log_dir):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3))
    h = layers.Conv2D(4, 3, padding="same")(inputs)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU()(h)
    h = layers.Dropout(0.3)(h)
    h = layers.GlobalAveragePooling2D()(h)
    model = compiled(keras.Model(inputs, layers.Dense(3)(h)))
    x, y = data(32)
    callbacks = [keras_cam.CAMCallback((x[:5], y[:5]), log_dir)] if with_callback else []
    model.fit(x, y, epochs=2, batch_size=8, shuffle=True, verbose=0, callbacks=callbacks)
    return model.get_weights() + [ops.convert_to_numpy(v) for v in model.optimizer.variables]


def test_the_callback_does_not_perturb_training(tmp_path):
    without = training_run(False, tmp_path / "a")
    with_cam = training_run(True, tmp_path / "b")
    assert len(without) == len(with_cam)
    for a, b in zip(without, with_cam, strict=True):
        np.testing.assert_array_equal(a, b)


def gap_model():
    return conv_classifier()


def flatten_head_model():
    inputs = keras.Input((16, 16, 3))
    h = layers.Conv2D(2, 3, name="conv")(inputs)
    return keras.Model(inputs, layers.Dense(3)(layers.Flatten()(h)))


def dense_only_model():
    inputs = keras.Input((16, 16, 3))
    return keras.Model(inputs, layers.Dense(3)(layers.Flatten()(inputs)))


X, Y = data(8)


@pytest.mark.parametrize(
    ("make_model", "probe", "kwargs", "message"),
    [
        (gap_model, X, {"layer": "nope"}, r"No layer 'nope'.*conv1, conv2"),
        (gap_model, X, {"layer": "gap"}, r"not a 4-D feature map"),
        (dense_only_model, X, {}, r"no layer with a 4-D"),
        (gap_model, X[0], {}, r"batch axis"),
        (gap_model, X[:, :8], {}, r"expects input of shape \(None, 16, 16, 3\)"),
        (gap_model, (X, Y[:3]), {}, r"8 images but 3 labels"),
        (gap_model, X, {"targets": "label"}, r"targets='label' needs labels"),
        (gap_model, X, {"targets": 7}, r"Class index 7 is out of range"),
        (gap_model, X, {"class_names": ["a"]}, r"class_names has 1 names"),
        (flatten_head_model, X, {"method": "cam"}, r"GlobalAveragePooling2D then Dense"),
    ],
)
def test_bad_input_is_raised_before_any_training_work(tmp_path, make_model, probe, kwargs, message):
    model = compiled(make_model())
    counter = BatchCounter()
    callback = keras_cam.CAMCallback(probe, tmp_path, **grouped(**kwargs))
    with pytest.raises(ValueError, match=message):
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[callback, counter])
    assert counter.batches == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_epochs": 0}, r"every_n_epochs must be an integer >= 1"),
        ({"method": "gradcan"}, r"Unknown CAM method 'gradcan'.*'gradcam'"),
        ({"targets": "best"}, r"Unknown targets 'best'"),
        ({"max_images": 0}, r"max_images must be an integer >= 1"),
        ({"colormap": "jett"}, r"Unknown colormap 'jett'"),
        ({"images": ("grid", "overlay")}, r"Unknown images \['overlay'\]; choose from grid"),
    ],
)
def test_bad_arguments_fail_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_cam.CAMCallback(X, tmp_path, **grouped(**kwargs))


def test_a_failing_event_warns_and_training_goes_on(tmp_path, monkeypatch):
    def broken(self, tag, images, step):
        raise OSError("disk full")

    for implementation in (writer_module.TensorFlowWriter, writer_module.TensorBoardWriter):
        monkeypatch.setattr(implementation, "images", broken)
    model = compiled(conv_classifier())
    callback = keras_cam.CAMCallback(X, tmp_path)
    with pytest.warns(
        RuntimeWarning, match=r"skipped the gradcam event at epoch \d: OSError"
    ) as seen:
        history = model.fit(X, Y, epochs=3, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 3
    ours = [w for w in seen if str(w.message).startswith("keras_cam")]
    # One warning for the whole run of failures.
    assert [str(w.message).split(":")[1] for w in ours] == [" skipped the gradcam event at epoch 0"]

    strict = keras_cam.CAMCallback(X, tmp_path, strict=True)
    counter = BatchCounter()
    with pytest.raises(OSError, match="disk full"):
        model.fit(X, Y, epochs=3, verbose=0, callbacks=[strict, counter])
    # The worker's error is raised on the training thread at the next event or at train end.
    assert counter.batches in (2, 3)


@pytest.mark.parametrize("update_freq", ["epoch", "batch", 2])
def test_works_beside_the_keras_tensorboard_callback(tmp_path, update_freq):
    model = compiled(conv_classifier())
    callbacks = [
        keras.callbacks.TensorBoard(tmp_path, update_freq=update_freq),
        keras_cam.CAMCallback(X, tmp_path / "cam"),
    ]
    model.fit(X, Y, epochs=3, batch_size=2, verbose=0, callbacks=callbacks)
    events = read_events(str(tmp_path / "cam"))
    assert sorted(events["cam/gradcam/grid"]) == [0, 1, 2]
    assert "epoch_loss" in read_events(str(tmp_path / "train"))


def test_probe_from_tf_data_and_py_dataset(tmp_path):
    import tensorflow as tf

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return X[index * 2 : index * 2 + 2], Y[index * 2 : index * 2 + 2]

    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(3)
    model = compiled(conv_classifier())
    for probe, name in ((dataset, "tfdata"), (Batches(), "pydataset")):
        callback = keras_cam.CAMCallback(
            probe,
            tmp_path / name,
            targets="label",
            view=keras_cam.ViewOptions(max_images=5, images="overlays"),
        )
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[callback])
        assert len(read_events(str(tmp_path / name))["cam/gradcam"][0]) == 5


def test_a_probe_dataset_of_single_images_is_an_error(tmp_path):
    import tensorflow as tf

    class Images(keras.utils.PyDataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, index):
            return X[index], Y[index]

    unbatched = (tf.data.Dataset.from_tensor_slices((X, Y)), Images())
    for probe in unbatched:
        callback = keras_cam.CAMCallback(probe, tmp_path, view=keras_cam.ViewOptions(max_images=4))
        callback.set_model(conv_classifier())
        with pytest.raises(ValueError, match=r"single images of shape \(16, 16, 3\).*\.batch\(4\)"):
            callback.on_train_begin()


def test_a_remote_log_dir_is_written_through_tf_io_gfile(tmp_path, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    monkeypatch.chdir(tmp_path)  # where a local folder named "ram:" would appear
    # TensorFlow's in-memory filesystem stands in for gs://: the same gfile path, no
    # network. The "auto" writer is tf.summary under TensorFlow, the tensorboard
    # package (through tf.io.gfile where TensorFlow is installed) under JAX and PyTorch.
    log_dir = f"ram://{tmp_path.name}/logs"
    # strict: a failure to close the remote file raises instead of warning.
    callback = keras_cam.CAMCallback(
        X[:4], log_dir, watch=keras_cam.WatchOptions(metrics=("focus",)), strict=True
    )
    callback.set_model(conv_classifier())
    callback.on_train_begin()
    for epoch in range(2):
        callback.on_epoch_end(epoch)
    callback.on_train_end()
    assert sorted(read_events(log_dir)["cam/gradcam/grid"]) == [0, 1]
    with tf.io.gfile.GFile(f"{log_dir}/cam_metrics.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["step", "method", "image", "focus"]
    assert [row[0] for row in rows[1:]] == ["0"] * 4 + ["1"] * 4
    assert list(tmp_path.iterdir()) == []


def test_several_methods_write_their_tags_and_a_comparison_table(tmp_path):
    x, y = data()
    model = compiled(conv_classifier())
    methods = ["gradcam", "layercam", keras_cam.methods.ScoreCAM(batch_size=8)]
    callback = keras_cam.CAMCallback(
        x[:4], tmp_path, method=methods, view=keras_cam.ViewOptions(normalize="image")
    )
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    assert callback.explainer.trace_count == 1
    events = read_events(str(tmp_path))
    names = ["gradcam", "layercam", "scorecam"]
    assert sorted(events["cam/compare"]) == [0, 1]
    for name in names:
        assert f"cam/{name}" not in events  # per-image overlays are opt-in
        for tag in ("/grid", "/mean_score", "/timeline", "/focus"):
            assert sorted(events[f"cam/{name}{tag}"]) == [0, 1]
        assert sorted(events[f"cam/{name}/drift"]) == [1]
    pages = events["cam/compare"][1]  # rows split into pages that fit TensorBoard's card
    assert len(pages) == 2  # four probe images: 2 + 2 rows (three fit a page)
    assert all(page.shape[0] <= 2 * page.shape[1] for page in pages)
    results = keras_cam.CAMExplainer(model, names[:2])(x[:4])
    # Each method's overlay of each probe image, enlarged 4x, in its row and column.
    for number, page in enumerate(pages):
        for row in range(2):
            i, left = 2 * number + row, 0
            tops = []
            for name in names[:2]:
                cell = keras_cam.overlay(x[i : i + 1], results[name].heatmaps[i : i + 1])[0]
                top, left = find_cell(page, cell, right_of=left)
                tops.append(top)
            assert tops[0] == tops[1]


def find_cell(page: np.ndarray, cell: np.ndarray, right_of: int = 0) -> tuple[int, int]:
    """Top-left corner of `cell` enlarged 4x (16 px drawn 64) in `page`, right of `right_of`."""
    for y, x in zip(*np.nonzero((page == cell[0, 0]).all(axis=-1)), strict=True):
        if x > right_of and np.array_equal(page[y : y + 64 : 4, x : x + 64 : 4], cell):
            return int(y), int(x)
    raise AssertionError("cell not found in the page")


def test_train_begin_prints_where_the_images_are_and_how_to_view_every_step(tmp_path, capsys):
    model = compiled(conv_classifier())
    callback = keras_cam.CAMCallback(X, tmp_path / "cam", every_n_epochs=1)
    callback.set_model(model)
    callback.set_params({"epochs": 12, "verbose": 1, "steps": 1})
    callback.on_train_begin()
    callback.on_train_end()
    callback.on_train_begin()  # a second fit: said once
    callback.on_train_end()
    printed = capsys.readouterr().out
    # The folder above the CAM folder: TensorBoard shows the training curves beside the maps.
    expected = f"tensorboard --logdir {tmp_path} --samples_per_plugin images=12"
    assert printed.count(expected) == 1
    assert f"CAM images in {tmp_path / 'cam'}" in printed

    quiet = keras_cam.CAMCallback(X, tmp_path / "quiet")
    quiet.set_model(model)
    quiet.set_params({"epochs": 12, "verbose": 0, "steps": 1})
    quiet.on_train_begin()
    quiet.on_train_end()
    assert "tensorboard" not in capsys.readouterr().out  # verbose=0 prints nothing


@pytest.mark.parametrize(
    ("low", "high", "warns"), [(-1.0, 1.0, True), (0.0, 300.0, True), (0, 1, False)]
)
def test_preprocessed_probe_images_warn_once_and_point_to_preprocess(tmp_path, low, high, warns):
    probe = np.random.default_rng(0).uniform(low, high, size=(4, 16, 16, 3)).astype("float32")
    callback = keras_cam.CAMCallback(probe, tmp_path)
    callback.set_model(compiled(conv_classifier()))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        callback.on_train_begin()
        callback.on_train_begin()  # a second fit reuses the probe: no second warning
    callback.on_train_end()
    ours = [w for w in seen if "look preprocessed" in str(w.message)]
    assert len(ours) == (1 if warns else 0)
    if warns:
        assert "preprocess=" in str(ours[0].message)
        assert "display=" in str(ours[0].message)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_epochs": True}, r"every_n_epochs must be an integer >= 1, got a bool"),
        ({"strict": "no"}, r"strict must be True or False"),
        ({"class_names": "abc"}, r"class_names must be a sequence of strings"),
        ({"method": None}, r"method must be a method name"),
        ({"method": keras_cam.methods.GradCAM}, r"method=GradCAM is a method class.*GradCAM\(\)"),
    ],
)
def test_arguments_of_the_wrong_type_are_type_errors(tmp_path, kwargs, message):
    with pytest.raises(TypeError, match=message):
        keras_cam.CAMCallback(X, tmp_path, **grouped(**kwargs))


@pytest.mark.slow
@pytest.mark.parametrize("normalize", ["run", "probe"])
def test_normalize_draws_the_raw_maps_on_the_scale_it_names(tmp_path, normalize):
    x, y = data(n=8)
    model = compiled(conv_classifier())
    callback = keras_cam.CAMCallback(
        (x[:4], y[:4]),
        tmp_path,
        view=keras_cam.ViewOptions(images=("overlays", "grid"), normalize=normalize),
    )
    # The maps fade: the head's weights are halved before each event (Grad-CAM ∝ them).
    dense = model.get_layer("dense")
    fade = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: dense.kernel.assign(dense.kernel * 0.5)
    )
    raws = []  # each event's raw maps, read with the same weights right after the event
    spy = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: raws.append(callback.explainer(x[:4])["gradcam"].raw)
    )
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[fade, callback, spy])
    events = read_events(str(tmp_path))
    peaks = [raw.max() for raw in raws]
    assert peaks[2] < 0.5 * peaks[0]
    for step, raw in enumerate(raws):
        top = max(peaks[: step + 1]) if normalize == "run" else peaks[step]
        expected = keras_cam.overlay(x[:4], raw / top)
        drawn = np.stack(events["cam/gradcam"][step]).astype(int)
        assert np.abs(drawn - expected).max() <= 1, step

    # Every tag explains itself in TensorBoard's card info, and the scalars have a layout.
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    for tag in ("cam/gradcam/drift", "cam/gradcam/focus", "cam/gradcam/grid"):
        metadata = accumulator.SummaryMetadata(tag)
        assert metadata.display_name.startswith("gradcam: ")
        assert len(metadata.summary_description) > 40
    assert "custom_scalars__config__" in accumulator.Tags()["tensors"]


@pytest.mark.slow
def test_a_negligible_map_is_drawn_flat_and_captioned_so(tmp_path, monkeypatch):
    from keras_cam.render import event as render_event

    captions = []

    def spy(groups, texts, *args, **kwargs):
        captions.extend(texts)
        return real(groups, texts, *args, **kwargs)

    real = render_event.card_pages
    monkeypatch.setattr(render_event, "card_pages", spy)
    x, _ = data(n=4)
    model = compiled(model_that_barely_reads_its_features())
    callback = keras_cam.CAMCallback(
        x,
        tmp_path,
        view=keras_cam.ViewOptions(images=("overlays", "grid")),
        watch=keras_cam.WatchOptions(metrics=()),
    )
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0)
    callback.on_train_end()
    result = callback.explainer(x)["gradcam"]
    # Independently: the map's peak is below a millionth of the layer's largest activation.
    activations = keras.Model(model.inputs, model.get_layer("conv2").output).predict(x, verbose=0)
    peaks = np.abs(activations).reshape(4, -1).max(axis=1)
    assert (result.raw.reshape(4, -1).max(axis=1) <= 1e-6 * peaks).all()
    assert result.raw.max() > 0  # something to stretch, were it stretched
    np.testing.assert_array_equal(result.heatmaps, 0.0)
    drawn = np.stack(read_events(str(tmp_path))["cam/gradcam"][0])
    np.testing.assert_array_equal(drawn, keras_cam.overlay(x, np.zeros((4, 16, 16))))
    assert len(captions) == 4
    assert all(caption.endswith("flat map") for caption in captions)


@pytest.mark.slow
def test_display_maps_preprocessed_probe_images_back_for_drawing(tmp_path):
    x, _ = data(n=4)
    preprocessed = x / 127.5 - 1.0  # MobileNetV2's [-1, 1]
    model = conv_classifier()
    callback = keras_cam.CAMCallback(
        preprocessed,
        tmp_path,
        view=keras_cam.ViewOptions(
            display=lambda images: (images + 1) * 127.5, alpha=0.0, images="overlays"
        ),
        watch=keras_cam.WatchOptions(metrics=()),
    )
    callback.set_model(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*look preprocessed")
        callback.on_train_begin()
    callback.on_epoch_end(0)
    callback.on_train_end()
    np.testing.assert_array_equal(np.stack(read_events(str(tmp_path))["cam/gradcam"][0]), x)
    # The maps are those of the probe as given: it is already the model's input.
    heatmaps = keras_cam.explain(model, preprocessed).heatmaps
    explained = callback.explainer(preprocessed)["gradcam"].heatmaps
    np.testing.assert_allclose(explained, heatmaps, atol=1e-6)
    bad = keras_cam.CAMCallback(
        preprocessed, tmp_path, view=keras_cam.ViewOptions(display=lambda images: images[:, :8])
    )
    bad.set_model(model)
    with pytest.raises(ValueError, match="display= returned images of shape"):
        bad.on_train_begin()
