"""CAM cost in units of a compiled forward pass, and the callback's cost in % of epoch time.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_cam.py`). Every figure is a
ratio of two timings taken in the same run on the same machine.

1. ResNet50 (random weights; no download), batch 8 at 224×224: median time of one
   `CAMExplainer` call per method divided by the median time of one compiled forward
   pass of the same batch, after warm-up. Score-CAM runs with `max_channels=K`; its
   inherent cost is K masked forward passes of the batch, so its ratio is also
   given divided by K.
2. The demo's model and data: time spent in `CAMCallback` events (16 probe images,
   every epoch) in % of the epoch time.
3. The cost of each diagnostic metric for one event of that callback (16 probe images),
   in ms and in % of the same epoch time; the faithfulness metrics cost extra forward
   passes (deletion/insertion: 16 × 17 images at the default 16 steps).
4. A small vision transformer (KerasHub ViTBackbone + ViTImageClassifier, random
   weights: ViT-Tiny, 224×224, patch 16, 12 blocks of width 192), batch 8: Grad-CAM at the default
   layer (the last block's first LayerNorm, captured inside the encoder) over one compiled
   forward pass.
6. `--costs`: every registered method's cost in compiled forward passes of the same
   batch (method time / forward time, median of per-round ratios) on ResNet50 at
   224×224 (batch 2), Score-CAM-like methods bounded (`max_channels`, fewer samples) so
   it finishes in minutes; the methods in `TRANSFORMER_METHODS` are measured on the ViT
   of figure 4 instead. Printed as a Markdown table with the load average.
5. A long run: 200 CAM events of the demo model's callback (default settings): growth of
   the process's resident memory after warm-up, and bytes written per event, for 16 and
   for 4 probe images (`max_images` caps the disk use).
`--vit-costs` alone: the attention methods (rollout, gradient-weighted rollout, LeGrad) on
the ViT of item 4, next to Grad-CAM, in compiled forward passes of the batch.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import keras
import numpy as np

import keras_cam
from keras_cam.compute import backend_module
from keras_cam.data import make_shapes
from keras_cam.methods import ScoreCAM
from keras_cam.training.options import DEFAULT_IMAGES


def interleaved_times(fns: dict, runs: int) -> dict[str, list[float]]:
    """Seconds per run of each function, the functions taking turns so that drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up: tracing and first-call allocation
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(fns: dict, runs: int) -> dict[str, float]:
    """Median seconds per function over `runs` interleaved rounds."""
    times = interleaved_times(fns, runs)
    return {name: statistics.median(values) for name, values in times.items()}


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-round ratios: each round's two runs were back to back,
    so a load burst that slows one round slows both of its terms."""
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    low, median, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return median, low, high


def _method(name: str, score_cam_channels: int):
    if name == "scorecam":
        return ScoreCAM(max_channels=score_cam_channels)
    return name


def cam_over_forward(
    batch: int, size: int, runs: int, methods: list[str], score_cam_channels: int
) -> None:
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    images = np.random.default_rng(0).uniform(0, 255, size=(batch, size, size, 3))
    images = images.astype("float32")
    inputs = keras.ops.convert_to_tensor(images)
    forward = backend_module().compile_function(lambda x: model(x, training=False), model)
    explainers = {
        method: keras_cam.CAMExplainer(model, method=_method(method, score_cam_channels))
        for method in methods
    }
    timed = {"forward": lambda: keras.ops.convert_to_numpy(forward(inputs))}
    timed.update({method: (lambda e=e: e(images)) for method, e in explainers.items()})
    medians = interleaved_medians(timed, runs)
    forward_s = medians["forward"]
    print(f"ResNet50, batch {batch} at {size}×{size}, median of {runs} interleaved runs")
    print(f"  compiled forward pass: {forward_s * 1000:.0f} ms")
    for method, explainer in explainers.items():
        ratio = medians[method] / forward_s
        note = ""
        if method == "scorecam":
            note = (
                f"   = {ratio / score_cam_channels:.3f} K, K = max_channels = {score_cam_channels}"
            )
        print(
            f"  {method:<12} {medians[method] * 1000:7.0f} ms   CAM / forward = {ratio:6.3f}"
            f"   traced {explainer.trace_count}×{note}"
        )
    print(f"  layer: {explainers[methods[0]].layer}")


class _EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._start)


class _TimedCAMCallback(keras_cam.CAMCallback):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.events.append(time.perf_counter() - start)


def metric_costs(model, probe, epoch_s: float, runs: int) -> None:
    from keras_cam.diagnostics import metrics

    images = probe.images
    result = keras_cam.explain(model, images)
    maps, masks, classes = result.heatmaps, probe.masks, result.classes
    previous = np.roll(maps, 1, axis=0)
    timed = {
        "drift": lambda: metrics.drift(previous, maps),
        "focus": lambda: metrics.focus(maps),
        "pointing_game": lambda: metrics.pointing_game(maps, masks),
        "energy_in_mask": lambda: metrics.energy_in_mask(maps, masks),
        "deletion": lambda: metrics.deletion_auc(model, images, maps, classes),
        "insertion": lambda: metrics.insertion_auc(model, images, maps, classes),
        "average_drop": lambda: metrics.average_drop(model, images, maps, classes),
    }
    medians = interleaved_medians(timed, runs)
    print("Diagnostic metrics per event (16 probe images), median of interleaved runs")
    for name, seconds in medians.items():
        print(f"  {name:<16} {seconds * 1000:8.2f} ms   {100 * seconds / epoch_s:6.3f} % of epoch")


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _bytes_under(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        for name in names
    )


def long_run(events: int, log_dir: str) -> None:
    import shutil

    from demo import build_model

    model = build_model(64, 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    probe = make_shapes(16, seed=2)
    print(f"Long run: {events} CAM events of the demo model's callback")
    for images in (16, 4):
        directory = os.path.join(log_dir, f"long_{images}")
        shutil.rmtree(directory, ignore_errors=True)
        callback = keras_cam.CAMCallback(
            (probe.images, probe.labels), directory, view=keras_cam.ViewOptions(max_images=images)
        )
        callback.set_model(model)
        callback.on_train_begin()
        warm_up = 30  # fills the 8-column timeline
        for step in range(warm_up):
            callback._event(step)
        start_mib, start_bytes = _resident_mib(), _bytes_under(directory)
        for step in range(warm_up, events):
            callback._event(step)
        callback.on_train_end()
        growth = _resident_mib() - start_mib
        per_event = (_bytes_under(directory) - start_bytes) / (events - warm_up)
        print(
            f"  {images:2d} probe images: resident memory {growth:+.1f} MiB over events "
            f"{warm_up}–{events}; {per_event / 1024:.0f} KiB written per event"
        )


def event_cost(events: int, log_dir: str) -> None:
    """How long an event blocks `fit` (on_epoch_end) and what it costs in all (until the
    writer thread is done), and the bytes it writes, per image layout. The CPU time of
    the whole process (every thread: the training thread, the writer thread, the
    backend's own) is the figure a loaded machine inflates least."""
    import shutil

    from demo import build_model

    model = build_model(64, 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    probe = make_shapes(16, seed=2)
    print(f"One CAM event of the demo model, 16 probe images, median of {events} events")
    layouts = {"default": DEFAULT_IMAGES, "+ overlays": (*DEFAULT_IMAGES, "overlays")}
    for name, images in layouts.items():
        directory = os.path.join(log_dir, f"event_{name.strip('+ ')}")
        shutil.rmtree(directory, ignore_errors=True)
        callback = keras_cam.CAMCallback(
            (probe.images, probe.labels), directory, view=keras_cam.ViewOptions(images=images)
        )
        callback.set_model(model)
        callback.on_train_begin()
        blocking, total, cpu = [], [], []
        start_bytes = _bytes_under(directory)
        for step in range(events):
            start, start_cpu = time.perf_counter(), time.process_time()
            callback.on_epoch_end(step)
            blocking.append(time.perf_counter() - start)
            callback._jobs.join()
            total.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        callback.on_train_end()
        per_event = (_bytes_under(directory) - start_bytes) / events
        blocks_ms = statistics.median(blocking[1:]) * 1000
        print(
            f"  {name:<10} blocks fit {blocks_ms:.0f} ms, "
            f"total {statistics.median(total[1:]) * 1000:.0f} ms "
            f"(CPU time of all threads {statistics.median(cpu[1:]) * 1000:.0f} ms), "
            f"{per_event / 1024:.0f} KiB per event"
        )
        if name == "default":
            ours_ms = blocks_ms
    other_ms = _tf_explain_event(model, probe, events, log_dir)
    if other_ms is not None:
        print(
            f"  tf-explain GradCAMCallback (layer_name='last_conv', one image of 16 maps) "
            f"blocks fit {other_ms:.0f} ms; ours / theirs = {ours_ms / other_ms:.2f} "
            f"(target ≤ 0.33)"
        )


def _tf_explain_event(model, probe, events: int, log_dir: str) -> float | None:
    """Median ms of tf-explain's GradCAMCallback.on_epoch_end (all on the training thread)."""
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tf_explain.callbacks.grad_cam import GradCAMCallback
    except ImportError as error:  # tf-explain (and opencv) come with the `bench` extra
        print(f"  tf-explain not measured: {error}")
        return None
    callback = GradCAMCallback(
        (probe.images.astype("float32"), None),
        class_index=0,
        layer_name="last_conv",
        output_dir=os.path.join(log_dir, "tf_explain"),
    )
    callback.set_model(model)
    times = []
    for step in range(events):
        start = time.perf_counter()
        callback.on_epoch_end(step)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * 1000


EVENT_MODELS = ("demo", "mobilenetv2_96", "resnet50_224")
"""The models of `--event-vs-predict`: the demo's CNN (64 px) and two applications."""


def _event_model(name: str):
    """A compiled classifier of 3 classes (random weights) and its input size."""
    if name == "demo":
        from demo import build_model

        model, size = build_model(64, 3), 64
    else:
        application, size = {
            "mobilenetv2_96": (keras.applications.MobileNetV2, 96),
            "resnet50_224": (keras.applications.ResNet50, 224),
        }[name]
        base = application(weights=None, include_top=False, input_shape=(size, size, 3))
        x = keras.layers.GlobalAveragePooling2D()(base.output)
        outputs = keras.layers.Dense(3, activation="softmax")(x)
        model = keras.Model(base.input, outputs, name=name)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, size


def _load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _drain(callback) -> None:
    """Waits for the writer thread's queued jobs without stopping the thread (as in `fit`,
    where it lives from the first event to `on_train_end`)."""
    import threading

    done = threading.Event()
    callback._jobs.submit(done.set, "drain")
    done.wait()


def event_vs_predict(events: int, log_dir: str, models: tuple[str, ...] = EVENT_MODELS) -> None:
    """How long one CAM event blocks `fit`, next to the backend's own `model.predict`.

    Per model: a `CAMCallback` (Grad-CAM, default view, TensorBoard + CSV) on 16
    probe images, and `model.predict` on the same 16 model inputs. After two
    warm-up rounds, each round times one `on_epoch_end` (what `fit` waits for), lets
    the writer thread finish untimed (in a real run it overlaps the next epoch; the
    thread itself lives on, as in `fit`),
    then times one `predict`: the two take turns, so a load burst hits both.
    """
    import shutil

    print(f"Event blocking time vs model.predict, 16 probe images, {events} rounds after warm-up")
    for name in models:
        keras.utils.set_random_seed(0)
        model, size = _event_model(name)
        probe = make_shapes(16, size=size, seed=2)
        directory = os.path.join(log_dir, f"event_vs_predict_{name}")
        shutil.rmtree(directory, ignore_errors=True)
        images = probe.images.astype("float32") / 255  # display images in 0–1
        # strict: a failed event raises rather than being timed as a (cheap) skipped one.
        callback = keras_cam.CAMCallback((images, probe.labels), directory, strict=True)
        callback.set_model(model)
        callback.on_train_begin()
        inputs = callback.explainer.model_input(images)
        blocking, predict = [], []
        load_before = _load()
        for step in range(events + 2):
            start = time.perf_counter()
            callback.on_epoch_end(step)
            blocked = time.perf_counter() - start
            _drain(callback)
            start = time.perf_counter()
            model.predict(inputs, verbose=0)
            predicted = time.perf_counter() - start
            if step >= 2:
                blocking.append(blocked)
                predict.append(predicted)
        callback.on_train_end()
        ratios = sorted(b / p for b, p in zip(blocking, predict, strict=True))
        median_event, median_predict = statistics.median(blocking), statistics.median(predict)
        print(
            f"  {keras.backend.backend():<10} {name:<15} event {median_event * 1000:7.1f} ms "
            f"(min {min(blocking) * 1000:6.1f})  predict {median_predict * 1000:7.1f} ms "
            f"(min {min(predict) * 1000:6.1f})  event/predict {median_event / median_predict:5.2f}"
            f" (per-round median {statistics.median(ratios):5.2f}, min {ratios[0]:5.2f})"
            f"  load {load_before} -> {_load()}",
            flush=True,
        )


def event_vs_predict_all(backends: list[str], events: int, log_dir: str, models) -> None:
    """`event_vs_predict` under each backend, each in its own Python process."""
    import subprocess

    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        command = [sys.executable, __file__, "--event-vs-predict", "--in-process"]
        command += ["--events", str(events), "--log-dir", log_dir, "--models", *models]
        subprocess.run(command, env=env, check=True)


def callback_overhead(epochs: int, log_dir: str, runs: int) -> None:
    from demo import build_model

    keras.utils.set_random_seed(0)
    train = make_shapes(3000, seed=1)
    probe = make_shapes(16, seed=2)
    model = build_model(64, 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    cam = _TimedCAMCallback((probe.images, probe.labels), log_dir)
    # The clock comes first, so its epoch end is read before the CAM event runs.
    clock = _EpochClock()
    model.fit(
        train.images, train.labels, epochs=epochs, batch_size=32, verbose=0, callbacks=[clock, cam]
    )
    epoch_s = statistics.median(clock.epochs[1:])
    event_s = statistics.median(cam.events[1:])
    print(f"Demo model, 3000 images of 64×64 per epoch, 16 probe images, {epochs} epochs")
    print(
        f"  median epoch {epoch_s:.2f} s, median CAM event {event_s * 1000:.0f} ms "
        f"(overlays, grid, PNG, write)"
    )
    print(f"  callback overhead: {100 * event_s / epoch_s:.2f} % of epoch time")
    metric_costs(model, probe, epoch_s, runs)


def _accelerator() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return ", ".join(str(device.device_kind) for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return ", ".join(device.name for device in tf.config.list_logical_devices("GPU")) or "cpu"


def vit_cam_over_forward(batch: int, runs: int) -> None:
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(224, 224, 3),
        patch_size=16,
        num_layers=12,
        num_heads=3,
        hidden_dim=192,
        mlp_dim=768,
    )
    model = keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=10, preprocessor=None
    )
    images = np.random.default_rng(0).uniform(0, 1, size=(batch, 224, 224, 3))
    images = images.astype("float32")
    inputs = keras.ops.convert_to_tensor(images)
    forward = backend_module().compile_function(lambda x: model(x, training=False), model)
    explainer = keras_cam.CAMExplainer(model)
    load_before = os.getloadavg()[0]
    times = interleaved_times(
        {
            "forward": lambda: keras.ops.convert_to_numpy(forward(inputs)),
            "gradcam": lambda: explainer(images),
        },
        runs,
    )
    ratio, low, high = paired_ratio(times["gradcam"], times["forward"])
    forward_ms = statistics.median(times["forward"]) * 1000
    cam_ms = statistics.median(times["gradcam"]) * 1000
    print(f"ViT-Tiny (12 blocks, width 192, patch 16), batch {batch} at 224×224, {runs} rounds")
    print(
        f"  compiled forward pass: {forward_ms:.0f} ms (median), load average "
        f"{load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"  gradcam      {cam_ms:7.0f} ms   CAM / forward = {ratio:6.3f} "
        f"(median of per-round ratios; quartiles {low:.3f}–{high:.3f})"
        f"   traced {explainer.trace_count}×   target ≤ 1.3"
    )
    print(f"  layer: {explainer.layer}")


TRANSFORMER_METHODS = ["rollout", "gradrollout", "legrad"]
"""Methods measured on the ViT (figure 4's) instead of ResNet50 (the attention-based ones)."""

COST_CHANNELS = 8
COST_SAMPLES = 4
COST_SCALES = 3  # SESS: 9 patches at 224 (its default 12 scales are 122)


def _cost_method(name: str):
    """The registered method, bounded for `--costs`: K = COST_CHANNELS channels for the
    perturbation methods, COST_SAMPLES samples for those that average over samples,
    COST_SCALES scales for SESS."""
    from keras_cam.methods.perturbation import PerturbationMethod
    from keras_cam.methods.registry import registered_methods

    cls = registered_methods()[name]
    options = {}
    if issubclass(cls, PerturbationMethod):
        options["max_channels"] = COST_CHANNELS
    if "samples" in inspect.signature(cls).parameters:
        options["samples"] = COST_SAMPLES
    if "num_scales" in inspect.signature(cls).parameters:
        options["num_scales"] = COST_SCALES
    return cls(**options), options


def _small_vit():
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(224, 224, 3),
        patch_size=16,
        num_layers=12,
        num_heads=3,
        hidden_dim=192,
        mlp_dim=768,
    )
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=10, preprocessor=None)


def method_costs(batch: int, size: int, runs: int, methods: list[str]) -> None:
    """Each method's time over the compiled forward time of the same batch, as a table."""
    from keras_cam.methods.registry import registered_methods

    groups = {
        "ResNet50": [m for m in methods if m not in TRANSFORMER_METHODS],
        "ViT-Tiny": [m for m in methods if m in TRANSFORMER_METHODS],
    }
    load_before = os.getloadavg()[0]
    print(f"batch {batch} at {size}×{size}, {runs} rounds; cost = method time / forward time")
    print("| method | model | options | cost (forward passes) | quartiles | stated cost |")
    print("|---|---|---|---|---|---|")
    for model_name, names in groups.items():
        if not names:
            continue
        if model_name == "ResNet50":
            model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
            images = np.random.default_rng(0).uniform(0, 255, size=(batch, size, size, 3))
        else:
            model = _small_vit()
            images = np.random.default_rng(0).uniform(0, 1, size=(batch, 224, 224, 3))
        images = images.astype("float32")
        inputs = keras.ops.convert_to_tensor(images)
        forward = backend_module().compile_function(lambda x, m=model: m(x, training=False), model)
        for name in names:
            method, options = _cost_method(name)
            explainer = keras_cam.CAMExplainer(model, method=method)
            times = interleaved_times(
                {
                    "forward": lambda f=forward, x=inputs: keras.ops.convert_to_numpy(f(x)),
                    name: lambda e=explainer, x=images: e(x),
                },
                runs,
            )
            ratio, low, high = paired_ratio(times[name], times["forward"])
            shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            print(
                f"| {name} | {model_name} | {shown} | {ratio:.2f} | {low:.2f}–{high:.2f} "
                f"| {registered_methods()[name].cost} |"
            )
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--methods",
        nargs="+",
        help="default: every method for --costs (the attention ones on the ViT), else the CNN ones",
    )
    parser.add_argument("--score-cam-channels", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--log-dir", default="runs/bench")
    parser.add_argument(
        "--cam-only", action="store_true", help="skip the callback and metric figures"
    )
    parser.add_argument("--long-run", type=int, default=200, help="events of the long run")
    parser.add_argument(
        "--event-only", action="store_true", help="only the blocking/total cost of one event"
    )
    parser.add_argument("--vit-only", action="store_true", help="only the ViT figure")
    parser.add_argument(
        "--costs", action="store_true", help="only each method's cost in forward passes"
    )
    parser.add_argument(
        "--event-vs-predict",
        action="store_true",
        help="only the event's blocking time next to model.predict, per backend and model",
    )
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch"], help="--event-vs-predict"
    )
    parser.add_argument("--models", nargs="+", default=list(EVENT_MODELS), choices=EVENT_MODELS)
    parser.add_argument("--events", type=int, default=10, help="timed rounds, after 2 warm-ups")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.event_vs_predict and not args.in_process:
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
        event_vs_predict_all(args.backends, args.events, args.log_dir, args.models)
        return
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"accelerator: {_accelerator()}"
    )
    if args.methods is None:
        args.methods = [
            name
            for name in keras_cam.available_methods()
            if args.costs or name not in TRANSFORMER_METHODS
        ]
    if args.event_vs_predict:
        event_vs_predict(args.events, args.log_dir, tuple(args.models))
        return
    if args.event_only:
        event_cost(10, args.log_dir)
        return
    if args.costs:
        method_costs(args.batch, args.size, args.runs, args.methods)
        return
    if not args.vit_only:
        cam_over_forward(args.batch, args.size, args.runs, args.methods, args.score_cam_channels)
    vit_cam_over_forward(args.batch, args.runs)
    if args.vit_only:
        return
    if not args.cam_only:
        event_cost(10, args.log_dir)
        callback_overhead(args.epochs, args.log_dir, args.runs)
        if os.path.exists("/proc/self/statm"):
            long_run(args.long_run, args.log_dir)


if __name__ == "__main__":
    main()
