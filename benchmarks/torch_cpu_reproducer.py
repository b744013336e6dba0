"""Two costs of a Keras-on-PyTorch CPU forward pass that are not keras_cam's (no keras_cam import).

Run: `KERAS_BACKEND=torch .venv/bin/python benchmarks/torch_cpu_reproducer.py`.
MobileNetV2 (random weights, include_top=False + GAP + Dense(3)) on 16 images of 96×96,
under `torch.no_grad()`, as `model.predict` and the CAM event both run it:

1. Layout copies. Keras keeps channels-last tensors; its torch backend transposes each
   convolution's and pooling's input to channels-first and back (`permute(...).contiguous()`
   in `keras/src/backend/torch/nn.py`). The torch profiler's `aten::copy_` (what
   `contiguous` runs) is printed as a share of the forward pass's operator time.
2. Intra-op threads on a busy machine. With as many OpenMP threads as cores and one core
   taken by another process (here a busy child process; in training, the CAM writer thread,
   a data loader or another job), every parallel operator waits at its barrier for the
   descheduled thread: the same forward pass with one thread fewer than cores is faster.
   Medians of interleaved runs, both settings in the same process.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile


def _busy(stop) -> None:
    x = np.random.default_rng(0).uniform(size=100_000)
    while not stop.is_set():  # elementwise only: no BLAS threads of its own
        x = np.tanh(x + 0.5)


def main() -> None:
    if keras.backend.backend() != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch")
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(base.output))
    model = keras.Model(base.input, outputs)
    x = torch.as_tensor(np.random.default_rng(0).uniform(size=(16, 96, 96, 3)), dtype=torch.float32)
    cores = os.cpu_count() or 1
    print(
        f"torch {torch.__version__}, keras {keras.__version__}, {cores} CPUs, "
        f"load {os.getloadavg()}"
    )
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    events = {e.key: e for e in prof.key_averages()}
    total = sum(e.self_cpu_time_total for e in events.values())
    copies = events.get("aten::copy_")
    if copies is not None:
        share = 100 * copies.self_cpu_time_total / total
        print(
            f"1. layout copies: aten::copy_ ×{copies.count} = {share:.0f} % of the forward "
            f"pass's operator time"
        )

    threads = {"threads = cores": cores, "threads = cores - 1": max(1, cores - 1)}
    context = multiprocessing.get_context("spawn")  # no fork of torch's thread pools
    stop = context.Event()
    worker = context.Process(target=_busy, args=(stop,), daemon=True)
    worker.start()
    times: dict[str, list[float]] = {name: [] for name in threads}
    try:
        with torch.no_grad():
            for round_ in range(8):
                for name, count in threads.items():
                    torch.set_num_threads(count)
                    start = time.perf_counter()
                    model(x)
                    if round_ >= 2:  # after warm-up
                        times[name].append(time.perf_counter() - start)
    finally:
        stop.set()
        worker.join()
    print("2. forward pass of 16 images with one core busy elsewhere (median of 6, interleaved):")
    for name, values in times.items():
        print(f"   {name:<20} ({threads[name]}): {statistics.median(values) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
