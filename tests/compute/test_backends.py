"""The same results on TensorFlow, JAX and PyTorch, and no TensorFlow needed for the last two.

Each backend runs in its own process (Keras picks its backend once, at
import), started by these tests; they run once, in the TensorFlow pass of
the suite.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import checkout_env, conv_classifier, feature_map_methods, read_events

import keras_cam

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow", reason="started from the TensorFlow pass"
    ),
]
HERE = Path(__file__).resolve().parent
OTHERS = ("jax", "torch")


def worker(backend: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(HERE / "backend_worker.py"), *args],
        env=checkout_env(KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# DFF's NMF iterates until its projected gradient falls below `tol=1e-4` times the
# first one: each backend's float32 rounding stops it at a slightly different point of
# its descent, so its maps agree to the solver's tolerance, not to float32 rounding
# (1.2e-4 measured on PyTorch); ten times that tolerance still catches a wrong map.
TOLERANCE = {"dff": 1e-3}


def test_every_method_gives_the_same_maps_on_every_backend(tmp_path):
    """Weights saved under TensorFlow, loaded under JAX and PyTorch: maps agree to 1e-4."""
    model = conv_classifier()
    images = np.random.default_rng(0).uniform(0, 1, size=(4, 16, 16, 3)).astype("float32")
    model.save_weights(tmp_path / "model.weights.h5")
    np.save(tmp_path / "images.npy", images)
    reference = {
        name: result.raw
        for name, result in keras_cam.CAMExplainer(model, feature_map_methods())(images).items()
    }
    for backend in OTHERS:
        out = tmp_path / f"{backend}.npz"
        worker(
            backend,
            "maps",
            str(tmp_path / "model.weights.h5"),
            str(tmp_path / "images.npy"),
            str(out),
        )
        with np.load(out) as maps:
            assert set(maps.files) == set(reference)
            for name, expected in reference.items():
                if name in (
                    "randomcam",
                    "sscam",
                    "smoothgradcam++",
                ):  # each backend draws its own noise
                    continue
                scale = max(float(np.abs(expected).max()), 1e-12)
                difference = float(np.abs(maps[name] - expected).max()) / scale
                assert difference <= TOLERANCE.get(name, 1e-4), (
                    f"{name} on {backend}: {difference:.2e}"
                )


@pytest.mark.parametrize("backend", OTHERS)
def test_fit_with_the_callback_needs_no_tensorflow(tmp_path, backend):
    report = json.loads(worker(backend, "fit", str(tmp_path), "--block-tensorflow"))
    assert report["backend"] == backend
    assert report["tensorflow_loaded"] is False
    assert report["trace_count"] == 1  # one compile over the whole fit
    events = read_events(str(tmp_path))  # the tensorboard package alone reads them back
    for tag in ("cam/gradcam", "cam/scorecam", "cam/compare", "cam/gradcam/focus"):
        assert sorted(events[tag]) == [0, 1, 2]
    # The last event's overlays are those of the final weights.
    np.testing.assert_array_equal(
        np.stack(events["cam/gradcam"][2]), np.array(report["overlay"], dtype=np.uint8)
    )
