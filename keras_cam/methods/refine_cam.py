"""RefineCAM."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_cam.core.capture import all_layers
from keras_cam.core.layers import iter_layers, output_shape, spatial_layers
from keras_cam.core.spatial import map_axes, resize
from keras_cam.methods.base import CAMMethod
from keras_cam.methods.layer_probe import (
    input_size,
    is_channels_first,
    layer_gradients,
    min_max,
    to_channels_last,
)
from keras_cam.methods.registry import gradient_method


def stage_ends(model: keras.Model, coarsest: tuple[int, ...]) -> list[str]:
    """Paths of the last feature-map layer at each resolution finer than `coarsest`.

    The model input's own resolution is left out (a map there is pixel-level
    noise, not a stage's output).
    """
    layers = dict(iter_layers(model))
    rank = len(coarsest)
    input_shape = tuple(model.inputs[0].shape)
    input_sizes = {input_shape[1 : rank + 1], input_shape[2 : rank + 2]}
    last: dict[tuple, str] = {}
    for path in spatial_layers(model):  # in execution order: the last of each size wins
        shape = output_shape(layers[path])
        last[tuple(shape[2:] if is_channels_first(layers[path]) else shape[1:-1])] = path
    return [
        path
        for size, path in last.items()
        if None not in size
        and size not in input_sizes
        and all(s > c for s, c in zip(size, coarsest, strict=True))
    ]


def find_layers(model: keras.Model, names: Sequence[str]) -> list[keras.layers.Layer]:
    """The layers of `model` named by `/`-path or by a name that only one layer has."""
    found = all_layers(model)
    by_name: dict[str, list] = {}
    for path, layer in found.items():
        by_name.setdefault(path.rsplit("/", 1)[-1], []).append(layer)
    chosen = []
    for name in names:
        layer = found.get(name)
        if layer is None and len(by_name.get(name, ())) == 1:
            layer = by_name[name][0]
        if layer is None:
            raise ValueError(
                f"RefineCAM: model {model.name!r} has no single layer {name!r}; pass "
                f"layers by name or `/`-path, e.g. {spatial_layers(model)[-3:]}."
            )
        chosen.append(layer)
    return chosen


class RefineCAM(CAMMethod):
    """RefineCAM: the product of a base method's maps at several layers.

    ICPR 2026, arXiv 2605.14641 (pytorch-grad-cam's `RefineCAM`). The base
    method (Grad-CAM++ by default) gives a map at each layer `l`; each is
    ReLU'd, resized to the input and scaled to [0, 1] (`ψ`), and their
    product keeps what every layer agrees on, which denoises the sharp but
    noisy maps of early layers with the coarse maps of late ones:

        L = Π_l ψ(ReLU(L_base^l))ˆ,    ψ(m) = (m - min m)/(max(m - min m) + 1e-7)

    The layers are the explainer's target layer (`layer=`, the last feature
    map by default) and `layers`. With `layers=None` they are the last layer
    of each resolution stage between the input and the target layer (for a
    ResNet50: `conv2_block3_out`, `conv3_block4_out`, `conv4_block6_out`);
    a model whose feature maps all keep one resolution has none, and its
    RefineCAM is the base method at the target layer. Every layer's
    activations and gradients come from one more forward and backward pass.
    The map is at the model input's resolution.

    Args:
        layers: names or `/`-paths of the other layers, or `None`. Defaults
            to `None`.
        base: a gradient method, a registry name or instance. Defaults to
            `"gradcam++"` (pytorch-grad-cam's).

    Example:

    >>> from keras_cam.methods import RefineCAM
    >>> keras_cam.explain(model, images, method="refinecam")  # doctest: +SKIP
    >>> method = RefineCAM(layers=["conv3_block4_out"], base="gradcam")
    >>> keras_cam.explain(model, images, method=method, layer="conv5_block3_out")  # doctest: +SKIP
    """

    name = "refinecam"
    description = "RefineCAM (2026): the product of a base method's maps at several layers."
    paper = "ICPR 2026, arXiv 2605.14641"
    cost = "2 forward + 2 backward (1 forward + 1 backward shared)"
    uses_forward = True
    has_channel_contributions = False

    def __init__(
        self, layers: Sequence[str] | None = None, base: str | CAMMethod = "gradcam++"
    ) -> None:
        if isinstance(layers, str) or not (
            layers is None or all(isinstance(layer, str) for layer in layers)
        ):
            raise ValueError(
                f"layers must be a list of layer names or paths, or None, got {layers!r}."
            )
        self.layers = None if layers is None else tuple(layers)
        self.base = gradient_method(base)

    def _layers(self, model: keras.Model, target_size: tuple[int, ...]) -> list:
        names = stage_ends(model, target_size) if self.layers is None else self.layers
        return find_layers(model, names)

    def _map(self, activations, gradients, classes, size):
        # As pytorch-grad-cam: scaled, resized, and scaled again (the resizing's extremes).
        signed = self.base.cam(activations, gradients, classes)
        scaled = min_max(ops.relu(signed), map_axes(signed))
        return min_max(resize(scaled, size), map_axes(signed))

    def cam(self, activations, gradients, classes, forward=None):
        size = input_size(forward)
        refined = self._map(activations, gradients, classes, size)
        layers = self._layers(forward.model, tuple(activations.shape[1:-1]))
        if not layers:  # one resolution throughout: the base method's map alone
            return refined
        _, probed = layer_gradients(forward, classes, layers)
        for layer, (output, gradient) in zip(layers, probed, strict=True):
            channels_first = is_channels_first(layer)
            if len(output.shape) != len(size) + 2:
                raise ValueError(
                    f"RefineCAM: layer {layer.name!r} outputs shape {tuple(output.shape)}, "
                    f"not a feature map of the input's rank."
                )
            a, g = (to_channels_last(t, channels_first) for t in (output, gradient))
            refined = refined * self._map(a, g, classes, size)
        return refined
