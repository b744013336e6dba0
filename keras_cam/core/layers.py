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

The feature maps looked for have the spatial rank of the model's input: a
`Conv2D` image model's are 4-D (N, h, w, C), a `Conv1D` sequence model's 3-D
(N, t, C) and a `Conv3D` volume model's 5-D (N, d, h, w, C). A 3-D layer
output of an image model is a token sequence, never a 1-D map
(`keras_cam.core.capture`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

logger = logging.getLogger("keras_cam")


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
            layer: `keras_cam.core.capture`); `features` and `head` are then None.
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
    """The model's layers in execution order, and in a functional model its operation nodes.

    Keras builds some block outputs with operations rather than layers
    (ConvNeXt's `inputs + x`): such a node is in the functional graph but not
    in `model.layers`, and may be the only cut point at the end of a stage.
    """
    if isinstance(model, keras.Sequential) or not hasattr(model, "operations"):
        members = model.layers
    else:
        members = model.operations
    return [layer for layer in members if not isinstance(layer, keras.layers.InputLayer)]


def _child(model: keras.Model, name: str) -> keras.layers.Layer | None:
    return next((layer for layer in _children(model) if layer.name == name), None)


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


def _output_rank(layer: keras.layers.Layer) -> int:
    return len(output_shape(layer) or ())


def spatial_rank(model: keras.Model) -> int:
    """The spatial axes of the model's feature maps: 1 (sequences), 2 (images) or 3 (volumes).

    The input's: (N, T, C) sequences have 1, (N, D, H, W, C) volumes 3, and
    anything else is an image model (2), also one fed (N, H, W) grayscale
    images that it reshapes to 4-D maps.
    """
    rank = len(model_input_shape(model)) - 2
    if rank == 1 and any(_output_rank(layer) == 4 for _, layer in iter_layers(model)):
        return 2
    return rank if rank in (1, 3) else 2


def _is_spatial(layer: keras.layers.Layer, rank: int) -> bool:
    return _output_rank(layer) == rank + 2


# Per spatial rank: the feature map's rank, its layout, and what the model's inputs are.
_MAP_KINDS = {
    1: ("3-D", "(N, t, C)", "sequences"),
    2: ("4-D", "(N, h, w, C)", "images"),
    3: ("5-D", "(N, d, h, w, C)", "volumes"),
}


def _size_text(sizes: Sequence[int | None]) -> str:
    return "x".join(str(size) for size in sizes)


def iter_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields `(path, layer)` for every layer in execution order, entering nested models."""
    for layer in _children(model):
        path = f"{prefix}{layer.name}"
        if _is_model(layer):
            yield from iter_layers(layer, prefix=f"{path}/")
        yield path, layer


def spatial_layers(model: keras.Model) -> list[str]:
    """Paths of the layers whose output is a feature map, in execution order.

    4-D maps for an image model, 3-D for a sequence model, 5-D for a volume
    model (see `spatial_rank`).
    """
    rank = spatial_rank(model)
    return [path for path, layer in iter_layers(model) if _is_spatial(layer, rank)]


def _node_in_graph(model: keras.Model, layer: keras.layers.Layer) -> Any:
    # Keras has no public view of a functional model's graph nodes (operations such as
    # ConvNeXt's `inputs + x` are nodes but not layers).
    nodes = [
        node
        for depth_nodes in model._nodes_by_depth.values()  # noqa: SLF001
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
    child = _child(model, names[0])
    if child is None:
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
            `None` picks the last feature map (a 4-D output for an image
            model, 3-D for a sequence model, 5-D for a volume model) whose
            activations alone determine the prediction. Defaults to `None`.

    Returns:
        A `LayerSplit`.

    Raises:
        ValueError: the layer is unknown (the message lists the candidates),
            has no spatial output, or the model has no spatial layer.
    """
    _check_splittable(model)
    candidates = spatial_layers(model)
    kind, layout, _ = _MAP_KINDS[spatial_rank(model)]
    if not candidates:
        raise ValueError(
            f"Model {model.name!r} has no layer with a {kind} {layout} output, so there "
            f"is no feature map to explain. keras_cam explains convolutional models "
            f"(Conv2D on images, Conv1D on sequences, Conv3D on volumes) and vision "
            f"transformers."
        )
    if layer is None:
        return _automatic_split(model, candidates)
    paths = dict(iter_layers(model))
    if not isinstance(layer, str):
        layer = _path_of(model, layer, paths)
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
    if layer not in candidates:
        raise ValueError(
            f"Layer {layer!r} has output shape {output_shape(paths[layer])}, not a "
            f"{kind} feature map {layout}. Spatial layers you can pass as `layer=`: "
            f"{', '.join(candidates[-8:])}."
        )
    if _is_point(paths[layer]):
        single = _size_text(spatial_size(paths[layer]))
        warnings.warn(
            f"keras_cam: layer {layer!r} has a {single} spatial output "
            f"{output_shape(paths[layer])}: its maps cannot show where anything is (every "
            f"map is constant). Pass an earlier layer or feed larger "
            f"{_MAP_KINDS[len(spatial_size(paths[layer]))][2]}.",
            UserWarning,
            stacklevel=3,
        )
    return _make_split(model, layer)


def _path_of(model: keras.Model, layer: Any, paths: dict[str, Any]) -> str:
    """The `/`-path of a layer object given as `layer=`."""
    if not isinstance(layer, keras.Operation):
        raise TypeError(
            f"layer must be a layer name, a `/`-path or a layer of the model, got "
            f"{type(layer).__name__}."
        )
    found = [path for path, candidate in paths.items() if candidate is layer]
    if not found:
        raise ValueError(
            f"Layer {layer.name!r} (the object passed as `layer=`) is not a layer of model "
            f"{model.name!r} or of a model nested in it."
        )
    return found[0]


def spatial_size(layer: keras.Operation) -> tuple[int | None, ...]:
    """The spatial dimensions of a layer's feature map (None where the input size is dynamic)."""
    shape = output_shape(layer)
    return shape[2:] if _channels_first(layer) else shape[1:-1]


def _is_point(layer: keras.Operation) -> bool:
    """Whether the feature map has a single position (1x1, length 1, 1x1x1): nothing to localise."""
    return all(size == 1 for size in spatial_size(layer))


def _input_spatial_size(layer: keras.Operation) -> tuple[int | None, ...] | None:
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes or not nodes[-1].input_tensors:
        return None
    shape = tuple(nodes[-1].input_tensors[0].shape)
    return shape[2:] if _channels_first(layer) else shape[1:-1]


def _pools_globally(layer: keras.Operation) -> bool:
    """Whether the layer maps a whole feature map to one position: the start of a head.

    Global pooling does (with `keepdims=True` its output is still 4-D, as in
    MobileNet's head), and so does a stride-1 `valid` convolution or pooling
    whose window covers its whole input (VGG's convolutional `fc1`). A strided
    layer that happens to leave 1x1 at a small input is a backbone stage, not a head.
    """
    if isinstance(layer, _GLOBAL_POOLING):
        return True
    window = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    strides = getattr(layer, "strides", None)
    inputs = _input_spatial_size(layer)
    if window is None or strides is None or inputs is None or None in inputs:
        return False
    if all(size == 1 for size in inputs):
        return False  # a 1x1 convolution on a 1x1 map pools nothing
    return (
        getattr(layer, "padding", None) == "valid"
        and all(stride == 1 for stride in strides)
        and all(w >= size for w, size in zip(window, inputs, strict=False))
    )


def _automatic_split(model: keras.Model, candidates: list[str]) -> LayerSplit:
    """The last feature map before the head: the last cuttable spatial layer larger than 1x1.

    1x1 layers after it are accepted as the head only when a global pooling
    (or a window covering the whole map) made them 1x1; otherwise the
    backbone's last stage itself is 1x1 at this input size, and every map
    would be blank: that is an error naming the layer and what to pass.
    """
    layers_by_path = dict(iter_layers(model))
    # A nested model's output is its last layer's: name the inner layer.
    ordered = [path for path in candidates if not _is_model(layers_by_path[path])]
    backbone = _backbone_prefix(model)
    if backbone is not None and any(path.startswith(backbone) for path in ordered):
        # After a KerasHub backbone come only head layers, even spatial ones (VGG's conv fc).
        last = max(i for i, path in enumerate(ordered) if path.startswith(backbone))
        head = ordered[last + 1 :]
        ordered = ordered[: last + 1] + [path for path in head if _is_point(layers_by_path[path])]
    errors = []
    for index in range(len(ordered) - 1, -1, -1):
        path = ordered[index]
        if _is_point(layers_by_path[path]):
            continue
        try:
            split = _make_split(model, path)
        except ValueError as error:
            errors.append(f"{path}: {error}")
            continue
        if not split.head_layers:
            continue
        later_points = [p for p in ordered[index + 1 :] if _is_point(layers_by_path[p])]
        if later_points and not _pools_globally(layers_by_path[later_points[0]]):
            _raise_point_stage(model, later_points, layers_by_path, earlier=path)
        return split
    points = [p for p in ordered if _is_point(layers_by_path[p])]
    if points:
        _raise_point_stage(model, points, layers_by_path, earlier=None)
    raise ValueError(
        f"None of the spatial layers of model {model.name!r} can be cut off from the "
        f"head: " + "; ".join(errors[:3])
    )


def _backbone_prefix(model: keras.Model) -> str | None:
    """`"<name>/"` of the nested backbone of a KerasHub task (`model.backbone`), if any."""
    backbone = getattr(model, "backbone", None)
    if not _is_model(backbone) or not any(child is backbone for child in _children(model)):
        return None
    return f"{backbone.name}/"


def _raise_point_stage(
    model: keras.Model, points: list[str], layers_by_path: dict[str, Any], earlier: str | None
) -> None:
    head = next((i for i, p in enumerate(points) if _pools_globally(layers_by_path[p])), None)
    # The 1x1 map the head pools: the layer just before a global pooling, or the last one.
    last = points[max(head, 1) - 1] if head is not None else points[-1]
    shape = output_shape(layers_by_path[last])
    earlier_hint = (
        f"pass an earlier layer such as layer={earlier!r} "
        f"({_size_text(spatial_size(layers_by_path[earlier]))}), or "
        if earlier
        else ""
    )
    size = model_input_shape(model)[1:]
    sizes = spatial_size(layers_by_path[last])
    single, double = _size_text([1] * len(sizes)), _size_text([2] * len(sizes))
    inputs = _MAP_KINDS[len(sizes)][2]
    raise ValueError(
        f"The last feature map of model {model.name!r} before its head, {last!r}, is "
        f"{single} (output shape {shape}) at this input size {size}: every class "
        f"activation map would be blank. Either {earlier_hint}feed larger {inputs}, so that "
        f"{last!r} is at least {double} (doubling the input size usually suffices)."
    )


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


_GLOBAL_POOLING = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)


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


def sublayers(layer: Any) -> list[keras.layers.Layer]:
    """The layers that `layer` calls directly; none for an operation node (`inputs + x`)."""
    if not isinstance(layer, keras.layers.Layer):
        return []
    # Keras' only way to list the layers a layer tracks, in the order it made them.
    return list(layer._flatten_layers(include_self=False, recursive=False))  # noqa: SLF001
