"""FolderSink: real files, a user's files untouched byte for byte, whole records, reopen, fit."""

from __future__ import annotations

import csv
import hashlib
import os
import warnings

import numpy as np
import pytest
from conftest import conv_classifier
from PIL import Image
from test_sinks import Recording  # a user's sink that keeps every event

import keras_cam
from keras_cam.sinks.event import Event, EventWriteError, ReopeningSink
from keras_cam.sinks.folder import FolderSink
from keras_cam.sinks.folder_state import FolderInUseError

RNG = np.random.default_rng(0)


def pages(count: int = 1, size: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (count, size, size + 2, 3), dtype=np.uint8)


def snapshot(folder) -> dict[str, str]:
    """Every file under `folder` -> SHA-256 of its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                found[os.path.relpath(path, folder)] = hashlib.sha256(file.read()).hexdigest()
    return found


def read_png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_rows(folder) -> list[dict]:
    with open(os.path.join(folder, "results.csv"), newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def written(folder) -> set[str]:
    """What the manifest lists (the sink's own files and folders)."""
    with open(os.path.join(folder, ".keras-cam", "manifest.txt"), encoding="utf-8") as file:
        return set(file.read().split())


def test_each_page_becomes_a_png_named_by_tag_and_step(tmp_path):
    sink = FolderSink(tmp_path / "cams")
    first = {"cam/gradcam/grid": pages(), "cam/compare": pages(2)}
    sink.open()
    sink.write(Event(step=0, images=first, rows=[{"step": 0, "focus": 0.25, "drift": None}]))
    sink.write(Event(step=3, images={"cam/gradcam/grid": pages()}, rows=[{"step": 3}]))
    sink.close()

    out = tmp_path / "cams"
    np.testing.assert_array_equal(
        read_png(out / "cam/gradcam/grid/step_0000.png"), first["cam/gradcam/grid"][0]
    )
    for page in range(2):
        png = read_png(out / f"cam/compare/step_0000_page{page + 1}.png")
        np.testing.assert_array_equal(png, first["cam/compare"][page])
    assert (out / "cam/gradcam/grid/step_0003.png").is_file()
    assert read_rows(out) == [
        {"step": "0", "focus": "0.25", "drift": ""},
        {"step": "3", "focus": "", "drift": ""},
    ]
    page = (out / "index.html").read_text()
    assert 'src="cam/gradcam/grid/step_0003.png"' in page
    assert 'src="cam/compare/step_0000_page2.png"' in page
    assert {"cam", "cam/compare", "results.csv", "index.html"} <= written(out)
    assert "cam/gradcam/grid/step_0003.png" in written(out)


def test_a_users_files_stay_byte_for_byte_and_names_stay_unique(tmp_path):
    out = tmp_path / "cams"
    (out / "cam" / "grid").mkdir(parents=True)
    (out / "cam" / "grid" / "step_0001.png").write_bytes(b"the user's picture")
    (out / "notes.txt").write_text("irreplaceable")
    (out / "results.csv").write_text("the user's own table\n")
    before = snapshot(out)

    with pytest.raises(ValueError, match="is not empty"):
        FolderSink(out).open()
    with pytest.raises(ValueError, match=r"results\.csv, which keras-cam did not write"):
        FolderSink(out, mode="overwrite").open()
    assert snapshot(out) == before
    (out / "results.csv").unlink()
    del before["results.csv"]

    image = pages()
    sink = FolderSink(out, mode="overwrite")
    sink.open()
    sink.write(Event(step=1, images={"cam/grid": image, "gradcam++/é x": pages()}))
    sink.close()
    after = snapshot(out)
    assert {name: after[name] for name in before} == before
    np.testing.assert_array_equal(read_png(out / "cam/grid/step_0001_2.png"), image[0])
    assert (out / "gradcam++/_x/step_0001_2.png").is_file()  # ASCII, "+" kept
    assert all(name.isascii() for name in after)

    # A second overwrite removes only the sink's own files and the folders it made.
    sink = FolderSink(out, mode="overwrite")
    sink.open()
    sink.close()
    assert set(snapshot(out)) == set(before) | {"results.csv", "index.html"} | {
        f".keras-cam/{name}" for name in ("manifest.txt", "journal.jsonl", "lock")
    }


def test_a_failing_write_leaves_no_partial_files_and_the_sink_reopens(tmp_path):
    out = tmp_path / "cams"
    inner = FolderSink(out, columns=["step", "focus"])
    sink = ReopeningSink(inner)
    sink.open()
    empty = snapshot(out)
    # The second tag's page is not a picture: the first tag's PNG is removed again.
    bad_page = {"cam/a": pages(), "cam/b": np.zeros((1, 4, 4, 3), np.float32)}
    with pytest.raises(EventWriteError, match="uint8"):
        sink.write(Event(step=0, images=bad_page, rows=[{"step": 0, "focus": 0.5}]))
    # Pictures written, then a row that results.csv cannot hold: no picture without its row.
    bad_row = {"cam/a": pages()}
    with pytest.raises(EventWriteError, match="not in"):
        sink.write(Event(step=0, images=bad_row, rows=[{"step": 0, "surprise": 1.0}]))
    # Each failure closed the sink (writing index.html); no picture and no row is left.
    files = {name: digest for name, digest in snapshot(out).items() if "keras-cam" not in name}
    assert files.pop("index.html")
    assert files == {name: d for name, d in empty.items() if "keras-cam" not in name}
    assert inner.records == []

    good = pages()
    sink.write(Event(step=1, images={"cam/a": good}, rows=[{"step": 1, "focus": 0.5}]))
    sink.close()
    np.testing.assert_array_equal(read_png(out / "cam/a/step_0001.png"), good[0])
    assert read_rows(out) == [{"step": "1", "focus": "0.5"}]
    assert sorted(os.listdir(out / "cam" / "a")) == ["step_0001.png"]


def test_resume_continues_the_journal_and_a_held_folder_is_refused(tmp_path):
    out = tmp_path / "cams"
    first = FolderSink(out, formats={"focus": ".3f"})
    first.open()
    with pytest.raises(FolderInUseError, match="Another keras-cam run"):
        FolderSink(out, mode="resume").open()
    first.write(Event(step=0, images={"grid": pages()}, rows=[{"step": 0, "focus": 0.25}]))
    first.close()

    again = FolderSink(out, mode="resume", formats={"focus": ".3f"})
    again.open()
    assert [record.files for record in again.records] == [{"grid": ["grid/step_0000.png"]}]
    again.write(Event(step=0, images={"grid": pages()}, rows=[{"step": 0, "focus": 0.5}]))
    again.close()
    assert read_rows(out) == [{"step": "0", "focus": "0.250"}, {"step": "0", "focus": "0.500"}]
    assert sorted(os.listdir(out / "grid")) == ["step_0000.png", "step_0000_2.png"]
    with pytest.raises(ValueError, match="no keras-cam run to resume"):
        FolderSink(tmp_path / "empty", mode="resume").open()


@pytest.mark.slow  # the sink sees numpy only: the backend changes nothing it does
def test_fit_writes_each_events_pictures_and_rows(tmp_path):
    """A real 2-epoch fit: the PNGs read back equal the event's pages, the CSV its rows."""

    x = RNG.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    y = np.arange(8) % 3
    own = Recording()
    out = tmp_path / "cam_pngs"
    callback = keras_cam.CAMCallback(
        (x[:2], y[:2]),
        sinks=[keras_cam.FolderSink(out), own],
        preprocess=lambda images: images / 255.0,
        view=keras_cam.ViewOptions(images=("grid",), max_images=2),
        watch=keras_cam.WatchOptions(metrics=("focus",)),
    )
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x / 255.0, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])

    assert [event.step for event in own.events] == [0, 1]
    for event in own.events:
        assert event.images
        for tag, drawn in event.images.items():
            for page, expected in enumerate(drawn):
                suffix = "" if len(drawn) == 1 else f"_page{page + 1}"
                png = read_png(out / tag / f"step_{event.step:04d}{suffix}.png")
                np.testing.assert_array_equal(png, expected)
    rows = read_rows(out)
    expected = [row for event in own.events for row in event.rows]
    assert len(rows) == len(expected) > 0
    for got, row in zip(rows, expected, strict=True):
        for key, value in row.items():
            if isinstance(value, float):
                assert float(got[key]) == pytest.approx(value, rel=1e-5)
            else:
                assert got[key] == ("" if value is None else str(value))
    assert "step_0001.png" in (out / "index.html").read_text()
