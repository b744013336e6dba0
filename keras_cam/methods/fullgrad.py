"""FullGrad."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_cam.core.capture import all_layers
from keras_cam.core.layers import output_shape
from keras_cam.core.spatial import resize, spatial_axes
from keras_cam.methods.base import CAMMethod
from keras_cam.methods.layer_probe import (
    input_size,
    is_channels_first,
    layer_gradients,
    min_max,
    to_channels_last,
)

_CONVOLUTIONS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def bias_layers(model: keras.Model, rank: int) -> list[keras.layers.Layer]:
    """The convolutions with a bias and the batch normalisations with `rank`-D spatial output."""
    return [
        layer
        for layer in all_layers(model).values()
        if (
            (isinstance(layer, _CONVOLUTIONS) and layer.use_bias)
            or isinstance(layer, keras.layers.BatchNormalization)
        )
        and len(output_shape(layer) or ()) == rank + 2
    ]


def effective_bias(layer: keras.layers.Layer) -> Any:
    """A convolution's bias; a batch normalisation's `β - μ·γ/√(σ² + ε)` (its output at x = 0)."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return ops.cast(layer.bias, "float32")
    mean = ops.cast(layer.moving_mean, "float32")
    scale = ops.rsqrt(ops.cast(layer.moving_variance, "float32") + layer.epsilon)
    if layer.scale:
        scale = scale * ops.cast(layer.gamma, "float32")
    beta = ops.cast(layer.beta, "float32") if layer.center else 0.0
    return beta - mean * scale


class FullGrad(CAMMethod):
    """FullGrad: the input-gradient and every layer's bias-gradient, summed at input resolution.

    Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
    Visualization", NeurIPS 2019, arXiv 1905.00780 (pytorch-grad-cam's
    `FullGrad`). The score decomposes exactly into the input-gradient term
    and one bias-gradient term per bias `b` of every layer; each term is
    made a map by `ψ` (absolute value, scaled to [0, 1] per channel, resized
    to the input) and the maps are summed:

        L = Σ_k ψ(|∂S/∂x ⊙ x|_k) + Σ_layers Σ_c ψ(|b_c · ∂S/∂z_c|)

    where `z` is the layer's output before its activation (a convolution's,
    with its bias) or a batch normalisation's output, whose bias is
    `β - μ·γ/√(σ² + ε)`; `ψ(m) = (m - min m)/(max(m - min m) + 1e-7)`. The
    layers are every convolution with a bias and every batch normalisation
    with a feature-map output; the explainer's `layer=` is not used. As in
    the paper's formula and pytorch-grad-cam, `ψ` scales each channel on its
    own (the authors' code scales each layer's channels together). The sum
    over channels is taken before resizing (linear, so the same map at a
    channel's cost). The map is at the model input's resolution. Costs one
    forward and one backward pass through the whole model after the shared
    forward pass.

    Example:

    >>> keras_cam.explain(model, images, method="fullgrad")  # doctest: +SKIP
    """

    name = "fullgrad"
    description = "FullGrad (Srinivas & Fleuret 2019): input- and bias-gradients of all layers."
    paper = "Srinivas & Fleuret, NeurIPS 2019"
    cost = "2 forward + 1 backward (the whole model)"
    uses_gradients = False  # its own gradients, at every bias layer and the input
    uses_forward = True
    has_channel_contributions = False

    def cam(self, activations, gradients, classes, forward=None):
        size = input_size(forward)
        layers = bias_layers(forward.model, len(size))
        input_gradient, probed = layer_gradients(
            forward, classes, layers, with_input=True, pre_activation=True
        )
        channels_first = forward.input_channels_first
        inputs = to_channels_last(forward.inputs, channels_first)
        saliency = ops.abs(to_channels_last(input_gradient, channels_first) * inputs)
        total = ops.sum(min_max(saliency, spatial_axes(saliency)), axis=-1)
        for layer, (_, gradient) in zip(layers, probed, strict=True):
            gradient = to_channels_last(gradient, is_channels_first(layer))
            contribution = ops.abs(gradient * effective_bias(layer))
            scaled = ops.sum(min_max(contribution, spatial_axes(contribution)), axis=-1)
            total = total + resize(scaled, size)
        return total
