"""The two writers: the same events read back identically, through the tensorboard package."""

import numpy as np
import pytest
from conftest import read_events
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_cam.sinks import tensorboard as writer_module
from keras_cam.sinks.tags import describe, scalars_layout
from keras_cam.sinks.tensorboard import (
    TensorBoardWriter,
    TensorFlowWriter,
    create_writer,
    histogram_tensor,
)


def write_the_same_events(writer):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 10, 14, 3), dtype=np.uint8)
    for step in (0, 2, 5):
        writer.images("cam/x", images + step, step)
        writer.scalar("cam/x/score", 0.25 * step, step)
        writer.histogram("cam/x/per_image", rng.uniform(size=7) + step, step)
    writer.flush()
    writer.close()
    return images


def test_both_writers_read_back_identically(tmp_path):
    pytest.importorskip("tensorflow")
    written = {}
    for implementation in (TensorFlowWriter, TensorBoardWriter):
        directory = tmp_path / implementation.__name__
        images = write_the_same_events(implementation(directory))
        written[implementation] = read_events(str(directory))
    tf_events, tb_events = written[TensorFlowWriter], written[TensorBoardWriter]
    assert set(tf_events) == set(tb_events) == {"cam/x", "cam/x/score", "cam/x/per_image"}
    for tag in tf_events:
        assert sorted(tf_events[tag]) == sorted(tb_events[tag]) == [0, 2, 5]
    for step in (0, 2, 5):
        for decoded, other, original in zip(
            tf_events["cam/x"][step], tb_events["cam/x"][step], images + step, strict=True
        ):
            np.testing.assert_array_equal(decoded, original)
            np.testing.assert_array_equal(other, original)
        assert tf_events["cam/x/score"][step] == tb_events["cam/x/score"][step] == 0.25 * step
        np.testing.assert_array_equal(
            tf_events["cam/x/per_image"][step], tb_events["cam/x/per_image"][step]
        )


def summary_metadata(log_dir: str) -> dict[str, object]:
    """{tag: SummaryMetadata} as TensorBoard reads it back from the event files."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(log_dir)
    accumulator.Reload()
    return {tag: accumulator.SummaryMetadata(tag) for tag in accumulator.Tags()["tensors"]}


@pytest.mark.parametrize("implementation", ["TensorFlowWriter", "TensorBoardWriter"])
def test_every_tag_carries_its_display_name_and_description_and_the_layout(
    tmp_path, implementation
):
    if implementation == "TensorFlowWriter":
        pytest.importorskip("tensorflow")
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

    writer = getattr(writer_module, implementation)(tmp_path, describe)
    layout = scalars_layout(["gradcam", "gradcam++"], ["drift", "focus"])
    writer.scalars_layout(layout)
    for step in (0, 1):
        writer.images("cam/gradcam/grid", np.zeros((1, 4, 4, 3), np.uint8), step)
        writer.scalar("cam/gradcam++/drift", 0.5, step)
        writer.histogram("cam/gradcam/per_image", np.arange(3.0), step)
        writer.text("cam/alarms", "an alarm", step)
    writer.close()

    found = summary_metadata(str(tmp_path))
    plugins = {"images": "cam/gradcam/grid", "scalars": "cam/gradcam++/drift"}
    plugins |= {"histograms": "cam/gradcam/per_image", "text": "cam/alarms"}
    for plugin, tag in plugins.items():
        assert found[tag].plugin_data.plugin_name == plugin
        assert (found[tag].display_name, found[tag].summary_description) == describe(tag)
    assert found["cam/gradcam++/drift"].display_name == "gradcam++: attention drift"
    assert "previous event" in found["cam/gradcam++/drift"].summary_description

    config = custom_scalar_metadata.CONFIG_SUMMARY_TAG
    assert found[config].plugin_data.plugin_name == "custom_scalars"
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    (event,) = accumulator.Tensors(config)
    read_back = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    assert read_back == layout
    sections = {c.title: [chart.multiline.tag[0] for chart in c.chart] for c in read_back.category}
    assert sections["keras-cam gradcam++"] == [
        r"^cam/gradcam\+\+/mean_score$",
        r"^cam/gradcam\+\+/drift$",
        r"^cam/gradcam\+\+/focus$",
    ]


def test_histogram_buckets_by_hand():
    rows = histogram_tensor(np.array([0.0, 1.0, 1.0, 4.0, np.nan]), buckets=4)
    np.testing.assert_array_equal(rows[:, :2], [[0, 1], [1, 2], [2, 3], [3, 4]])
    np.testing.assert_array_equal(rows[:, 2], [1, 2, 0, 1])  # NaN dropped
    np.testing.assert_array_equal(histogram_tensor(np.full(3, 2.0)), [[2.0, 2.0, 3.0]])
    assert histogram_tensor(np.array([])).shape == (0, 3)


def test_auto_writer_follows_the_backend(tmp_path, monkeypatch):
    import keras

    expected = TensorFlowWriter if keras.backend.backend() == "tensorflow" else TensorBoardWriter
    created = create_writer(tmp_path)
    assert isinstance(created, expected)
    created.close()
    monkeypatch.setattr(writer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="TensorFlow is not installed; use writer='tensorboard'"):
        create_writer(tmp_path, "tensorflow")
    created = create_writer(tmp_path)  # no TensorFlow: the tensorboard package alone
    assert isinstance(created, TensorBoardWriter)
    created.close()
    with pytest.raises(ValueError, match="writer must be one of"):
        create_writer(tmp_path, "tf")


def test_a_remote_log_dir_without_tensorflow_is_an_error_before_training(tmp_path, monkeypatch):
    import keras_cam

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(writer_module.importlib.util, "find_spec", lambda name: None)
    message = r"'gs://bucket/logs' is on a remote filesystem.*TensorFlow is not installed"
    with pytest.raises(ValueError, match=message):
        keras_cam.CAMCallback(np.zeros((2, 16, 16, 3)), "gs://bucket/logs")
    with pytest.raises(ValueError, match=message):
        create_writer("gs://bucket/logs", "tensorboard")
    assert list(tmp_path.iterdir()) == []  # no local "gs:" folder


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000))
def test_records_are_framed_as_the_tensorboard_packages_record_writer_frames_them(data):
    import io

    from tensorboard.summary.writer.record_writer import RecordWriter

    from keras_cam.sinks.tensorboard import framed_record

    expected = io.BytesIO()
    RecordWriter(expected).write(data)  # its pure-Python CRC32C
    assert framed_record(data) == expected.getvalue()
