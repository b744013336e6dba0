"""The package as a user gets it: `python -m build`'s wheel, installed in a fresh venv.

The venv gets only what the wheel declares for `keras-cam[tensorflow]` (the core
dependencies and TensorFlow), nothing of this repository's environment; the checks run
outside the repository, so `import keras_cam` can only find the installed copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import keras_cam

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # several minutes of installing: once, in the TensorFlow pass

EXPLAIN = """
import importlib.util, sys
import keras, numpy as np
import keras_cam

assert "site-packages" in keras_cam.__file__, keras_cam.__file__
for absent in ("jax", "torch", "pytest", "keras_hub"):
    assert importlib.util.find_spec(absent) is None, absent
inputs = keras.Input((16, 16, 3))
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
result = keras_cam.explain(model, images)
print(result.layer, result.heatmaps.shape, result.heatmaps.dtype,
      float(result.heatmaps.min()) >= 0, float(result.heatmaps.max()) <= 1)
"""


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def clean_env() -> dict[str, str]:
    """The environment without this checkout on the path (nor its backend choice)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of what the build reads, so that the build's leftovers
    # (build/, keras_cam.egg-info) stay out of the checkout.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "keras_cam", source / "keras_cam", ignore=shutil.ignore_patterns("__pycache__")
    )
    # --no-isolation: the build backend (setuptools) is the one installed, nothing fetched.
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    run(command, source, clean_env())
    (found,) = out.glob("keras_cam-*.whl")
    return found


def test_the_wheel_holds_only_the_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name == f"keras_cam-{keras_cam.__version__}-py3-none-any.whl"
    tops = {name.split("/")[0] for name in names}
    assert tops == {"keras_cam", f"keras_cam-{keras_cam.__version__}.dist-info"}
    assert "keras_cam/py.typed" in names
    assert not [n for n in names if n.endswith((".png", ".md", ".ipynb")) or "/tests/" in n]


def test_the_wheel_installs_and_explains_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python, command = venv / "bin" / "python", venv / "bin" / "keras-cam"
    # This environment's pip installs into the new venv (no pip inside it to bootstrap);
    # --no-compile leaves bytecode to the first import, as for the modules never imported.
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    env = clean_env()
    run([*install, "--no-compile", f"{wheel}[tensorflow]"], tmp_path, env)
    assert run([str(command), "--version"], tmp_path, env).strip() == (
        f"keras-cam {keras_cam.__version__}"
    )
    printed = run([str(python), "-c", EXPLAIN], tmp_path, env).split()
    assert printed == ["features", "(2,", "16,", "16)", "float32", "True", "True"]
