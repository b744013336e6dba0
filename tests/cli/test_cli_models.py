"""`keras-cam explain` on real models as they come (issue 21, items 9-13, 15, 17).

Grayscale and RGBA inputs, preprocessing options and user functions, several
outputs, regression heads, a softmax that is not on the last layer, quiet
TensorFlow start-up. Each runs the installed console script in a subprocess
and checks the numbers against the model itself.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from cli_runs import command
from conftest import ROOT, checkout_env
from keras import layers
from PIL import Image

import keras_cam
from keras_cam.cli import command as cli
from keras_cam.targets import output

SIZE = 16


def run_command(*args: str, cwd: Path, quiet_tf: bool = True) -> subprocess.CompletedProcess:
    env = checkout_env(TF_CPP_MIN_LOG_LEVEL="3")
    if not quiet_tf:  # as a user runs it: no level chosen
        env.pop("TF_CPP_MIN_LOG_LEVEL")
    return subprocess.run(
        [*command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def rows_of(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def features(inputs, size_name: str = "features"):
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(5, 3, padding="same", activation="relu", name=size_name)(x)
    return layers.GlobalAveragePooling2D()(x)


def write_images(folder: Path) -> list[Path]:
    """An RGB, a grayscale and an RGBA file (with transparent pixels)."""
    rng = np.random.default_rng(5)
    folder.mkdir()
    paths = [folder / "a_rgb.png", folder / "b_gray.png", folder / "c_rgba.png"]
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(paths[1])
    rgba = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 0
    Image.fromarray(rgba).save(paths[2])
    return paths


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.slow
def test_grayscale_model_with_a_user_preprocess_function(tmp_path):
    """Item 9 and 10: a 1-channel 64×64 classifier, images converted to L, `module:function`."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((64, 64, 1))
    model = keras.Model(inputs, layers.Dense(4, activation="softmax")(features(inputs)))
    model.save(tmp_path / "gray.keras")
    rng = np.random.default_rng(0)
    (tmp_path / "faces").mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "faces" / "colour.png"
    )
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(
        tmp_path / "faces" / "gray.png"
    )
    (tmp_path / "prep.py").write_text("def to_unit(x):\n    return x / 127.5 - 1.0\n")

    done = run_command(
        *["explain", "gray.keras", "faces", "--out", "out", "--quiet"],
        *["--preprocess", "prep:to_unit", "--metrics", "focus"],
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "converted to grayscale for the model's 1-channel input" in done.stdout
    rows = rows_of(tmp_path / "out")
    assert [Path(row["file"]).name for row in rows] == ["colour.png", "gray.png"]
    for row in rows:
        gray = np.asarray(Image.open(tmp_path / row["file"]).convert("L"), np.float32)
        probabilities = model.predict(gray[None, ..., None] / 127.5 - 1.0, verbose=0)[0]
        assert int(row["class"]) == int(np.argmax(probabilities))
        assert float(row["probability"]) == pytest.approx(probabilities.max(), abs=1e-5)
    for thumbnail in (tmp_path / "out" / "images").iterdir():
        assert np.asarray(Image.open(thumbnail)).shape == (64, 64, 3)  # shown as RGB


@pytest.mark.slow
def test_rgba_model_with_scale_mean_std(tmp_path):
    """Items 9 and 10: a 4-channel model keeps the alpha; per-channel normalisation."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((SIZE, SIZE, 4))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(features(inputs)))
    model.save(tmp_path / "rgba.keras")
    paths = write_images(tmp_path / "images")
    mean, std = np.array([0.5, 0.4, 0.3, 0.2]), np.array([0.25, 0.5, 1.0, 2.0])

    done = run_command(
        *["explain", "rgba.keras", "images", "--out", "out", "--quiet", "--metrics", "none"],
        *["--scale", "1/255", "--mean", "0.5,0.4,0.3,0.2", "--std", "0.25,0.5,1,2"],
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "converted to RGBA for the model's 4-channel input" in done.stdout
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 3
    for path, row in zip(paths, rows, strict=True):
        pixels = np.asarray(Image.open(path).convert("RGBA"), np.float32)
        x = (pixels / 255.0 - mean) / std
        probabilities = model.predict(x[None].astype("float32"), verbose=0)[0]
        assert float(row["probability"]) == pytest.approx(probabilities.max(), abs=1e-5)
    out = str(tmp_path / "out2")
    bad = ["explain", str(tmp_path / "rgba.keras"), str(tmp_path / "images"), "--out", out]
    assert cli.main([*bad, "--mean", "1,2"]) == 2
    assert cli.main([*bad, "--std", "0"]) == 2
    assert cli.main([*bad, "--scale", "2", "--preprocess", "resnet50"]) == 2
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_several_outputs_and_a_regression_head(tmp_path):
    """Items 11 and 12: `--output` by position, key; a one-unit linear output is a value."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = features(inputs)
    kind = layers.Dense(3, activation="softmax", name="kind")(pooled)
    size = layers.Dense(1, name="size")(pooled)
    keras.Model(inputs, [kind, size]).save(tmp_path / "two.keras")
    as_dict = keras.Model(inputs, {"kind": kind, "size": size})
    as_dict.get_layer("size").bias.assign([-3.0])  # negative values for some images
    as_dict.save(tmp_path / "dict.keras")
    paths = write_images(tmp_path / "images")[:2]  # RGB and gray: no alpha to composite
    images = [str(path) for path in paths]

    ambiguous = run_command("explain", "two.keras", *images, "--out", "o1", cwd=tmp_path)
    assert ambiguous.returncode == 2
    assert "Traceback" not in ambiguous.stderr
    assert "--output" in ambiguous.stderr
    assert "'kind'" in ambiguous.stderr
    assert not (tmp_path / "o1").exists()

    first = ["explain", str(tmp_path / "two.keras"), *images, "--out", str(tmp_path / "o2")]
    assert cli.main([*first, "--quiet", "--output", "2"]) == 2  # no such position
    assert cli.main([*first, "--quiet", "--output", "0"]) == 0
    assert {"class", "probability"} <= set(rows_of(tmp_path / "o2")[0])

    value = run_command(
        *["explain", "dict.keras", *images, "--out", "o3", "--output", "size", "--quiet"],
        cwd=tmp_path,
    )
    assert value.returncode == 0, value.stderr[-3000:]
    assert "regression" in value.stderr
    rows = rows_of(tmp_path / "o3")
    assert "class" not in rows[0]
    assert "probability" not in rows[0]
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
    predicted = as_dict.predict(x, verbose=0)["size"][:, 0]
    assert predicted.min() < 0  # a negative value is explained as itself, not negated
    np.testing.assert_allclose([float(r["value"]) for r in rows], predicted, rtol=1e-4, atol=1e-4)
    # The map is the value's own (what increases it), as the library's output target.
    size_model = keras.Model(as_dict.inputs, as_dict.outputs[1])
    reference = keras_cam.explain(size_model, x, targets=output(0), verbose=0)
    for row, heatmap in zip(rows, reference.heatmaps, strict=True):
        if not heatmap.max() > 0:  # a flat map has no peak
            assert (row["peak_x"], row["peak_y"]) == ("", "")
            continue
        peak_y, peak_x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert (int(row["peak_x"]), int(row["peak_y"])) == (peak_x, peak_y)
    page = (tmp_path / "o3" / "index.html").read_text()
    assert ">value</th>" in page
    assert ">probability</th>" not in page
    assert ">class</th>" not in page


@pytest.mark.slow
def test_softmax_before_reshape_in_a_wrapped_classifier_is_applied_once(tmp_path):
    """Item 13: the head's softmax is found inside a nested model, before a Reshape."""
    keras.utils.set_random_seed(6)
    inputs = keras.Input((SIZE, SIZE, 3))
    probabilities = layers.Dense(3, activation="softmax", name="head")(features(inputs))
    inner = keras.Model(inputs, layers.Reshape((3,))(probabilities), name="inner")
    outer_inputs = keras.Input((SIZE, SIZE, 3))
    outer = keras.Model(outer_inputs, inner(outer_inputs), name="outer")
    outer.save(tmp_path / "wrapped.keras")
    paths = write_images(tmp_path / "images")[:2]

    done = run_command(
        *["explain", "wrapped.keras", *map(str, paths), "--out", "out", "--quiet"],
        *["--metrics", "none"],
        cwd=tmp_path,
        quiet_tf=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "no softmax" not in done.stderr
    # Item 15: no TensorFlow C++ lines when the user set no TF_CPP_MIN_LOG_LEVEL.
    for noise in ("I0000", "E0000", "absl::InitializeLog", "oneDNN", "cuInit"):
        assert noise not in done.stderr
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
    predicted = outer.predict(x, verbose=0)
    rows = rows_of(tmp_path / "out")
    np.testing.assert_allclose(
        [float(r["probability"]) for r in rows], predicted.max(-1), atol=1e-5
    )
    # The maps are the logits' (the unwrapped Dense without its softmax), closed form.
    conv = keras.Model(inner.inputs, inner.get_layer("features").output)
    activations = np.asarray(conv.predict(x, verbose=0))
    kernel, bias = (np.asarray(w) for w in inner.get_layer("head").get_weights())
    classes = (activations.mean((1, 2)) @ kernel + bias).argmax(-1)
    assert [int(r["class"]) for r in rows] == list(classes)
    reference = keras_cam.explain(outer, x, verbose=0)
    raw = np.maximum(np.einsum("nijk,kn->nij", activations, kernel[:, classes]), 0)
    np.testing.assert_allclose(
        reference.raw / reference.raw.max((1, 2), keepdims=True),
        raw / raw.max((1, 2), keepdims=True),
        atol=1e-4,
    )
    for row, heatmap in zip(rows, reference.heatmaps, strict=True):
        if not heatmap.max() > 0:  # a flat map has no peak
            assert (row["peak_x"], row["peak_y"]) == ("", "")
            continue
        peak_y, peak_x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert (int(row["peak_x"]), int(row["peak_y"])) == (peak_x, peak_y)


def test_methods_and_help_do_not_import_tensorflow():
    """Item 15 (and the help of item 10): no backend for `methods` and `--help`."""
    code = (
        "import sys\n"
        "from keras_cam.cli import main\n"
        "assert main(['methods']) == 0\n"
        "for argv in (['--help'], ['explain', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0\n"
        "loaded = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = checkout_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    text = " ".join(done.stdout.split())
    for option in ("--scale", "--mean", "--std", "--output", "--task", "MODULE:FUNCTION"):
        assert option in text
    assert "--scale 1/255 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225" in text
    # One line per method, then its indented paper and cost line, then the help texts.
    count = 2 * len(keras_cam.available_methods())
    listed = [line.split()[0] for line in done.stdout.splitlines()[:count:2]]
    assert listed == sorted(keras_cam.available_methods())


def test_console_script_methods_prints_no_backend_lines(tmp_path):
    """Item 15 through the console script, with no log level set by the user."""
    done = run_command("methods", cwd=tmp_path, quiet_tf=False)
    assert done.returncode == 0
    assert done.stderr == ""
    assert "gradcam" in done.stdout


def test_readme_says_how_to_install_from_a_clone():
    """Item 17: the package is not on PyPI; the README installs from a clone or a wheel."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[tensorflow]"' in readme
    assert "python -m build" in readme
    assert "pip install keras-cam[" not in readme
