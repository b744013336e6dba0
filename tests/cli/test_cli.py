"""The `keras-cam` command: run as a user runs it (a subprocess) and in-process for the details."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tomllib
from cli_runs import keras_cam_command, read_rows
from conftest import ROOT, checkout_env, conv_classifier
from PIL import Image
from sheet_html import parse_sheet

import keras_cam
from keras_cam.cli import command as cli
from keras_cam.cli.image_files import load_image

SIZE = 24


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    conv_classifier(size=SIZE, classes=3).save(path)
    return path


def make_images(folder: Path) -> dict[str, list[str]]:
    """Good PNG/JPEG files (some gray, RGBA, 16-bit, other sizes) and bad ones, by kind."""
    rng = np.random.default_rng(3)
    (folder / "sub").mkdir(parents=True)
    good = []
    for i in range(3):
        path = folder / f"rgb{i}.png"  # at the model's size: fitting changes nothing
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        good.append(path)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(folder / "wide.jpg")
    for name in ("gray1.png", "gray2.jpg"):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(
            folder / "sub" / name
        )
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)).save(
        folder / "sub" / "alpha.png"
    )
    Image.fromarray(rng.integers(0, 65536, (SIZE, SIZE), dtype=np.uint16)).save(
        folder / "sub" / "deep.png"
    )
    good += [folder / "wide.jpg", *sorted((folder / "sub").iterdir())]
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    truncated = folder / "sub" / "truncated.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    (folder / "README.txt").write_text("not an image")
    return {
        "good": [str(p) for p in good],
        "bad": [str(folder / "broken.png"), str(truncated)],
    }


def test_console_script_is_declared_and_resolves_to_main():
    with open(ROOT / "pyproject.toml", "rb") as file:
        scripts = tomllib.load(file)["project"]["scripts"]
    module, _, function = scripts["keras-cam"].partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is cli.main


def test_help_and_version_answer_without_importing_keras(tmp_path):
    code = (
        "import sys, runpy\n"
        "for argv in (['--version'], ['explain', '--help'], ['--help']):\n"
        "    sys.argv = ['keras-cam', *argv]\n"
        "    try:\n"
        "        runpy.run_module('keras_cam.cli.command', run_name='__main__')\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, done.code\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"keras-cam {keras_cam.__version__}" in done.stdout
    # Every explain option is documented with its default.
    for option, default in [
        ("--method", "gradcam"),
        ("--targets", "predicted"),
        ("--preprocess", "none"),
        ("--fit", "crop"),
        ("--batch-size", "32"),
        ("--alpha", "0.4"),
        ("--colormap", "jet"),
        ("--size", "the model's input size"),
        ("--limit", "all"),
    ]:
        assert option in done.stdout
        assert f"default: {default}" in " ".join(done.stdout.split())


def test_in_process_run_matches_the_library(saved_model, tmp_path, capsys):
    """Fast, every backend: CSV and overlays agree with `keras_cam.explain` on the same pixels."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (SIZE, 40, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    names = tmp_path / "names.txt"
    names.write_text("circle\nsquare\n\ntriangle\n")
    out = tmp_path / "out"
    status = cli.main(
        [
            "explain",
            str(saved_model),
            str(folder),
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--class-names",
            str(names),
            "--targets",
            "top2",
            "--metrics",
            "focus",
            "--quiet",
        ]
    )
    assert status == 0
    rows = read_rows(out)
    assert len(rows) == 3 * 2  # 3 images, top-2 classes
    model = keras.saving.load_model(saved_model)
    paths = sorted(str(p) for p in folder.iterdir())
    fitted = [load_image(path, (SIZE, SIZE), "crop") for path in paths]
    pixels = np.stack([image.pixels for image in fitted])
    reference = keras_cam.explain(model, pixels, targets="top2")
    probabilities = np.asarray(model.predict(pixels.astype("float32"), verbose=0))
    for index, path in enumerate(paths):
        for rank in range(2):
            row = rows[2 * index + rank]
            assert row["file"] == path
            assert row["rank"] == str(rank + 1)
            expected_class = int(np.argsort(-probabilities[index])[rank])
            assert int(row["class"]) == expected_class
            assert row["name"] == ["circle", "square", "triangle"][expected_class]
            assert float(row["probability"]) == pytest.approx(
                probabilities[index, expected_class], abs=1e-5
            )
            heatmap = reference.heatmaps[index, rank]
            peak_row, peak_col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
            expected_peak = fitted[index].placement.to_original(peak_col, peak_row)
            assert (int(row["peak_x"]), int(row["peak_y"])) == expected_peak
            assert 0 <= float(row["focus"]) <= 1
            overlay = np.asarray(Image.open(out / row["overlay"]))
            assert overlay.shape[1] >= 112
            assert overlay.shape[0] > overlay.shape[1]
    assert "3 images explained" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--method", "gradcam,nosuchcam"], 2, "Available methods: 'ablationcam'"),
        (["--targets", "top9"], 2, "scores only 3 classes"),
        (["--targets", "7"], 2, "classes 0 to 2"),
        (["--layer", "nosuchlayer"], 2, "nosuchlayer"),
        (["--metrics", "focus,accuracy"], 2, "Unknown metric"),
        (["--colormap", "nosuchmap"], 2, "Unknown colormap"),
        (["--size", "32"], 2, "does not match the model's input size 24x24"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(
    saved_model, tmp_path, capsys, args, status, message
):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    assert cli.main(["explain", str(saved_model), str(image), "--out", str(out), *args]) == status
    assert message in capsys.readouterr().err  # what the user reads
    assert not out.exists()


def test_model_errors(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    for model, message in [
        (tmp_path / "missing.keras", "does not exist"),
        (garbage, "Keras cannot load"),
        (tmp_path, "SavedModel"),
    ]:
        assert cli.main(["explain", str(model), str(image), "--out", str(tmp_path / "o")]) == 3
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_command_on_a_folder_with_bad_files(saved_model, tmp_path):
    images = make_images(tmp_path / "photos")
    names = tmp_path / "names.txt"
    names.write_text("circle\nsquare\ntriangle\n")
    out = tmp_path / "cams"
    done = keras_cam_command(
        "explain",
        str(saved_model),
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "--method",
        "gradcam",
        "--method",
        "layercam,eigencam",
        "--class-names",
        str(names),
        "--batch-size",
        "4",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    good, bad = images["good"], images["bad"]
    methods = ["gradcam", "layercam", "eigencam"]

    # results.csv: one row per good image and method, in order; checked against the model.
    rows = read_rows(out)
    assert [(r["file"], r["method"]) for r in rows] == [(f, m) for f in good for m in methods]
    model = keras.saving.load_model(saved_model)
    at_model_size = [f for f in good if "rgb" in f]
    pixels = np.stack([np.asarray(Image.open(f)) for f in at_model_size]).astype("float32")
    probabilities = np.asarray(model.predict(pixels, verbose=0))
    for index, path in enumerate(at_model_size):
        for row in (r for r in rows if r["file"] == path):
            expected = int(np.argmax(probabilities[index]))
            assert int(row["class"]) == expected
            assert row["name"] == ["circle", "square", "triangle"][expected]
            assert float(row["probability"]) == pytest.approx(probabilities[index, expected], 1e-4)
            assert row["layer"] == "conv2"
            assert 0 <= int(row["peak_x"]) < SIZE
            assert 0 <= int(row["peak_y"]) < SIZE
            assert 0 <= float(row["average_drop"]) <= 1
            assert row["increase_in_confidence"] in ("0.000000", "1.000000")
    wide = next(r for r in rows if r["file"].endswith("wide.jpg"))
    assert 0 <= int(wide["peak_x"]) < 50
    assert 0 <= int(wide["peak_y"]) < 30

    # One captioned overlay PNG per image and method.
    overlays = sorted(os.listdir(out / "overlays"))
    assert len(overlays) == len(good) * len(methods)
    for row in rows:
        with Image.open(out / row["overlay"]) as picture:
            assert picture.format == "PNG"
            assert picture.mode == "RGB"
            assert picture.height > picture.width >= 112  # enlarged, caption underneath

    # The contact sheet: one row per image, sources that exist relative to the sheet.
    sheet = parse_sheet((out / "index.html").read_text())
    assert [row["data-file"] for row in sheet.rows] == good
    for row in sheet.rows:
        assert len(row["images"]) == 1 + len(methods)
        assert all((out / source).is_file() for source in row["images"])
    assert sheet.external == []

    # Bad files: each named in a warning, listed at the end and in skipped.txt, not in the CSV.
    for path in bad:
        assert f"skipped {path}" in done.stderr
        assert f"not explained: {path}" in done.stdout
    listed = [line.split("\t")[0] for line in (out / "skipped.txt").read_text().splitlines()]
    assert sorted(listed) == sorted(bad)
    assert f"{len(good)} images explained" in done.stdout
    assert "2 skipped" in done.stdout
    assert "1 files without an image extension" in done.stdout
    # Conversions are said once per kind, though two grayscale files were converted.
    assert done.stderr.count("converting grayscale") == 1
    assert "converting alpha channel" in done.stderr
    assert "converting 16-bit" in done.stderr

    # A second run refuses the non-empty folder (fast: before Keras), --overwrite replaces.
    again = keras_cam_command("explain", str(saved_model), good[0], "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2
    assert "--overwrite" in again.stderr
    assert "keras" not in again.stderr.lower().replace("keras-cam", "")  # no backend noise


@pytest.mark.slow
def test_command_exit_codes(saved_model, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"no image here")
    nothing = keras_cam_command(
        "explain", str(saved_model), str(broken), "--out", str(tmp_path / "a"), cwd=tmp_path
    )
    assert nothing.returncode == 1, nothing.stderr[-2000:]
    assert "0 images explained" in nothing.stdout
    assert "skipped" in nothing.stderr

    no_input = keras_cam_command(
        "explain", str(saved_model), "nowhere/*.png", "--out", str(tmp_path / "c"), cwd=tmp_path
    )
    assert no_input.returncode == 2
    assert "nowhere/*.png" in no_input.stderr

    unknown = keras_cam_command(
        "explain",
        str(saved_model),
        str(broken),
        "--out",
        "d",
        "--preprocess",
        "resnet51",
        cwd=tmp_path,
    )
    assert unknown.returncode == 2
    assert "resnet50" in unknown.stderr
    assert "mobilenet_v2" in unknown.stderr


def test_methods_listing(capsys):
    assert cli.main(["methods"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert [line.split()[0] for line in lines] == sorted(keras_cam.available_methods())
    assert all(len(line.split()) > 2 for line in lines)  # name and a description


def test_overwrite_replaces_only_the_commands_outputs(saved_model, tmp_path):
    images = []
    for i in range(2):
        images.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((SIZE, SIZE, 3), 40 * i, np.uint8)).save(images[-1])
    out = tmp_path / "out"
    base = ["explain", str(saved_model), "--out", str(out), "--quiet", "--metrics", "none"]
    assert cli.main([*base[:2], *images, *base[2:]]) == 0
    assert len(read_rows(out)) == 2
    (out / "mine.txt").write_text("the user's file")
    assert cli.main([*base[:2], images[0], *base[2:]]) == 2
    assert cli.main([*base[:2], *images, *base[2:], "--overwrite", "--limit", "1"]) == 0
    assert [row["file"] for row in read_rows(out)] == [images[0]]
    assert os.listdir(out / "overlays") == [read_rows(out)[0]["overlay"].split("/")[1]]
    assert (out / "mine.txt").read_text() == "the user's file"


def test_linear_head_reports_softmax_probabilities(tmp_path):
    keras.utils.set_random_seed(2)
    model = conv_classifier(size=SIZE, classes=3, activation=None)
    model.save(tmp_path / "logits.keras")
    image = tmp_path / "a.png"
    pixels = np.random.default_rng(1).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels[0]).save(image)
    out = tmp_path / "out"
    command = ["explain", str(tmp_path / "logits.keras"), str(image), "--out", str(out)]
    assert cli.main([*command, "--quiet", "--metrics", "none"]) == 0
    logits = np.asarray(model.predict(pixels.astype("float32"), verbose=0), np.float64)[0]
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    (row,) = read_rows(out)
    assert int(row["class"]) == int(np.argmax(logits))
    assert float(row["probability"]) == pytest.approx(softmax.max(), abs=1e-5)
    # The map is the logit's: the same as explaining the unwrapped model.
    reference = keras_cam.explain(model, pixels)
    peak_row, peak_col = np.unravel_index(np.argmax(reference.heatmaps[0]), (SIZE, SIZE))
    assert (int(row["peak_x"]), int(row["peak_y"])) == (peak_col, peak_row)


@pytest.mark.slow
def test_arcc_metric_reruns_the_method_in_the_command(saved_model, tmp_path):
    """`--metrics arcc` re-runs the command's own explainer; its values equal the library's."""
    from keras_cam.diagnostics.metrics import arcc

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    out = tmp_path / "out"
    done = keras_cam_command(
        "explain", str(saved_model), str(folder), "--out", str(out), "--metrics", "arcc",
        "--batch-size", "3", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(out)
    paths = sorted(str(p) for p in folder.iterdir())
    assert [row["file"] for row in rows] == paths
    model = keras.saving.load_model(saved_model)
    pixels = np.stack([np.asarray(Image.open(path)) for path in paths]).astype("float32")
    result = keras_cam.explain(model, pixels)

    def again(images):
        return keras_cam.explain(model, images, targets=result.classes).heatmaps

    expected = arcc(model, pixels, result.heatmaps, result.classes, explain=again, per_image=True)
    measured = np.array([float(row["arcc"]) for row in rows])
    np.testing.assert_allclose(measured, expected, atol=1e-3)
    assert measured.min() > 0
    assert measured.max() <= 1
