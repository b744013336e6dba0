"""Finding the target layer and splitting the model there, once.

The explainer needs the model as two callables: `features` (input -> the
target layer's activations) and `head` (activations -> model output), so the
gradient of the score with respect to the activations costs one forward pass
plus a backward pass through the head only, on every backend. Splitting uses
Keras' own graph: a functional model accepts intermediate tensors as inputs
and outputs, and a Sequential model is a list of layers. Nested models
(`Sequential([base_model, GlobalAveragePooling2D(), Dense(k)])`) are split
recursively. No layer is called on new symbolic inputs: the user's graph,
each layer's `.output` and the model's config stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

logger = logging.getLogger("keras_cam")

_SPATIAL_RANK = 4


@dataclass(frozen=True)
class LayerSplit:
    """A model cut at its target layer.

    Attributes:
        path: `/`-separated path of the target layer (e.g.
            `"resnet50/conv5_block3_out"`).
        layer: the target layer itself.
        features: callable, model input -> the target layer's activations.
        head: callable, activations -> model output.
        head_layers: the layers after the target, in execution order,
            nested models flattened.
        channels_first: whether the activations are (N, C, h, w).
        capture: set when the layer is explained by capturing its output
            inside the model's call (token layers, layers called inside a
            layer: `keras_cam.capture`); `features` and `head` are then None.
    """

    path: str
    layer: keras.layers.Layer
    features: Callable[..., Any]
    head: Callable[..., Any]
    head_layers: list[keras.layers.Layer]
    channels_first: bool
    capture: Any = None

    @property
    def output_layer(self) -> keras.layers.Layer:
        """The layer that produces the model's output."""
        return self.head_layers[-1]


@dataclass
class _Chain:
    """Calls its steps one after another (a split Sequential model)."""

    steps: list[Callable[..., Any]] = field(default_factory=list)

    def __call__(self, x: Any, training: bool = False) -> Any:
        for step in self.steps:
            x = step(x, training=training)
        return x


def _is_model(layer: Any) -> bool:
    return isinstance(layer, keras.Model)


def _children(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _check_splittable(model: keras.Model) -> None:
    if isinstance(model, keras.Sequential):
        return
    if not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model, whose layer graph Keras cannot "
            f"read, so it cannot be cut at an inner layer. Build it as a functional or "
            f"Sequential model (a subclassed layer inside one is fine)."
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.inputs)} inputs; keras_cam explains "
            f"models with one image input."
        )


def output_shape(layer: keras.layers.Layer) -> tuple[int | None, ...] | None:
    """The symbolic output shape of a layer, or None when it has none."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        # A Sequential model rebuilt several times leaves several nodes on its
        # layers; all of them have the same shape.
        nodes = getattr(layer, "_inbound_nodes", None)
        if not nodes or len(nodes[-1].output_tensors) != 1:
            return None
        return tuple(nodes[-1].output_tensors[0].shape)


def _is_spatial(layer: keras.layers.Layer) -> bool:
    shape = output_shape(layer)
    return shape is not None and len(shape) == _SPATIAL_RANK


def iter_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields `(path, layer)` for every layer in execution order, entering nested models."""
    for layer in _children(model):
        path = f"{prefix}{layer.name}"
        if _is_model(layer):
            yield from iter_layers(layer, prefix=f"{path}/")
        yield path, layer


def spatial_layers(model: keras.Model) -> list[str]:
    """Paths of the layers whose output is a 4-D feature map, in execution order."""
    return [path for path, layer in iter_layers(model) if _is_spatial(layer)]


def _node_in_graph(model: keras.Model, layer: keras.layers.Layer) -> Any:
    nodes = [
        node
        for depth_nodes in model._nodes_by_depth.values()
        for node in depth_nodes
        if node.operation is layer
    ]
    if len(nodes) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is called {len(nodes)} times in model {model.name!r}; "
            f"a target layer (or the nested model holding it) must be called exactly once."
        )
    return nodes[0]


def _functional_piece(model: keras.Model, inputs: Any, outputs: Any) -> Callable[..., Any]:
    if inputs is outputs:
        return _Chain()
    return keras.Model(inputs, outputs, name=f"{model.name}_cam_piece")


def _flat_layers(piece: Any) -> list[keras.layers.Layer]:
    if isinstance(piece, _Chain):
        return [leaf for step in piece.steps for leaf in _flat_layers(step)]
    if _is_model(piece):
        return [leaf for child in _children(piece) for leaf in _flat_layers(child)]
    return [piece] if isinstance(piece, keras.layers.Layer) else []


def _flattened(outputs: Any, training: bool = False) -> list[Any]:
    """A nested model's output structure as the flat list its node's output tensors follow."""
    return keras.tree.flatten(outputs)


def _split(model: keras.Model, names: Sequence[str], path: str) -> tuple[Any, Any]:
    """Returns (features, head) for the layer at `names` inside `model`.

    The model may have several outputs (the head then returns the same
    structure, and `output=` picks one); a nested model with several outputs
    (a detector's feature pyramid) passes all of them on to the rest of the
    graph, as a list.
    """
    _check_splittable(model)
    try:
        child = model.get_layer(names[0])
    except ValueError:
        child = None
    if child is None or isinstance(child, keras.layers.InputLayer):
        raise ValueError(f"No layer named {names[0]!r} in model {model.name!r}.")
    if len(names) > 1:
        if not _is_model(child):
            raise ValueError(f"{names[0]!r} in {path!r} is a layer, not a nested model.")
        inner_features, inner_head = _split(child, names[1:], path)
    else:
        inner_features, inner_head = child, _Chain()

    if isinstance(model, keras.Sequential):
        children = _children(model)
        index = next(i for i, layer in enumerate(children) if layer is child)
        features = _Chain([*children[:index], inner_features])
        head = _Chain([inner_head, *children[index + 1 :]])
        return features, head

    # A leaf layer is cut after its output; a nested model is replaced by its own split.
    leaf = len(names) == 1 and not _is_model(child)
    node = _node_in_graph(model, child)
    several = not leaf and len(node.output_tensors) > 1
    cut_out = list(node.output_tensors) if several else node.output_tensors[0]
    cut_in = cut_out if leaf else node.input_tensors[0]
    try:
        before = _functional_piece(model, model.inputs[0], cut_in)
        # One output as a tensor, even when given as a one-element list or dict.
        outputs = model.output if len(model.outputs) > 1 else model.outputs[0]
        after = _functional_piece(model, cut_out, outputs)
    except ValueError as error:
        raise ValueError(
            f"The model's output does not depend on {path!r} alone (Keras says: {error}). "
            f"Grad-CAM needs a layer that every path from input to output goes through, "
            f"such as a block's output rather than a layer inside a residual branch."
        ) from error
    if leaf:
        return before, after
    if several:
        return _Chain([before, inner_features]), _Chain([inner_head, _flattened, after])
    return _Chain([before, inner_features]), _Chain([inner_head, after])


def _channels_first(layer: keras.layers.Layer) -> bool:
    if _is_model(layer):
        leaves = _flat_layers(layer)
        layer = leaves[-1] if leaves else layer
    data_format = getattr(layer, "data_format", None) or keras.config.image_data_format()
    return data_format == "channels_first"


def split_model(model: keras.Model, layer: str | None = None) -> LayerSplit:
    """Finds the target layer and cuts the model there.

    Args:
        model: a built Keras functional or Sequential model, possibly with
            nested models.
        layer: name of the target layer, or a `/`-path into nested models.
            `None` picks the last layer with a 4-D output whose activations
            alone determine the prediction. Defaults to `None`.

    Returns:
        A `LayerSplit`.

    Raises:
        ValueError: the layer is unknown (the message lists the candidates),
            has no spatial output, or the model has no spatial layer.
    """
    _check_splittable(model)
    candidates = spatial_layers(model)
    if not candidates:
        raise ValueError(
            f"Model {model.name!r} has no layer with a 4-D (spatial) output, so there is "
            f"no feature map to explain. keras_cam explains convolutional image models."
        )
    if layer is None:
        errors = []
        layers_by_path = dict(iter_layers(model))
        # A nested model's output is its last layer's: name the inner layer.
        for path in [p for p in reversed(candidates) if not _is_model(layers_by_path[p])]:
            try:
                split = _make_split(model, path)
            except ValueError as error:
                errors.append(f"{path}: {error}")
                continue
            if split.head_layers:
                return split
        raise ValueError(
            f"None of the spatial layers of model {model.name!r} can be cut off from the "
            f"head: " + "; ".join(errors[:3])
        )

    paths = dict(iter_layers(model))
    if layer not in paths:
        by_name = [path for path in paths if path.rsplit("/", 1)[-1] == layer]
        if len(by_name) == 1:
            layer = by_name[0]
        else:
            raise ValueError(
                f"No layer {layer!r} in model {model.name!r}. Spatial layers you can pass "
                f"as `layer=`: {', '.join(candidates[-8:])}."
            )
    if not _is_spatial(paths[layer]):
        raise ValueError(
            f"Layer {layer!r} has output shape {output_shape(paths[layer])}, not a 4-D "
            f"feature map. Spatial layers you can pass as `layer=`: "
            f"{', '.join(candidates[-8:])}."
        )
    return _make_split(model, layer)


def _make_split(model: keras.Model, path: str) -> LayerSplit:
    features, head = _split(model, path.split("/"), path)
    target = dict(iter_layers(model))[path]
    return LayerSplit(
        path=path,
        layer=target,
        features=features,
        head=head,
        head_layers=_flat_layers(head),
        channels_first=_channels_first(target),
    )


def model_input_shape(model: keras.Model) -> tuple[int | None, ...]:
    """The model's input shape including the batch axis."""
    return tuple(model.inputs[0].shape)


_GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


@dataclass(frozen=True)
class PooledHead:
    """A head that starts with global pooling, optionally followed by a Dense layer.

    Attributes:
        pooling: the global average or max pooling layer right after the target.
        dense: the Dense layer right after the pooling, or None.
        rest: callable, the layers after `dense` (after `pooling` when there
            is no `dense`) -> model output.
    """

    pooling: keras.layers.Layer
    dense: keras.layers.Dense | None
    rest: Callable[..., Any]


def _split_after(model: keras.Model, layer: keras.layers.Layer) -> Callable[..., Any] | None:
    path = next(path for path, candidate in iter_layers(model) if candidate is layer)
    try:
        return _split(model, path.split("/"), path)[1]
    except ValueError:
        return None


def pooled_head(model: keras.Model, split: LayerSplit) -> PooledHead | None:
    """The head's global pooling (and Dense) prefix, when the model can be cut after it.

    Zeroing a channel commutes with global average and max pooling, and
    through a Dense layer it is a rank-1 update of the Dense output, so
    Ablation-CAM can ablate channels without re-running either.
    """
    layers = split.head_layers
    if not layers or not isinstance(layers[0], _GLOBAL_POOLING) or layers[0].keepdims:
        return None
    if len(layers) > 1 and isinstance(layers[1], keras.layers.Dense):
        rest = _split_after(model, layers[1])
        if rest is not None:
            return PooledHead(layers[0], layers[1], rest)
    rest = _split_after(model, layers[0])
    return PooledHead(layers[0], None, rest) if rest is not None else None
