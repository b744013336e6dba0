"""ExplainOptions: one declaration of what is explained, taken by every entry point."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import checkout_env, to_numpy
from keras import layers
from PIL import Image

import keras_cam
from keras_cam.cli import command as cli
from keras_cam.core.options import OPTION_NAMES, ExplainOptions, explain_options

SIZE = 12


def two_outputs(as_dict: bool) -> keras.Model:
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="features")(x)
    g = layers.GlobalAveragePooling2D()(x)
    kind = layers.Dense(3, activation="softmax", name="kind_head")(g)
    size = layers.Dense(4, activation="softmax", name="size_head")(g)
    return keras.Model(inputs, {"kind": kind, "size": size} if as_dict else [kind, size])


def pictures(count: int = 3) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


def test_options_are_checked_when_made_and_overridden_by_keywords():
    assert ExplainOptions().batch_size == 32
    options = ExplainOptions(layer="conv1", score="probability")
    assert explain_options(options, aug_smooth=True) == dataclasses.replace(
        options, aug_smooth=True
    )
    assert explain_options(None) == ExplainOptions()
    with pytest.raises(ValueError, match="score must be one of"):
        ExplainOptions(score="softmax")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        ExplainOptions(batch_size=0)
    with pytest.raises(ValueError, match="output must be a dict key"):
        ExplainOptions(output=1.5)
    with pytest.raises(ValueError, match="tokens must be None"):
        ExplainOptions(tokens=(4, 6))
    with pytest.raises(TypeError, match=r"Unknown option.*laeyr.*the explanation options are"):
        keras_cam.CAMExplainer(two_outputs(False), laeyr="conv1")
    with pytest.raises(TypeError, match=r"options must be a keras_cam\.ExplainOptions"):
        keras_cam.CAMExplainer(two_outputs(False), "gradcam", {"layer": "conv1"})
    explainer = keras_cam.CAMExplainer(two_outputs(False), options=options, output=1)
    assert explainer.options == dataclasses.replace(options, output=1)
    assert (explainer.score, explainer.output, explainer.layer) == ("probability", 1, "conv1")


@pytest.mark.parametrize("as_dict", [False, True])
def test_explain_and_sanity_check_read_the_chosen_output(as_dict):
    """By key, layer name and position: the maps of a model of that output alone."""
    model = two_outputs(as_dict)
    images = pictures()
    size = keras.Model(model.input, model.get_layer("size_head").output)
    expected = keras_cam.explain(size, images, layer="features")
    probabilities = to_numpy(size(images))
    with pytest.raises(ValueError, match=r"has 2 outputs.*Pass output="):
        keras_cam.explain(model, images, layer="features")
    with pytest.raises(ValueError, match=r"has 2 outputs.*Pass output="):
        keras_cam.sanity_check(model, images, layer="features")
    choices = ["size", "size_head"] if as_dict else [1, "size_head"]
    correlations = []
    for output in choices:
        options = ExplainOptions(layer="features", output=output)
        result = keras_cam.explain(model, images, options=options)
        np.testing.assert_array_equal(result.predicted, probabilities.argmax(1))
        np.testing.assert_allclose(result.confidence, probabilities.max(1), rtol=1e-5)
        np.testing.assert_allclose(result.heatmaps, expected.heatmaps, atol=1e-5)
        correlations.append(
            keras_cam.sanity_check(model, images, layer="features", output=output, seed=3)
        )
    assert -1.0 <= correlations[0] <= 1.0
    assert correlations == pytest.approx([correlations[0]] * len(correlations))
    # Eigen-CAM reads no gradient: its maps cannot depend on the head's kernels.
    eigen = keras_cam.sanity_check(model, images, method="eigencam", output=choices[0])
    assert eigen == pytest.approx(1.0)


def test_every_option_has_a_command_line_flag():
    parser = cli.build_parser()
    explain = parser._subparsers._group_actions[0].choices["explain"]
    flags = {action.dest: action for action in explain._actions}
    assert set(OPTION_NAMES) <= set(flags)
    args = parser.parse_args(["explain", "m.keras", "x.png", "--out", "o"])
    assert cli.explain_options(args) == ExplainOptions()
    args = parser.parse_args(
        [
            "explain", "m.keras", "x.png", "--out", "o", "--layer", "conv1", "--output", "2",
            "--score", "probability", "--tokens", "3x4+1", "--aug-smooth", "--eigen-smooth",
            "--batch-size", "5",
        ]
    )  # fmt: skip
    assert cli.explain_options(args) == ExplainOptions(
        layer="conv1",
        output=2,
        score="probability",
        tokens=keras_cam.TokenGrid(3, 4, prefix=1),
        aug_smooth=True,
        eigen_smooth=True,
        batch_size=5,
    )


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _saved(as_dict: bool, folder: Path) -> tuple[Path, list[str], np.ndarray]:
    """A saved two-output model, two image files, and its "size" output's probabilities."""
    model = two_outputs(as_dict)
    path = folder / "two.keras"
    model.save(path)
    images = pictures(2).astype(np.uint8)
    files = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
        files.append(str(folder / f"{i}.png"))
    outputs = model(images.astype("float32"))
    return path, files, to_numpy(outputs["size"] if as_dict else outputs[1])


def _check_rows(out: Path, size: np.ndarray) -> None:
    with open(out / "results.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["class"]) for row in rows] == list(size.argmax(1))
    np.testing.assert_allclose([float(r["probability"]) for r in rows], size.max(1), 1e-5)


@pytest.mark.parametrize("as_dict", [False, True])
def test_command_line_output_by_position_name_and_key(as_dict, tmp_path):
    path, files, size = _saved(as_dict, tmp_path)
    argv = ["explain", str(path), *files, "--quiet", "--metrics", "none"]
    for i, output in enumerate(["size", "size_head"] if as_dict else ["1", "size_head"]):
        assert cli.main([*argv, "--out", str(tmp_path / f"out{i}"), "--output", output]) == 0
        _check_rows(tmp_path / f"out{i}", size)
    assert cli.main([*argv, "--out", str(tmp_path / "none")]) == cli.EXIT_USAGE  # ambiguous
    assert cli.main([*argv, "--out", str(tmp_path / "no"), "--output", "age"]) == cli.EXIT_USAGE


@pytest.mark.slow  # a fresh Python that imports Keras: the console script as a user runs it
def test_console_script_output(tmp_path):
    path, files, size = _saved(True, tmp_path)
    done = subprocess.run(
        [Path(sys.executable).parent / "keras-cam", "explain", path, *files, "--out",
         tmp_path / "out", "--output", "size", "--quiet"],
        env=checkout_env(TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _check_rows(tmp_path / "out", size)
