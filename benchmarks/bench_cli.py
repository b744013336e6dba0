"""Images per second of `keras-cam explain` against a hand loop calling `explain()` per image.

Run: `.venv/bin/python benchmarks/bench_cli.py [--count 256 --loop-count 16]`. Every figure comes
from one run on one machine; the ratios are what to compare across machines.

The demo's model (random weights: the cost does not depend on them), saved as
`.keras`, and `--count` PNG images of 96×96 (the model takes 64×64). Each way
reads the files, fits them to 64×64, computes Grad-CAM and writes one overlay PNG
per image, timed from the loaded model to the last file written:

- hand loop: `keras_cam.explain(model, image[None])` per image, as a script
  written from the README would do (a new explainer, so a new trace, each call);
  on the first `--loop-count` images only, as it is slow;
- hand loop reusing one `CAMExplainer`, still one image per call;
- `keras_cam.cli.command.main([...])` in this process, `--metrics none` (the same work
  plus the input thumbnails, captions, results.csv and index.html), then with
  the default metrics (focus, average drop, increase in confidence);
- the `keras-cam` command as a subprocess, `--metrics none`: start-up (importing
  Keras and its backend, loading the model) included.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import keras
import numpy as np
from demo import build_model
from PIL import Image

import keras_cam
from keras_cam.cli import command as cli
from keras_cam.data import make_shapes


def _image(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))


def hand_loop(model: keras.Model, paths: list[str], out: str, reuse: bool) -> None:
    os.makedirs(out, exist_ok=True)
    explainer = keras_cam.CAMExplainer(model) if reuse else None
    for index, path in enumerate(paths):
        image = _image(path)
        if explainer is not None:
            result = explainer(image[None])
        else:
            result = keras_cam.explain(model, image[None])
        blended = keras_cam.overlay(image[None], result.heatmaps)[0]
        Image.fromarray(blended).save(os.path.join(out, f"{index}.png"), compress_level=1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=256, help="images (default: 256)")
    parser.add_argument(
        "--loop-count",
        type=int,
        default=16,
        help="images for the explain()-per-image loop (default: 16)",
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_cli_")
    keras.utils.set_random_seed(0)
    model_path = os.path.join(work, "shapes_cnn.keras")
    build_model(64, 3).save(model_path)
    folder = os.path.join(work, "photos")
    os.makedirs(folder)
    for index, image in enumerate(make_shapes(args.count, size=96, seed=3).images):
        Image.fromarray(image).save(os.path.join(folder, f"{index:04d}.png"))
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    model = keras.saving.load_model(model_path)

    def command(name: str) -> list[str]:
        return ["explain", model_path, folder, "--out", os.path.join(work, name), "--quiet"]

    loop = paths[: args.loop_count]
    rates = {
        "hand loop, `explain()` per image": len(loop)
        / timed(lambda: hand_loop(model, loop, os.path.join(work, "loop"), reuse=False)),
        "hand loop, one `CAMExplainer`, one image per call": args.count
        / timed(lambda: hand_loop(model, paths, os.path.join(work, "reuse"), reuse=True)),
        "`keras-cam explain --metrics none` (in process)": args.count
        / timed(lambda: cli.main([*command("cli"), "--metrics", "none"])),
        "`keras-cam explain` default metrics (in process)": args.count
        / timed(lambda: cli.main(command("metrics"))),
        "`keras-cam explain --metrics none` (subprocess, start-up included)": args.count
        / timed(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "keras_cam.cli.command",
                    *command("sub"),
                    "--metrics",
                    "none",
                ],
                check=True,
                capture_output=True,
            )
        ),
    }
    print(
        f"\n{platform.machine()}, {os.cpu_count()} CPUs, Keras {keras.__version__} "
        f"({keras.backend.backend()}), {args.count} images of 96×96 -> 64×64 "
        f"({len(loop)} for the explain() loop), Grad-CAM, batch 32:"
    )
    baseline = next(iter(rates.values()))
    print(f"  {'way':<70} {'images/s':>9} {'× hand loop':>12}")
    for name, rate in rates.items():
        print(f"  {name:<70} {rate:9.2f} {rate / baseline:12.1f}")


if __name__ == "__main__":
    main()
