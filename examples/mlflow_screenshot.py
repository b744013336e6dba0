"""The MLflow run page with the CAM images, in headless Chromium: docs/img/mlflow_run.png.

Run: `.venv/bin/python examples/mlflow_screenshot.py docs/img/mlflow_run.png` (needs
`pip install keras-cam[mlflow]`, selenium, and Debian's chromium + chromium-driver:
`make browser`). Starts `mlflow server` on 127.0.0.1 with a temporary store, trains a
small classifier on the shapes data for 4 epochs with a `CAMCallback` writing to an
`MLflowSink`, then opens the run's Model metrics tab (scalars and the image cards with
their step slider) and saves a screenshot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras and keras_cam are imported where they are used, after the command line is
# parsed: `--help` answers at once.


def start_server(root: str, workers: int = 1) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on a free port of 127.0.0.1 (SQLite store); its process and URI."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        os.path.join(os.path.dirname(sys.executable), "mlflow"),
        *("server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db"),
        *("--artifacts-destination", f"{root}/artifacts", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", str(workers)),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(os.path.join(root, "server.log"), "wb")  # noqa: SIM115 (the server holds it)
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                return process, uri
        except OSError:
            time.sleep(0.25)
    raise TimeoutError("mlflow server did not start")


def train(uri: str, epochs: int) -> tuple[str, str]:
    """A short run of the shapes classifier with the MLflow sink; its experiment and run ids."""
    import keras
    import mlflow

    import keras_cam
    from keras_cam.data import make_shapes

    data = make_shapes(512, size=64, seed=0)
    x, y = data.images, data.labels
    inputs = keras.Input((64, 64, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(int(y.max()) + 1, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("shapes")
    with mlflow.start_run(run_name="shapes-gradcam") as run:
        callback = keras_cam.CAMCallback(
            (x[:8], y[:8]),
            sinks=[keras_cam.MLflowSink()],
            class_names=list(data.class_names),
            preprocess=lambda images: images / 255.0,
            view=keras_cam.ViewOptions(max_images=8),
        )
        model.fit(x / 255.0, y, epochs=epochs, verbose=0, callbacks=[callback])
    return run.info.experiment_id, run.info.run_id


def screenshot(url: str, path: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1300"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        loaded = (
            "return Array.from(document.querySelectorAll('img')).filter(i => "
            "i.src.includes('path=images') && i.complete && i.naturalWidth > 0).length"
        )
        WebDriverWait(driver, 180, poll_frequency=1).until(lambda d: d.execute_script(loaded) >= 3)
        # The assistant side panel takes a third of the page: close it (its header's last button).
        from selenium.webdriver.common.by import By

        buttons = driver.find_elements(
            By.XPATH,
            "//*[normalize-space(text())='MLflow Assistant']/ancestor::div[.//button][1]//button",
        )
        if buttons:
            buttons[-1].click()
        time.sleep(2)
        driver.save_screenshot(path)
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("output", help="the PNG to write, e.g. docs/img/mlflow_run.png")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mlflow_screenshot_")
    process, uri = start_server(root)
    try:
        experiment, run = train(uri, args.epochs)
        screenshot(f"{uri}/#/experiments/{experiment}/runs/{run}/model-metrics", args.output)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
