"""The examples run end to end (shortened), as a user would start them."""

import runpy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, checkout_env, feature_map_methods, read_events
from PIL import Image

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_demo_trains_logs_and_scores(tmp_path):
    out = run(
        str(ROOT / "examples" / "demo.py"),
        "--epochs",
        "2",
        "--train-size",
        "96",
        "--test-size",
        "64",
        "--log-dir",
        str(tmp_path / "demo"),
        cwd=tmp_path,
    )
    assert "pointing game" in out
    assert f"make tensorboard LOGDIR={tmp_path}" in out
    assert f"/tensorboard --logdir {tmp_path} --samples_per_plugin images=2" in out
    events = read_events(str(tmp_path / "demo" / "cam"))
    assert "cam/gradcam" not in events  # per-image overlays are opt-in
    assert sorted(events["cam/gradcam/grid"]) == [0, 1]
    assert sorted(events["cam/compare"]) == [0, 1]
    for name in feature_map_methods():  # the attention methods need a transformer
        assert f"  {name} " in out


def test_explain_image_keeps_the_aspect_and_captions_the_overlay(tmp_path):
    # A red band in the left sixth of a 3:2 photo: the centre crop cuts it off, unstretched.
    photo = np.random.default_rng(0).integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    photo[:, :50] = (255, 0, 0)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    (tmp_path / "names.txt").write_text("\n".join(f"thing{i}" for i in range(1000)))
    out = run(
        str(ROOT / "examples" / "explain_image.py"),
        "photo.png",
        "--class-names",
        "names.txt",
        "--out",
        "cam.png",
        cwd=tmp_path,
    )
    assert "random weights" in out
    assert "Grad-CAM at conv5_block3_out" in out
    assert " p=" in out
    assert "thing" in out
    with Image.open(tmp_path / "cam.png") as saved:
        picture = np.asarray(saved.convert("RGB"))
    assert picture.shape[1] >= 448
    assert picture.shape[0] > 224  # a caption under the pair
    original = picture[:224, : picture.shape[1] // 2].astype(int)
    red = (original[..., 0] > 200) & (original[..., 1] < 60) & (original[..., 2] < 60)
    assert red.mean() < 0.01  # stretched, the band would cover a sixth of it


HELP = """
import contextlib, io, runpy, sys
sys.path.insert(0, sys.argv[1])
for script in sys.argv[2:]:
    sys.argv, text = [script, "--help"], io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        runpy.run_path(script, run_name="__main__")
    print(text.getvalue() + "\\0")
print("keras imported" if "keras" in sys.modules else "no keras")
"""


def test_example_help_lists_every_option_with_its_default_before_importing_keras():
    examples = ROOT / "examples"
    scripts = sorted(path.name for path in examples.glob("*.py"))
    out = run("-c", HELP, str(examples), *(str(examples / s) for s in scripts), cwd=ROOT)
    *helps, imported = out.split("\0")
    assert imported.strip() == "no keras"
    for script, text in zip(scripts, helps, strict=True):
        blocks = text.split("\n  --")[1:]
        assert blocks, script
        for block in blocks:
            assert "(default:" in " ".join(block.split()), f"{script}: --{block.split()[0]}"


def test_shortcut_learning_runs_its_four_phases(tmp_path):
    out = run(
        str(ROOT / "examples" / "shortcut_learning.py"),
        "--epochs",
        "1",
        "1",
        "1",
        "--train-size",
        "96",
        "--log-dir",
        str(tmp_path / "shortcut"),
        cwd=tmp_path,
    )
    for phase in ("1 pretrain", "2 fine-tune a new head", "3 fix the data", "3b fix the model"):
        assert phase in out
    assert len(out.split("energy in mask by epoch:")[1].split("\n")[0].split()) == 4
    events = read_events(str(tmp_path / "shortcut" / "cam"))
    assert sorted(events["cam/gradcam/energy_in_mask"]) == [0, 1, 2, 3]
    assert sorted(events["cam/gradcam/drift"]) == [1, 2, 3]  # steps continue across the fits
    assert sorted(events["cam/gradcam/background_sensitivity"]) == [0, 1, 2, 3]
    assert "bg sensitivity" in out
    assert len(events["cam/gradcam/timeline"][2][0]) > 0


def test_vit_example_explains_the_last_blocks_first_norm(tmp_path):
    out = run(
        str(ROOT / "examples" / "vit_cam.py"),
        "--epochs",
        "1",
        "--train-size",
        "64",
        "--size",
        "32",  # a 4×4 token grid: the stem and the 256 held-out images cost little
        "--log-dir",
        str(tmp_path / "vit"),
        cwd=tmp_path,
    )
    assert "explained layer 'block1_norm1'" in out  # a class token: the last block's first norm
    assert "pointing game" in out
    assert "gradrollout" in out
    assert "Chefer et al.'s order" in out
    events = read_events(str(tmp_path / "vit" / "cam"))
    assert sorted(events["cam/gradcam/grid"]) == [0]
    assert "cam/gradcam/pointing_game" in events


@pytest.mark.parametrize(
    ("script", "printed"),
    [
        ("segmentation_cam.py", "energy in mask of the segmentation target, by epoch"),
        ("regression_cam.py", "pointing game of the probe by epoch"),
    ],
)
def test_task_examples_train_and_print_their_figures(script, printed, tmp_path):
    out = run(
        str(ROOT / "examples" / script),
        "--epochs",
        "2",
        "--train-size",
        "64",
        "--log-dir",
        str(tmp_path / "run"),
        cwd=ROOT / "examples",
    )
    series = next(line for line in out.splitlines() if line.startswith(printed))
    assert len(series.split(":")[1].split()) == 2
    assert "held-out" in out
    events = read_events(str(tmp_path / "run" / "cam"))
    assert sorted(events["cam/gradcam/grid"]) == [0, 1]


@pytest.mark.parametrize(
    ("script", "arguments", "samples"),
    [
        ("sequence_cam.py", ("--length", "32"), "sequences"),
        ("volume_cam.py", ("--size", "8"), "volumes"),
    ],
)
def test_sequence_and_volume_examples_print_the_pointing_game(
    script, arguments, samples, tmp_path, monkeypatch, capsys
):
    path = str(ROOT / "examples" / script)
    started = time.perf_counter()
    usage = run(path, "--help", cwd=tmp_path)
    assert time.perf_counter() - started < 5  # Keras is imported after the arguments
    assert usage.count("(default:") == 6  # every option says its default
    # In this process (Keras is imported already): a second interpreter would double the time.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # they import demo.py's helpers
    monkeypatch.setattr(
        sys,
        "argv",
        [
            *(path, "--epochs", "1", "--train-size", "32", "--test-size", "8", *arguments),
            *("--methods", "gradcam,scorecam", "--log-dir", str(tmp_path / "run")),
        ],
    )
    runpy.run_path(path, run_name="__main__")
    out = capsys.readouterr().out
    assert "pointing game (map peak on the" in out
    assert f"8 held-out {samples}" in out
    table = out.split("pointing game")[1].split("\n\n")[0].splitlines()[1:]
    scores = {name: float(value) for name, value in (line.split() for line in table)}
    assert set(scores) == {"gradcam", "scorecam"}
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    events = read_events(str(tmp_path / "run" / "cam"))
    assert sorted(events["cam/gradcam/grid"]) == [0]
    assert sorted(events["cam/compare"]) == [0]
