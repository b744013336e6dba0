"""Run by test_backends.py in a fresh process, under the backend named by KERAS_BACKEND.

    python backend_worker.py maps WEIGHTS INPUTS OUT    # every method's raw maps -> OUT (.npz)
    python backend_worker.py fit LOG_DIR               # a short fit with CAMCallback, no TensorFlow

With `--block-tensorflow`, importing TensorFlow fails, as on a machine without it.
"""

from __future__ import annotations

import sys

if "--block-tensorflow" in sys.argv:
    sys.argv.remove("--block-tensorflow")
    sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError

import json

import keras
import numpy as np
from conftest import conv_classifier, feature_map_methods

import keras_cam


def maps(weights: str, inputs: str, out: str) -> None:
    model = conv_classifier()
    model.load_weights(weights)
    images = np.load(inputs)
    explainer = keras_cam.CAMExplainer(model, feature_map_methods())
    results = explainer(images)
    np.savez(out, **{name: result.raw for name, result in results.items()})


def fit(log_dir: str) -> None:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(24, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=24)
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(
        (x[:4], y[:4]),
        log_dir,
        method=["gradcam", "scorecam"],
        view=keras_cam.ViewOptions(
            images=("overlays", "grid", "timeline", "compare"), normalize="image"
        ),
    )
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[callback])
    last = keras_cam.explain(model, x[:4])
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "trace_count": callback.explainer.trace_count,
                "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
                "overlay": keras_cam.overlay(x[:4], last.heatmaps).tolist(),
            }
        )
    )


if __name__ == "__main__":
    {"maps": maps, "fit": fit}[sys.argv[1]](*sys.argv[2:])
