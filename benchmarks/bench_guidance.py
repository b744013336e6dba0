"""Cost of a CAM-guided train step against an unguided one, on the demo model.

Run: `.venv/bin/python benchmarks/bench_guidance.py` (any backend). Both steps are
the compiled `train_on_batch` of the same model, batch 32 of 64×64 images, every
image with a mask (the most the guidance can cost); they take turns, medians after
warm-up. Each penalty of `CAMGuidedModel` (`rrr`: the input gradient; `gradcam`: the
Grad-CAM energy at `last_conv`; `gradcam ×2`: at the last two convolutions) in two
settings: the whole model trainable, and the backbone frozen with only the head
trained (the shortcut example's fine-tuning).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from demo import build_model

import keras_cam
from keras_cam.data import make_shapes


def step_seconds(model, x, y, runs: int) -> float:
    model.train_on_batch(x, y)  # compile
    model.train_on_batch(x, y)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(frozen_backbone: bool, batch: int, runs: int) -> None:
    data = make_shapes(batch, size=64, seed=0)
    model = build_model(64, len(data.class_names))
    if frozen_backbone:
        for layer in model.layers:
            layer.trainable = layer.name in ("last_conv", "classifier")
    convolutions = [layer.name for layer in model.layers if "conv" in layer.name.lower()]
    penalties = {
        "rrr": {"penalty": "rrr"},
        "gradcam": {"penalty": "gradcam", "layer": "last_conv"},
        "gradcam ×2": {"penalty": "gradcam", "layer": convolutions[-2:]},
    }
    model.compile("adam", "sparse_categorical_crossentropy")
    setting = "head only (backbone frozen)" if frozen_backbone else "whole model trainable"
    fed = {"images": data.images, "masks": data.masks}
    for name, options in penalties.items():
        guided = keras_cam.CAMGuidedModel(model, **options)
        guided.compile("adam", "sparse_categorical_crossentropy")
        plain_s, guided_s = [], []
        for _ in range(3):  # take turns, so load on the machine hits both alike
            plain_s.append(step_seconds(model, data.images, data.labels, runs))
            guided_s.append(step_seconds(guided, fed, data.labels, runs))
        plain, guided_time = statistics.median(plain_s), statistics.median(guided_s)
        print(
            f"  {setting:<28} {name:<11} unguided {1000 * plain:7.1f} ms   guided "
            f"{1000 * guided_time:7.1f} ms   ratio {guided_time / plain:5.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"demo model, batch {args.batch} at 64×64, median train step:"
    )
    keras.utils.set_random_seed(0)
    for frozen in (False, True):
        compare(frozen, args.batch, args.runs)


if __name__ == "__main__":
    main()
