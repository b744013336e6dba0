"""Gradients of the score at layers other than the target and at the model input.

FullGrad reads every bias layer, RefineCAM several layers, guided
backpropagation the input. Each layer's output (or, for a layer with an
activation, its pre-activation) gets a zero tensor added while the model runs
through `Forward.score_inputs`; the gradient with respect to those zeros is
the gradient with respect to that tensor, on every backend, from one forward
and one backward pass (`compute.probe_gradients`). The layers are changed
only while the pass runs, and put back.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import keras
from keras import ops

from keras_cam.compute import backend_module
from keras_cam.core.capture import hooked
from keras_cam.core.layers import output_shape
from keras_cam.core.spatial import channels_last
from keras_cam.methods.base import Forward


def input_size(forward: Forward) -> tuple[int, ...]:
    """The spatial size of the model input `forward.inputs`."""
    shape = tuple(forward.inputs.shape)
    return shape[2:] if forward.input_channels_first else shape[1:-1]


def to_channels_last(tensor: Any, channels_first: bool) -> Any:
    """A float32 channels-last copy of `tensor` (N, C, *spatial) or (N, *spatial, C)."""
    tensor = ops.cast(tensor, "float32")
    return channels_last(tensor) if channels_first else tensor


def is_channels_first(layer: keras.layers.Layer) -> bool:
    """Whether the layer's output has its channels on axis 1 (a conv or batch normalisation)."""
    axis = getattr(layer, "axis", None)
    if isinstance(axis, (list, tuple)):
        axis = axis[0] if len(axis) == 1 else None
    if axis is not None and getattr(layer, "data_format", None) is None:
        return axis == 1
    data_format = getattr(layer, "data_format", None) or keras.config.image_data_format()
    return data_format == "channels_first"


def _batch_shape(layer: keras.layers.Layer, count: int) -> tuple[int, ...]:
    shape = output_shape(layer)
    if shape is None or any(size is None for size in shape[1:]):
        raise ValueError(
            f"Layer {layer.name!r} has no fixed symbolic output shape ({shape}); build the "
            f"model on an input of fixed size to explain it with this method."
        )
    return (count, *(int(size) for size in shape[1:]))


@contextlib.contextmanager
def _shifted(
    layers: Sequence[keras.layers.Layer], deltas: Sequence[Any], pre_activation: bool
) -> Iterator[list[list[Any]]]:
    """Adds `deltas[i]` to layer i's output (or pre-activation); yields what each recorded."""
    recorded: list[list[Any]] = [[] for _ in layers]
    hooks, saved = {}, []
    for index, (layer, delta) in enumerate(zip(layers, deltas, strict=True)):
        activation = getattr(layer, "activation", None)
        if pre_activation and callable(activation):

            def shifted(y, _activation=activation, _delta=delta, _index=index):
                y = y + _delta
                recorded[_index].append(y)
                return _activation(y)

            saved.append((layer, activation))
            layer.activation = shifted
        else:
            hooks[layer] = lambda output, _delta=delta: output + _delta
    try:
        with hooked(hooks) as calls:
            yield recorded
            for index, layer in enumerate(layers):
                if layer in calls:
                    recorded[index].extend(calls[layer])
    finally:
        for layer, activation in saved:
            layer.activation = activation


def layer_gradients(
    forward: Forward,
    classes: Any,
    layers: Sequence[keras.layers.Layer],
    with_input: bool = False,
    pre_activation: bool = False,
) -> tuple[Any, list[tuple[Any, Any]]]:
    """The score's gradients at the input and at each layer, from one forward and backward pass.

    Args:
        forward: the explainer's `Forward` (its `score_inputs` runs the model).
        classes: the class (or task index) explained for each item (N,).
        layers: the layers whose output gradient is wanted; each must run
            once per call of the model.
        with_input: whether to return the gradient at the model input too.
        pre_activation: for layers with an `activation` (Conv2D(...,
            activation="relu")), the tensor before it, where the bias is added.

    Returns:
        `(input gradient or None, [(output, gradient) per layer])`, all in the
        layers' own layout and dtype.
    """
    count = int(forward.inputs.shape[0])
    zeros = [ops.zeros_like(forward.inputs)] if with_input else []
    zeros += [ops.zeros(_batch_shape(layer, count), layer.compute_dtype) for layer in layers]
    first = 1 if with_input else 0

    def run(x, deltas):
        if with_input:
            x = x + deltas[0]
        with _shifted(layers, deltas[first:], pre_activation) as recorded:
            scores = forward.score_inputs(x, classes)
        for layer, outputs in zip(layers, recorded, strict=True):
            if len(outputs) != 1:
                raise ValueError(
                    f"Layer {layer.name!r} ran {len(outputs)} times in one call of the model; "
                    f"each layer read by this method must run exactly once."
                )
        return [outputs[0] for outputs in recorded], scores

    captured, gradients, _ = _compute().probe_gradients(
        run, forward.inputs, lambda scores: scores, zeros
    )
    input_gradient = gradients[0] if with_input else None
    return input_gradient, list(zip(captured, gradients[first:], strict=True))


def _compute() -> Any:
    """The backend's compute module, imported already by the explainer that traces us.

    Read from `sys.modules`: `importlib` called inside a `tf.function` trace makes
    autograph warn that it cannot convert `_gcd_import`.
    """
    return sys.modules.get(f"keras_cam.compute.{keras.backend.backend()}") or backend_module()


def min_max(maps: Any, axes: tuple[int, ...], epsilon: float = 1e-7) -> Any:
    """`(m - min) / (max - min + epsilon)` over `axes` (pytorch-grad-cam's `scale_cam_image`)."""
    shifted = maps - ops.min(maps, axis=axes, keepdims=True)
    return shifted / (ops.max(shifted, axis=axes, keepdims=True) + epsilon)
