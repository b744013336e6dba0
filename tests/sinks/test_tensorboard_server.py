"""A real `tensorboard` server on 127.0.0.1 reads back what the callback wrote."""

import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from conftest import conv_classifier
from PIL import Image

import keras_cam

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(base: str, path: str, **params) -> bytes:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(params=["tensorflow", "tensorboard"])
def served_logs(tmp_path, request):
    """Logs written through each writer implementation, served by a real tensorboard."""
    x = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    y = np.arange(8) % 3
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[
            keras_cam.CAMCallback(
                (x[:4], y[:4]),
                sinks=[keras_cam.TensorBoardSink(tmp_path / "cam", writer=request.param)],
                view=keras_cam.ViewOptions(
                    max_images=4, images=("overlays", "grid"), normalize="image"
                ),
            )
        ],
    )
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                tags = json.loads(get(base, "/data/plugin/images/tags"))
                if "cam" in tags and "cam/gradcam/grid" in tags["cam"]:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tensorboard did not serve the logs: {server.stderr.read()}")
            time.sleep(0.5)
        yield base, model, x
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_tensorboard_serves_the_images_and_scalars(served_logs):
    base, model, x = served_logs
    tags = json.loads(get(base, "/data/plugin/images/tags"))["cam"]
    assert {"cam/gradcam", "cam/gradcam/grid"} <= set(tags)
    assert tags["cam/gradcam"]["samples"] == 4

    expected = keras_cam.overlay(x[:4], keras_cam.explain(model, x[:4]).heatmaps)
    for sample in range(4):
        entries = json.loads(
            get(base, "/data/plugin/images/images", run="cam", tag="cam/gradcam", sample=sample)
        )
        assert [entry["step"] for entry in entries] == [0, 1]
        png = get(base, "/data/plugin/images/individualImage?" + entries[-1]["query"])
        decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        np.testing.assert_array_equal(decoded, expected[sample])

    scalars = json.loads(
        get(base, "/data/plugin/scalars/scalars", run="cam", tag="cam/gradcam/mean_score")
    )
    assert [step for _, step, _ in scalars] == [0, 1]
    assert all(0.0 < value <= 1.0 for _, _, value in scalars)
    histograms = json.loads(
        get(base, "/data/plugin/histograms/histograms", run="cam", tag="cam/gradcam/per_image")
    )
    assert [entry[1] for entry in histograms] == [1]  # drift: from the second event
    assert sum(bucket[2] for bucket in histograms[0][2]) == pytest.approx(4)
