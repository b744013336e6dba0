"""Guided backpropagation and Guided Grad-CAM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

from keras_cam.core.capture import all_layers
from keras_cam.core.spatial import map_axes, resize
from keras_cam.methods.base import CAMMethod, Forward
from keras_cam.methods.layer_probe import input_size, layer_gradients, to_channels_last
from keras_cam.methods.registry import gradient_method

_RELUS = (keras.activations.relu, keras.ops.relu)


@ops.custom_gradient
def guided_relu(x: Any) -> Any:
    """ReLU whose gradient passes only positive gradients at positive inputs.

    `∂/∂x = upstream · [x > 0] · [upstream > 0]` (Springenberg et al.).
    """

    def grad(*args, upstream=None):
        if upstream is None:  # TensorFlow and JAX pass it positionally, PyTorch by keyword
            (upstream,) = args
        keep = ops.logical_and(x > 0, upstream > 0)
        return ops.where(keep, upstream, ops.zeros_like(upstream))

    return ops.relu(x), grad


def _is_plain_relu(layer: keras.layers.Layer) -> bool:
    return (
        isinstance(layer, keras.layers.ReLU)
        and layer.max_value is None
        and float(layer.negative_slope) == 0.0
        and float(layer.threshold) == 0.0
    )


@contextlib.contextmanager
def guided_relus(model: keras.Model) -> Iterator[int]:
    """Every ReLU of the model (activations and `ReLU` layers) guided for the block.

    Yields how many were swapped. Only plain ReLUs are, as pytorch-grad-cam
    swaps only `torch.nn.ReLU` (not ReLU6, leaky or thresholded ones).
    """
    activations, calls = [], []
    for layer in all_layers(model).values():
        if getattr(layer, "activation", None) in _RELUS:
            activations.append((layer, layer.activation))
            layer.activation = guided_relu
        elif _is_plain_relu(layer) and "call" not in layer.__dict__:
            calls.append(layer)
            # Set on the instance, bypassing Keras' attribute tracking; removed below.
            object.__setattr__(layer, "call", lambda inputs, *args, **kwargs: guided_relu(inputs))
    try:
        yield len(activations) + len(calls)
    finally:
        for layer, activation in activations:
            layer.activation = activation
        for layer in calls:
            object.__delattr__(layer, "call")


def guided_gradients(forward: Forward, classes: Any) -> Any:
    """The guided-backpropagation gradient `∂S/∂x` (N, *spatial, C), float32 channels-last."""
    with guided_relus(forward.model):
        gradient, _ = layer_gradients(forward, classes, [], with_input=True)
    return to_channels_last(gradient, forward.input_channels_first)


def _saliency(forward: Forward, classes: Any) -> Any:
    return ops.max(ops.abs(guided_gradients(forward, classes)), axis=-1)


class GuidedBackprop(CAMMethod):
    """Guided backpropagation: the input gradient with every ReLU passing only positive signal.

    Springenberg et al., "Striving for Simplicity: The All Convolutional Net",
    ICLR 2015 workshop, arXiv 1412.6806 (pytorch-grad-cam's
    `GuidedBackpropReLUModel`). Backpropagating to the input, each ReLU passes
    the gradient only where its input and the gradient are both positive:

        R_in = R_out · [x > 0] · [R_out > 0],    G = ∂S/∂x with these rules

    `G` is an image (N, H, W, C) at the input's resolution, not a class map
    over a layer: the map shown (`heatmaps`, `raw`) is its magnitude at each
    pixel, `L = max_k |G_k|` (the largest over the input channels, as
    Simonyan et al. show saliency). The signed gradient image is
    `guided_gradients`. Class-discriminative only through the score; the
    explainer's `layer=` is not used. Costs one forward and one backward pass
    through the whole model after the shared forward pass.

    Example:

    >>> keras_cam.explain(model, images, method="guidedbackprop")  # doctest: +SKIP
    """

    name = "guidedbackprop"
    description = "Guided backpropagation (Springenberg et al. 2015): |guided input gradient|."
    paper = "Springenberg et al., ICLR 2015 (workshop)"
    cost = "2 forward + 1 backward (the whole model)"
    uses_gradients = False
    uses_forward = True
    has_channel_contributions = False

    def cam(self, activations, gradients, classes, forward=None):
        return _saliency(forward, classes)


class GuidedGradCAM(CAMMethod):
    """Guided Grad-CAM: guided backpropagation masked by the upsampled Grad-CAM map.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017 (pytorch-grad-cam's
    `GuidedBackpropReLUModel` times its `GradCAM`, as in its example script).
    The base map (Grad-CAM), ReLU'd, scaled to [0, 1] and resized to the
    input, multiplies the guided gradient `G` pixel by pixel; the map is the
    product's magnitude:

        L = max_k |ψ(ReLU(L_Grad-CAM))ˆ ⊙ G_k| = ψ(ReLU(L_Grad-CAM))ˆ ⊙ max_k |G_k|

    with `ψ(m) = (m - min m)/(max m - min m)` and ˆ the resizing. The map is
    at the input's resolution. Costs one forward and one backward pass
    through the whole model after the shared forward and backward pass.

    Args:
        base: the gradient method masking the guided gradient, a registry
            name or instance. Defaults to `"gradcam"`.

    Example:

    >>> keras_cam.explain(model, images, method=["gradcam", "guidedgradcam"])  # doctest: +SKIP
    """

    name = "guidedgradcam"
    description = "Guided Grad-CAM (Selvaraju et al. 2017): guided backprop × upsampled Grad-CAM."
    paper = "Selvaraju et al., ICCV 2017"
    cost = "2 forward + 2 backward (1 forward + 1 backward shared with Grad-CAM)"
    uses_forward = True
    has_channel_contributions = False

    def __init__(self, base: str | CAMMethod = "gradcam") -> None:
        self.base = gradient_method(base)

    def cam(self, activations, gradients, classes, forward=None):
        mask = ops.relu(self.base.cam(activations, gradients, classes, forward))
        axes = map_axes(mask)
        low = ops.min(mask, axis=axes, keepdims=True)
        span = ops.max(mask, axis=axes, keepdims=True) - low
        mask = ops.where(span > 0, (mask - low) / ops.where(span > 0, span, 1.0), 0.0)
        return resize(mask, input_size(forward)) * _saliency(forward, classes)
