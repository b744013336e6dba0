"""How long a CAM event blocks `fit` with the MLflow sink, against the TensorBoard sink.

Run: `.venv/bin/python benchmarks/bench_trackers.py` (needs `pip install keras-cam[mlflow]`).

One `fit` of a small convolutional classifier (the demo's shapes data, 64×64) carries
two `CAMCallback`s with the same probe (16 images, the default pictures): one writing to
a `TensorBoardSink`, one to an `MLflowSink` talking to a real `mlflow server` started
here on 127.0.0.1 (SQLite store, its default 4 workers). Per epoch it times each
callback's `on_epoch_end` on the training thread: the CAM itself, then handing the
event to the writer thread, which blocks only when that thread has fallen two events
behind. Printed: the median over the
events after the first two (warm-up), the ratio MLflow / TensorBoard (the target is
<= 1.2), and, for scale, the median time each sink's `write` took on its writer thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_cam
from keras_cam.data import make_shapes

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from mlflow_screenshot import start_server


class Timed:
    """A sink that times its inner sink's `write` (on the writer thread)."""

    def __init__(self, sink):
        self.sink, self.seconds = sink, []
        self.written = threading.Event()  # set when a write has returned

    def open(self):
        self.sink.open()

    def write(self, event):
        start = time.perf_counter()
        try:
            self.sink.write(event)
        finally:
            self.seconds.append(time.perf_counter() - start)
            self.written.set()

    def close(self):
        self.sink.close()


class TakingTurns(keras.callbacks.Callback):
    """Runs the timed callbacks one after the other, each going first at every other event.

    Between the two it waits until the first one's event is written: a user has one
    sink, so neither event may share the CPU with the other sink's writer thread (that
    adds 10-15 ms to whichever goes second, more than the difference measured).
    """

    def __init__(self, callbacks, sinks):
        super().__init__()
        self.callbacks, self.sinks = list(callbacks), list(sinks)

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        turns = list(zip(self.callbacks, self.sinks, strict=True))
        for callback, sink in turns if epoch % 2 == 0 else turns[::-1]:
            sink.written.clear()
            callback.on_epoch_end(epoch, logs)
            sink.written.wait(timeout=60)

    def on_train_end(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_end(logs)


class EpochTimes(keras.callbacks.Callback):
    """Seconds of training per epoch (begin to end, before the CAM callbacks' events)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


class BlockTimer(keras.callbacks.Callback):
    """Wraps a CAMCallback and times its on_epoch_end: what the event costs `fit`."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seconds = inner, []

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        self.inner.on_epoch_end(epoch, logs)
        self.seconds.append(time.perf_counter() - start)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)


def model_and_data(samples: int):
    data = make_shapes(samples, size=64, seed=0)
    x, y = data.images, data.labels
    inputs = keras.Input((64, 64, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(int(y.max()) + 1, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="events: 2 warm-up + the rest")
    parser.add_argument("--samples", type=int, default=2048, help="training images per epoch")
    parser.add_argument(
        "--workers", type=int, default=4, help="mlflow server workers (its default)"
    )
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench_trackers_")
    process, uri = start_server(root, args.workers)
    try:
        model, x, y = model_and_data(args.samples)
        probe = (x[:16], y[:16])
        tensorboard = Timed(keras_cam.TensorBoardSink(os.path.join(root, "tb")))
        tracker = Timed(keras_cam.MLflowSink(tracking_uri=uri, experiment="bench"))
        timers = {
            name: BlockTimer(
                keras_cam.CAMCallback(probe, sinks=[sink], preprocess=lambda im: im / 255.0)
            )
            for name, sink in (("tensorboard", tensorboard), ("mlflow", tracker))
        }
        epochs = EpochTimes()
        model.fit(
            x / 255.0,
            y,
            epochs=args.epochs,
            verbose=0,
            callbacks=[epochs, TakingTurns(timers.values(), (tensorboard, tracker))],
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(root, ignore_errors=True)
    blocked = {name: statistics.median(t.seconds[2:]) for name, t in timers.items()}
    writes = {
        "tensorboard": statistics.median(tensorboard.seconds[2:]),
        "mlflow": statistics.median(tracker.seconds[2:]),
    }
    events = len(timers["mlflow"].seconds) - 2
    print(f"keras {keras.__version__} ({keras.backend.backend()}), load {os.getloadavg()[0]:.1f}")
    epoch = statistics.median(epochs.seconds[2:])
    print(f"epoch (training, {args.samples} images): median {epoch:.2f} s")
    print(f"time an event blocks fit (median of {events} events, 16 probe images):")
    for name in blocked:
        write = writes[name] * 1000
        print(f"  {name:12s} {blocked[name] * 1000:8.1f} ms   (its write: {write:.0f} ms)")
    ratio = blocked["mlflow"] / blocked["tensorboard"]
    print(f"  ratio mlflow / tensorboard: {ratio:.2f} (target <= 1.2)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
