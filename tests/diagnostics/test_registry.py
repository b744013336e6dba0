"""The metric registry: one entry per metric, read by the callback, tags, alarms and the CLI."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
from conftest import conv_classifier, read_events
from PIL import Image

import keras_cam
from keras_cam.cli import command as cli
from keras_cam.diagnostics import registry
from keras_cam.diagnostics.registry import Metric, MetricInputs, register_metric
from keras_cam.diagnostics.tracking import WORSE_WHEN_HIGHER, check_metrics
from keras_cam.sinks.tags import describe

SIZE = 16


def _mean_heat(inputs: MetricInputs) -> np.ndarray:
    return inputs.maps.reshape(len(inputs.maps), -1).mean(axis=1)


@pytest.fixture
def toy():
    metric = register_metric(
        Metric("toy", _mean_heat, "Mean map value (a test's metric).", worse_when="higher")
    )
    yield metric
    registry.METRICS.pop("toy")


def test_entries_are_checked_and_names_are_unique():
    assert list(registry.METRICS)[:2] == ["drift", "focus"]
    assert registry.get_metric("deletion").needs == ("forward",)
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric("focus", _mean_heat, "again"))
    with pytest.raises(ValueError, match="needs \\['gradients'\\]; choose from"):
        Metric("x", _mean_heat, "", needs=("gradients",))
    with pytest.raises(ValueError, match="worse_when must be"):
        Metric("x", _mean_heat, "", worse_when="up")
    with pytest.raises(ValueError, match="Python identifier"):
        Metric("x-y", _mean_heat, "")
    with pytest.raises(ValueError, match="Unknown metric 'toy'; available: drift, focus"):
        keras_cam.Alarm("toy", above=0.5)
    assert "toy" not in registry.METRICS


def test_a_registered_metric_reaches_every_reader(toy, tmp_path):
    """The callback's scalars and CSV, the Keras logs, tags, alarms and the CLI's results.csv."""
    assert check_metrics(["toy"], has_masks=False) == ("toy",)
    assert WORSE_WHEN_HIGHER["toy"] is True
    assert describe("cam/gradcam/toy") == ("gradcam: toy", "Mean map value (a test's metric).")
    assert describe("cam/gradcam/worst_toy")[0] == "gradcam: worst toy"
    keras.utils.set_random_seed(2)
    model = conv_classifier(size=SIZE)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    alarm = keras_cam.Alarm("toy", above=2.0)  # a map's mean is at most 1: never fires
    callback = keras_cam.CAMCallback(
        (x[:4], y[:4]),
        tmp_path / "logs",
        watch=keras_cam.WatchOptions(metrics=["toy"], alarms=[alarm], log_metrics=True),
    )
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    expected = _mean_heat(MetricInputs(keras_cam.explain(model, x[:4]).heatmaps, y[:4]))
    assert history.history["cam_gradcam_toy"][-1] == pytest.approx(expected.mean(), rel=1e-4)
    events = read_events(str(tmp_path / "logs"))
    assert sorted(events["cam/gradcam/toy"]) == [0, 1]
    assert events["cam/gradcam/toy"][1] == pytest.approx(expected.mean(), rel=1e-4)
    with open(tmp_path / "logs" / "cam_metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["step"] == "1"]
    np.testing.assert_allclose([float(row["toy"]) for row in rows], expected, rtol=1e-4)

    path = tmp_path / "model.keras"
    model.save(path)
    files = []
    for i, image in enumerate(x[:2].astype(np.uint8)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    out = tmp_path / "out"
    argv = ["explain", str(path), *files, "--out", str(out), "--metrics", "toy,focus", "--quiet"]
    assert cli.main(argv) == 0
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    heatmaps = keras_cam.explain(model, x[:2].astype(np.uint8)).heatmaps
    np.testing.assert_allclose(
        [float(row["toy"]) for row in rows], heatmaps.reshape(2, -1).mean(1), atol=2e-6
    )
