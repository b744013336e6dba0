"""Explaining a layer by capturing its output during the model's own call.

KerasHub encoders are one Keras layer that calls its transformer blocks in
Python (`vit_encoder` -> `transformer_block_1`, ...), so the blocks are not
nodes of the functional graph and the model cannot be cut there. Instead the
target layer's `call` is wrapped, only while the explainer runs the model:
the wrapper records the output and returns `output + zeros`. The gradient
of the score with respect to those zeros is the gradient with respect to the
layer's output, on `tf.GradientTape`, `jax.grad` and `torch.autograd.grad`
alike, inside the one compiled function. The same wrapper, returning
`output * keep`, re-runs the model with channels ablated (Ablation-CAM).

A token layer's (N, T, D) output is shown on its patch grid
(`keras_cam.core.tokens`), or rearranged by the user's `tokens=` function.

The default layer of a token model is the last block or normalisation
output that carries gradient on the patch tokens and is not *scale-blind*.
A tensor that reaches the score only through a per-token normalisation
(LayerNorm: `f(s·x) = f(x)`) has, by Euler's theorem, a gradient orthogonal
to its activation at every token, so HiResCAM is zero there and Grad-CAM
keeps only noise. That is the case of a block's output followed by the
final LayerNorm (mean pooling) and of the last block's input when the head
reads only the class token (its patch tokens reach the score only through
the block's first LayerNorm). The normalisation's output is the map to
explain: the final norm for mean pooling, the last block's first norm for a
class token (pytorch-grad-cam's recipe for ViTs).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_cam.core.layers import (
    LayerSplit,
    iter_layers,
    model_input_shape,
    output_shape,
    spatial_rank,
    sublayers,
)
from keras_cam.core.scores import head_layer, linear_output
from keras_cam.core.spatial import per_channel
from keras_cam.core.tokens import (
    GridContradiction,
    TokenGrid,
    TokenLayout,
    check_grid,
    detect_grid,
    map_channels,
)

Transform = Callable[[Any], Any]

# Layers that only normalise or drop out a block's output: never the block itself.
_NOT_BLOCKS = (
    keras.layers.LayerNormalization,
    keras.layers.BatchNormalization,
    keras.layers.Dropout,
    keras.layers.Activation,
    keras.layers.Identity,
)

# Per-token normalisations, invariant to each token's scale: their outputs are candidates,
# since their inputs are scale-blind when nothing else reads them.
_TOKEN_NORMALISATIONS = (
    keras.layers.LayerNormalization,
    keras.layers.RMSNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)

# Behind a LayerNorm, |cos(gradient, activation)| is epsilon / (variance + epsilon) at each
# position instead of Euler's exact zero (about 1e-3 for Keras' default epsilon on unit
# variance); random directions give about 1 / sqrt(channels) (0.04 for 768). The 90th
# percentile is judged, so that a few near-constant positions do not decide.
_BLIND_COSINE = 0.01


def _is_model(layer: Any) -> bool:
    return isinstance(layer, keras.Model)


def graph_layers(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """`(path, layer)` of the model's graph layers in execution order, nested models entered."""
    return [(path, layer) for path, layer in iter_layers(model) if not _is_model(layer)]


def all_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Every layer by `/`-path: graph layers and, below them, the layers they call."""
    found = {}

    def walk(path: str, layer: keras.layers.Layer) -> None:
        found.setdefault(path, layer)
        for sub in sublayers(layer):
            walk(f"{path}/{sub.name}", sub)

    for path, layer in graph_layers(model):
        walk(path, layer)
    return found


def _output_if_single(layer: Any) -> Any:
    try:
        return layer.output
    except (AttributeError, ValueError):  # shared layers have several outputs
        return None


def is_token_model(model: keras.Model) -> bool:
    """An image model whose last feature maps are token sequences (N, T, D), not (N, h, w, C)."""
    if len(model_input_shape(model)) != 4:
        return False
    # A 3-D model output is a dense prediction (a detector's per-anchor scores), not tokens.
    outputs = {id(tensor) for tensor in keras.tree.flatten(model.outputs)}
    ranks = [
        0 if id(_output_if_single(layer)) in outputs else len(shape or ())
        for layer, shape in (
            (layer, _first_output_shape(layer)) for _, layer in graph_layers(model)
        )
    ]
    last_spatial = max((i for i, rank in enumerate(ranks) if rank == 4), default=-1)
    return any(rank == 3 for rank in ranks[last_spatial + 1 :])


def _image_size(model: keras.Model) -> tuple[int, int]:
    shape = model_input_shape(model)
    channels_first = keras.config.image_data_format() == "channels_first" or (
        shape[-1] not in (1, 3, 4) and shape[1] in (1, 3, 4)
    )
    size = shape[2:4] if channels_first else shape[1:3]
    if None in size:
        raise ValueError(
            f"Model {model.name!r} takes images of unknown size {shape}; a token map needs "
            f"the input's height and width. Build the model with a fixed image shape."
        )
    return int(size[0]), int(size[1])


def call_model(model: keras.Model, x: Any) -> Any:
    """Calls the model on one image tensor, also when it takes its image as a one-entry dict."""
    structure = model.input
    if isinstance(structure, dict) and len(structure) == 1:
        x = {next(iter(structure)): x}
    return model(x, training=False)


@contextlib.contextmanager
def hooked(transforms: dict[keras.layers.Layer, Transform | None]) -> Iterator[dict[Any, list]]:
    """Wraps each layer's `call` for the block: records its output, returns `transform(output)`.

    Yields a dict layer -> list of the outputs recorded so far. A layer
    returning a tuple (DINOv2's encoder returns its per-layer outputs too)
    is captured and transformed on its first element.
    """
    recorded: dict[Any, list] = {layer: [] for layer in transforms}
    # A `call` already set on the instance (scores.linear_output sets one) is put back.
    previous = {layer: layer.__dict__.get("call") for layer in transforms}
    for layer, transform in transforms.items():
        original = layer.call

        def call(*args, _original=original, _layer=layer, _transform=transform, **kwargs):
            outputs = _original(*args, **kwargs)
            several = isinstance(outputs, (tuple, list))
            first = outputs[0] if several else outputs
            recorded[_layer].append(first)
            changed = first if _transform is None else _transform(first)
            return (changed, *outputs[1:]) if several else changed

        # Set on the instance, bypassing Keras' attribute tracking; removed below.
        object.__setattr__(layer, "call", call)
    try:
        yield recorded
    finally:
        for layer, call in previous.items():
            if call is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", call)


def _single(recorded: list, path: str) -> Any:
    if len(recorded) != 1:
        raise ValueError(
            f"Layer {path!r} ran {len(recorded)} times in one call of the model; a target "
            f"layer must run exactly once."
        )
    return recorded[0]


@dataclass(frozen=True)
class CapturedLayer:
    """A target layer explained by capturing its output inside the model's call.

    Attributes:
        model: the model.
        path: `/`-path of the layer.
        layer: the layer.
        grid: how its output becomes the map: a `TokenGrid` or a function
            (`tokens=`), or None for an (N, h, w, C) map.
        item_shape: its output shape without the batch axis.
        dtype: its output dtype.
        channels: with a `grid`, the map channel of each output entry (-1
            where it is not in the map), as `tokens.map_channels` gives.
    """

    model: keras.Model
    path: str
    layer: keras.layers.Layer
    grid: TokenLayout | None
    item_shape: tuple[int, ...]
    dtype: str
    channels: np.ndarray | None = None

    def run(self, x: Any, transform: Transform | None = None) -> tuple[Any, Any]:
        """Model outputs for `x`, and the layer's output, changed by `transform` on the way."""
        with hooked({self.layer: transform}) as recorded:
            outputs = call_model(self.model, x)
        return _single(recorded[self.layer], self.path), outputs

    def to_map(self, captured: Any) -> Any:
        """The captured output as a channels-last feature map."""
        return captured if self.grid is None else self.grid(captured)

    def map_of(self, values: np.ndarray) -> np.ndarray:
        """`to_map` on a numpy array of the layer's output shape."""
        return ops.convert_to_numpy(self.to_map(ops.convert_to_tensor(values)))

    def activations_and_gradients(
        self, compute: Any, x: Any, score_fn: Callable[[Any], Any], need_gradients: bool
    ) -> tuple[Any, Any, Any]:
        """`(map, d score / d map or None, outputs)`, from one forward and one backward pass."""
        if not need_gradients:
            captured, outputs = self.run(x)
            return self.to_map(captured), None, outputs
        zeros = ops.zeros((x.shape[0], *self.item_shape), self.dtype)

        def run(x, zeros):
            captured, outputs = self.run(x, lambda output: output + zeros[0])
            return [captured], outputs

        (captured,), (gradients,), outputs = compute.probe_gradients(run, x, score_fn, [zeros])
        return self.to_map(captured), self.to_map(gradients), outputs

    def ablated_outputs(self, x: Any, keep: Any) -> Any:
        """Model outputs with the map's channels scaled by `keep` (B, C) per item."""
        if self.grid is None:
            scale = per_channel(keep, len(self.item_shape) - 1)
        else:
            # Entries outside the map (prefix tokens) index the appended column of ones.
            channels = np.where(self.channels < 0, keep.shape[-1], self.channels)
            keep = ops.concatenate([keep, ops.ones_like(keep[:, :1])], axis=-1)
            scale = ops.take(keep, ops.convert_to_tensor(channels), axis=1)
        return self.run(x, lambda output: output * ops.cast(scale, output.dtype))[1]


def sample_input(model: keras.Model, purpose: str = "capturing an inner layer") -> Any:
    """One random input of the model's fixed shape, to trace a probe call with.

    Raises:
        ValueError: the input shape is not fixed; the message says `purpose` needs it.
    """
    shape = model_input_shape(model)
    if None in shape[1:]:
        raise ValueError(
            f"Model {model.name!r} takes input of unknown shape {shape}; {purpose} "
            f"needs a fixed input shape. Build the model with one."
        )
    sample = np.random.default_rng(0).normal(size=(1, *shape[1:]))
    return ops.convert_to_tensor(sample.astype(model.inputs[0].dtype or "float32"))


def _probe(model: keras.Model, layers: dict[str, keras.layers.Layer], compute: Any):
    """Runs one random image; returns path -> (output, gradient of a mix of the logits).

    Only layers that run exactly once are returned, in the order their calls
    returned (a block's normalisations before the block). The first, recording
    pass only gives the shapes of the zeros: under JAX it is traced and
    dropped from the one compiled probe.
    """

    # A random mix of the logits: a sum of softmax outputs would be constant.
    mix = np.random.default_rng(0).normal(size=model.outputs[0].shape[-1]).astype("float32")

    def score(outputs):
        return ops.sum(ops.cast(outputs, "float32") * ops.convert_to_tensor(mix), axis=-1)

    def probe(x):
        returned = []

        def noting(layer):
            def note(output):
                returned.append(layer)
                return output

            return note

        with hooked({layer: noting(layer) for layer in layers.values()}) as recorded:
            call_model(model, x)
        paths = sorted(
            (
                path
                for path, layer in layers.items()
                if len(recorded[layer]) == 1 and hasattr(recorded[layer][0], "shape")
            ),
            key=lambda path: returned.index(layers[path]),
        )
        zeros = [ops.zeros_like(recorded[layers[path]][0]) for path in paths]

        def run(x, zeros):
            transforms = {
                layers[p]: (lambda out, z=z: out + z) for p, z in zip(paths, zeros, strict=True)
            }
            with hooked(transforms) as captured:
                outputs = call_model(model, x)
            return [captured[layers[p]][0] for p in paths], outputs

        captured, gradients, _ = compute.probe_gradients(run, x, score, zeros)
        order[:] = paths
        return dict(zip(paths, zip(captured, gradients, strict=True), strict=True))

    order: list[str] = []  # a compiled function's dict output comes back sorted by key
    with linear_output(head_layer(model.outputs[0]) or graph_layers(model)[-1][1]):
        probed = compute.call_once(probe, model, sample_input(model))
    return {
        path: (ops.convert_to_numpy(probed[path][0]), ops.convert_to_numpy(probed[path][1]))
        for path in order
    }


def _grid_of(model: keras.Model, path: str, shape: tuple, tokens: TokenGrid | None) -> TokenGrid:
    count = shape[1]
    if tokens is not None:
        if tokens.tokens != count:
            raise ValueError(
                f"tokens={tokens} describes {tokens.tokens} tokens but layer {path!r} "
                f"outputs {count} (shape {shape})."
            )
        check_grid(model, tokens, _image_size(model))
        return tokens
    grid = detect_grid(model, count, _image_size(model))
    if grid is None:
        raise ValueError(
            f"Cannot tell how the {count} tokens of layer {path!r} lie on the "
            f"{_image_size(model)} image (no patch size in the model fits, and no "
            f"rectangle of the image's aspect plus at most 16 leading tokens makes "
            f"{count}). Pass tokens=keras_cam.TokenGrid(height, width, prefix=...) or a "
            f"function that rearranges them into an (N, h, w, C) map."
        )
    return grid


def _captured(model, path, layer, output, tokens: TokenLayout | None) -> CapturedLayer:
    shape, rank = tuple(output.shape), spatial_rank(model)
    if tokens is not None and not isinstance(tokens, TokenGrid):
        grid = tokens  # the user's function, checked by map_channels on this layer's shape
    elif rank != 2:  # a sequence or volume model: its maps only, no tokens
        if len(shape) != rank + 2:
            raise ValueError(
                f"Layer {path!r} outputs shape {shape}, not a feature map of the model's "
                f"{rank}-D inputs (rank {rank + 2}), so there is no map to explain."
            )
        grid = None
    elif len(shape) not in (3, 4):
        raise ValueError(
            f"Layer {path!r} outputs shape {shape}: neither tokens (N, T, D) nor a feature "
            f"map (N, h, w, C), so there is no map to explain. Pass tokens= a function "
            f"that rearranges it into an (N, h, w, C) map."
        )
    else:
        grid = _grid_of(model, path, shape, tokens) if len(shape) == 3 else None
    channels = None if grid is None else map_channels(grid, shape[1:])
    dtype = str(output.dtype).split(".")[-1]
    return CapturedLayer(model, path, layer, grid, shape[1:], dtype, channels)


def capture_layer(
    model: keras.Model, path: str, compute: Any, tokens: TokenLayout | None = None
) -> CapturedLayer:
    """A `CapturedLayer` for the layer at `path` (a graph layer or one called inside one)."""
    layers = all_layers(model)
    if path not in layers:
        by_name = [p for p in layers if p.endswith(f"/{path}") or p == path]
        if len(by_name) != 1:
            candidates = ", ".join(default_candidates(model)[-8:])
            raise ValueError(
                f"No layer {path!r} in model {model.name!r}"
                f"{' (several match: ' + ', '.join(by_name) + ')' if by_name else ''}. "
                f"Token layers you can pass as `layer=`: {candidates}."
            )
        path = by_name[0]
    probed = _probe(model, {path: layers[path]}, compute)
    if path not in probed:
        raise ValueError(
            f"Layer {path!r} does not run exactly once when model {model.name!r} is called; "
            f"it cannot be explained."
        )
    output, gradient = probed[path]
    captured = _captured(model, path, layers[path], output, tokens)
    if scale_blind(captured.map_of(output), captured.map_of(gradient)):
        _warn_scale_blind(path, "the default layer does: leave layer= unset")
    return captured


def _warn_scale_blind(path: str, remedy: str) -> None:
    warnings.warn(
        f"Layer {path!r} reaches the score only through a normalisation that ignores each "
        f"position's scale (a LayerNormalization): its gradient is orthogonal to its "
        f"activation at every position, so gradient-weighted maps of it (Grad-CAM, "
        f"HiResCAM, Layer-CAM, ...) are empty or noise. Explain that normalisation's output "
        f"instead ({remedy}).",
        stacklevel=4,
    )


def _first_output_shape(layer: keras.layers.Layer) -> tuple[int | None, ...] | None:
    """The output shape, or the first output's for a layer with several (DeiT's encoder)."""
    shape = output_shape(layer)
    nodes = getattr(layer, "_inbound_nodes", None)
    if shape is None and nodes and nodes[-1].output_tensors:
        shape = tuple(nodes[-1].output_tensors[0].shape)
    return shape


def default_candidates(model: keras.Model) -> list[str]:
    """Graph layers with token outputs, an encoder replaced by the blocks it calls.

    Per-token normalisations are candidates too, graph layers or called
    inside a candidate. The list is in graph order; `_probe` gives the
    order in which the layers return.
    """
    layers = all_layers(model)
    paths = []
    for path, layer in graph_layers(model):
        shape = _first_output_shape(layer)
        if shape is None or len(shape) != 3:
            continue
        if isinstance(layer, _TOKEN_NORMALISATIONS):
            paths.append(path)
        if isinstance(layer, _NOT_BLOCKS):
            continue
        # A layer that calls several composite layers (an encoder) stands for its blocks.
        blocks = [f"{path}/{sub.name}" for sub in sublayers(layer) if sublayers(sub)]
        paths.extend(blocks if len(blocks) > 1 else [path])
        paths.extend(
            inner
            for inner, sub in layers.items()
            if inner.startswith(f"{path}/") and isinstance(sub, _TOKEN_NORMALISATIONS)
        )
    return paths


def scale_blind(activations: np.ndarray, gradients: np.ndarray) -> bool:
    """Whether the gradient is orthogonal to the activation at (nearly) every map position.

    Args:
        activations: (N, ..., C) a map's activations.
        gradients: (N, ..., C) the score's gradient with respect to them.

    Returns:
        True when positions have gradients and nearly all (90%) are
        orthogonal to their activations (|cosine| < 0.01): the tensor
        reaches the score only through a per-position scale-invariant
        function (a LayerNorm), and gradient-weighted maps of it are empty
        or noise.
    """
    a = activations.reshape(-1, activations.shape[-1]).astype(np.float64)
    g = gradients.reshape(-1, gradients.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(g, axis=1)
    if not np.any(norms > 0):
        return False
    cosines = np.abs((a * g).sum(axis=1))[norms > 0] / norms[norms > 0]
    return bool(np.quantile(cosines, 0.9) < _BLIND_COSINE)


def default_token_layer(
    model: keras.Model, compute: Any, tokens: TokenLayout | None = None
) -> CapturedLayer:
    """The last block or normalisation output with a gradient on the patch tokens, not blind.

    A head that reads only the class token gives exactly zero gradient on
    every patch token at the last block's output (only per-token layers
    follow its attention), and that block's input is scale-blind (see the
    module's docstring): the choice falls on the block's first norm. Behind
    a mean, the final norm's output comes first. When only scale-blind
    layers carry gradient (a normalisation of a kind not listed), the last
    of them is taken, with a warning.
    """
    layers = all_layers(model)
    candidates = {path: layers[path] for path in default_candidates(model)}
    probed = _probe(model, candidates, compute)
    blind = None
    for path in reversed(probed):  # from the last layer to return
        output, gradient = probed[path]
        if output.ndim != 3:
            continue
        try:
            captured = _captured(model, path, layers[path], output, tokens)
        except GridContradiction:
            raise  # a grid of this layer's count that the model lays out otherwise
        except ValueError:
            continue
        patches = captured.map_of(gradient)
        if np.abs(patches).max() <= 1e-7 * max(np.abs(gradient).max(), 1e-30):
            continue
        if not scale_blind(captured.map_of(output), patches):
            return captured
        blind = blind or captured  # a normalisation of a kind not listed: warned below
    if blind is not None:
        _warn_scale_blind(blind.path, "pass layer= its /-path")
        return blind
    if tokens is not None:
        shapes = sorted({probed[p][0].shape[1:] for p in probed if probed[p][0].ndim == 3})
        described = (
            f"describes {tokens.tokens} tokens"
            if isinstance(tokens, TokenGrid)
            else "does not fit or gives no gradient on the map"
        )
        raise ValueError(
            f"tokens={tokens} {described} but the token layers of model {model.name!r} output "
            f"{shapes} (tokens, width); pass the layout of the layer to explain (and layer= "
            f"to name it)."
        )
    raise ValueError(
        f"No token layer of model {model.name!r} has a gradient on its patch tokens "
        f"(candidates: {', '.join(candidates) or 'none'}). Pass layer= and, if the grid "
        f"is unusual, tokens=keras_cam.TokenGrid(height, width, prefix=...)."
    )


def captured_split(model: keras.Model, captured: CapturedLayer) -> LayerSplit:
    """The `LayerSplit` of a captured layer: no features/head pieces, the head's layers listed."""
    graph = graph_layers(model)
    owner = max(
        i
        for i, (path, _) in enumerate(graph)
        if captured.path == path or captured.path.startswith(f"{path}/")
    )
    return LayerSplit(
        path=captured.path,
        layer=captured.layer,
        features=None,
        head=None,
        head_layers=[layer for _, layer in graph[owner + 1 :]],
        channels_first=False,
        capture=captured,
    )


def token_split(
    model: keras.Model, layer: str | None, compute: Any, tokens: TokenLayout | None = None
) -> LayerSplit | None:
    """The split of a token model or of a layer called inside a layer; None for a CNN layer.

    Args:
        model: the model.
        layer: `/`-path or name of the target, or None for the default.
        compute: the backend's compute module (for the probing pass).
        tokens: an explicit token grid or rearranging function, or None to detect it.
    """
    if layer is None:
        if not is_token_model(model):
            if tokens is not None:
                raise ValueError(
                    f"tokens= was given but model {model.name!r} has no token layer after its "
                    f"last spatial layer; pass layer= to name the token layer."
                )
            return None
        return captured_split(model, default_token_layer(model, compute, tokens))
    graph = dict(iter_layers(model))
    by_name = [path for path in graph if path == layer or path.rsplit("/", 1)[-1] == layer]
    rearranged = tokens is not None and not isinstance(tokens, TokenGrid)
    if (
        len(by_name) == 1
        and not rearranged
        and (spatial_rank(model) != 2 or len(_first_output_shape(graph[by_name[0]]) or ()) != 3)
    ):
        # A graph layer with a spatial (or no) map, or any graph layer of a sequence or
        # volume model (whose 3-D outputs are maps, not tokens): the CNN split handles it.
        return None
    inner = [path for path in all_layers(model) if path == layer or path.endswith(f"/{layer}")]
    if not by_name and not inner and not is_token_model(model):
        return None  # unknown everywhere: the CNN split's error lists the candidates
    return captured_split(model, capture_layer(model, layer, compute, tokens))
