"""Shared fixtures: tiny models built in the test, random or briefly trained weights."""

from __future__ import annotations

import os
import signal
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from keras import layers

import keras_cam

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that must import this checkout's code.

    The repository root comes first on PYTHONPATH, so a worktree or a clone tests
    its own `keras_cam` whatever the virtual environment has installed; `tests/`
    follows for the workers' `from conftest import ...`.
    """
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), **extra}


def feature_map_methods() -> list[str]:
    """Every registered method but the attention ones, which read a transformer's blocks
    (tested on ViTs in tests/methods/test_methods_vit.py)."""
    return sorted(
        name
        for name in keras_cam.available_methods()
        if not keras_cam.methods.get_method(name).uses_attention
    )


def user_signals() -> None:
    """Ctrl-C as a user's fresh process has it: delivered, and Python's own handler.

    The test runner's process may have SIGINT blocked or handled by an earlier test's
    leftovers; a blocked or ignored signal is inherited by a child process. Used as a
    child's `preexec_fn` and at the start of in-process Ctrl-C tests.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(1234)


def skip_if_channels_first_cannot_run(model: keras.Model, inputs: np.ndarray) -> None:
    """Skips where the user's channels-first model itself cannot run, so neither can a CAM.

    TensorFlow has no NCHW convolution on CPUs where oneDNN is off (no AVX-512); JAX and
    PyTorch always run these tests.
    """
    try:
        model.predict(inputs, verbose=0)
    except Exception as error:
        if keras.backend.backend() != "tensorflow":
            raise
        pytest.skip(f"the channels-first model itself cannot run on this CPU: {error!r:.80}")


def conv_classifier(
    size: int = 16,
    channels: int = 3,
    classes: int = 3,
    activation: str | None = "softmax",
    name: str = "classifier",
) -> keras.Model:
    """Input → two convs → GAP → Dense: a GAP→Dense head, as CAM requires."""
    inputs = keras.Input((size, size, channels))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(5, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(classes, activation=activation, name="dense")(x)
    return keras.Model(inputs, outputs, name=name)


def model_that_barely_reads_its_features() -> keras.Model:
    """A linear head whose weights are ~1e-9: the score hardly depends on the features."""
    model = conv_classifier(activation=None)
    kernel, bias = model.get_layer("dense").get_weights()
    model.get_layer("dense").set_weights([kernel * 1e-9, bias + np.array([1.0, 0.0, 0.0])])
    return model


@pytest.fixture
def no_gradients(monkeypatch):
    """Fails the test if the explainer asks the backend for a gradient."""
    from keras_cam.compute import backend_module

    compute = backend_module()
    original = compute.activations_and_gradients

    def without_gradients(*args):
        assert args[-1] is False, "a gradient was asked for"
        return original(*args)

    monkeypatch.setattr(compute, "activations_and_gradients", without_gradients)


@pytest.fixture
def model() -> keras.Model:
    return conv_classifier()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, size=(4, 16, 16, 3)).astype("float32")


def to_numpy(tensor) -> np.ndarray:
    """A backend tensor as numpy, also one that PyTorch tracks for autograd."""
    return keras.ops.convert_to_numpy(keras.ops.stop_gradient(tensor))


def gradient(fn, x: np.ndarray) -> np.ndarray:
    """d sum(fn(x)) / dx by the active backend's own autodiff, independently of keras_cam."""
    backend = keras.backend.backend()
    x = np.asarray(x, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(fn(x))
        return tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: jax.numpy.sum(fn(v)))(jax.numpy.asarray(x)))
    import torch

    tensor = torch.tensor(x, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(tensor).sum(), tensor)
    return grad.detach().cpu().numpy()


def two_epoch_fit(log_dir, methods) -> keras_cam.CAMCallback:
    """A real 2-epoch fit of `conv_classifier` on 8 random images with a CAMCallback over
    `methods` (2 probe images) writing to `log_dir`; returns the callback."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(8, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=8)
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback((x[:2], y[:2]), str(log_dir), method=methods)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    return callback


def read_events(log_dir: str) -> dict[str, dict[int, object]]:
    """Reads every tag of the event files under `log_dir`: {tag: {step: value}}.

    Images come back as lists of decoded uint8 arrays, scalars as floats,
    histograms as (buckets, 3) arrays of [left edge, right edge, count].
    """
    import io

    from PIL import Image
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        log_dir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0}
    )
    accumulator.Reload()
    found: dict[str, dict[int, object]] = {}
    for tag in accumulator.Tags()["tensors"]:
        for event in accumulator.Tensors(tag):
            proto = event.tensor_proto
            if proto.dtype == 7:  # DT_STRING: [width, height, png, png, ...]
                value = [
                    np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
                    for blob in proto.string_val[2:]
                ]
            else:
                from tensorboard.util import tensor_util

                array = tensor_util.make_ndarray(proto)
                value = float(array) if array.size == 1 else array  # histogram: (buckets, 3)
            found.setdefault(tag, {})[event.step] = value
    return found


_OPTION_GROUPS = {
    "explain": (
        "ExplainOptions",
        ("layer", "score", "output", "tokens", "aug_smooth", "eigen_smooth", "batch_size"),
    ),
    "view": (
        "ViewOptions",
        ("images", "max_images", "alpha", "colormap", "normalize", "display", "top_k"),
    ),
    "watch": (
        "WatchOptions",
        (
            "metrics",
            "probe_masks",
            "probe_size",
            "alarms",
            "sanity_check",
            "log_on_train_end",
            "log_metrics",
        ),
    ),
}


def grouped(**flat):
    """CAMCallback keyword arguments from flat option names, for parametrised tests.

    `grouped(max_images=4, layer="conv")` is `{"view": ViewOptions(max_images=4),
    "explain": ExplainOptions(layer="conv")}`; other names pass through.
    """
    import keras_cam

    found = {}
    for group, (kind, fields) in _OPTION_GROUPS.items():
        chosen = {name: flat.pop(name) for name in fields if name in flat}
        if chosen:
            found[group] = getattr(keras_cam, kind)(**chosen)
    return {**flat, **found}


def tiny_retinanet(size=64, num_classes=2):
    """KerasHub's RetinaNetObjectDetector from a config: a 3-stack ResNet, levels P3–P4."""
    import keras_hub
    from keras_hub.src.models.retinanet.retinanet_backbone import RetinaNetBackbone

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 8, 8],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(size, size, 3),
    )
    backbone = RetinaNetBackbone(  # named: an earlier RetinaNet in the process would add "_1"
        image_encoder=encoder,
        min_level=3,
        max_level=4,
        use_p5=False,
        image_shape=(size, size, 3),
        name="retina_net_backbone",
    )
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone,
        num_classes=num_classes,
        bounding_box_format="xyxy",
        pre_logits_num_conv_layers=1,
    )
