"""The attention probabilities of a transformer's blocks, captured during the model's own call.

Attention rollout, gradient-weighted rollout and LeGrad read the post-softmax
attention probabilities `A` (N, heads, T, T) of every block, and the last two
the gradient of a score with respect to them. Keras' `MultiHeadAttention`
(the hand-built ViTs' graph layers, and the layers KerasHub's ViT, DeiT and
DINOv2 blocks call in Python) computes them with its `Softmax` sublayer, unless
it takes the backend's fused attention kernel, which keeps no probabilities.
So, only while the explainer runs the model, each attention layer's `call`
is wrapped to ask for its scores (forcing the explicit path), and its
`Softmax`'s `call` to record the probabilities and return `A + zeros`: the
gradient with respect to those zeros is the gradient with respect to `A`, on
the three backends, inside the one compiled function (`keras_cam.core.capture`
does the same for a target layer).

LeGrad also needs each block's output tokens `z_l` and the model's head
applied to them. In a pre-norm transformer (ViT, DeiT, DINOv2) block `l`'s
output is the input of block `l + 1`'s first normalisation (the one called
last before its attention) and the last block's output is the input of the
final normalisation. Replacing that final input by the mean token of each
`z_l`, stacked along the batch, runs the rest of the model once on all
blocks: `head(LN(mean_t z_l))`, the paper's and TorchCAM's layer score,
whatever the model's pooling (class token or mean).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from keras_cam.core.capture import all_layers, call_model, sample_input
from keras_cam.core.layers import model_input_shape, sublayers
from keras_cam.core.tokens import TokenGrid, detect_grid

# The per-token normalisations of pre-norm blocks and of a transformer's final norm.
_NORMALISATIONS = (keras.layers.LayerNormalization, keras.layers.RMSNormalization)

Score = Callable[[Any], Any]


def _softmax_of(attention: keras.layers.Layer) -> keras.layers.Layer | None:
    found = [layer for layer in sublayers(attention) if isinstance(layer, keras.layers.Softmax)]
    return found[0] if len(found) == 1 else None


@contextlib.contextmanager
def _patched(makers: dict[keras.layers.Layer, Callable[[Callable], Callable]]) -> Iterator[None]:
    """Sets each layer's `call` to `make(original call)` for the block, then puts it back."""
    previous = {layer: layer.__dict__.get("call") for layer in makers}
    for layer, make in makers.items():
        # Set on the instance, bypassing Keras' attribute tracking; removed below.
        object.__setattr__(layer, "call", make(layer.call))
    try:
        yield
    finally:
        for layer, call in previous.items():
            if call is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", call)


def _with_scores(original: Callable) -> Callable:
    """A `MultiHeadAttention.call` that takes the explicit softmax path (no fused kernel)."""

    def call(*args, **kwargs):
        wanted = kwargs.pop("return_attention_scores", False)
        output, scores = original(*args, return_attention_scores=True, **kwargs)
        return (output, scores) if wanted else output

    return call


def _noting(events: list, layer: keras.layers.Layer, replace: Callable | None = None):
    """A maker whose call records `(layer, first input)` and may replace that input."""

    def make(original: Callable) -> Callable:
        def call(inputs, *args, **kwargs):
            events.append((layer, inputs))
            if replace is not None:
                inputs = replace(inputs)
            return original(inputs, *args, **kwargs)

        return call

    return make


def _adding(recorded: list, zero: Any = None):
    """A `Softmax` maker whose call records the probabilities and returns them `+ zero`."""

    def make(original: Callable) -> Callable:
        def call(*args, **kwargs):
            probabilities = original(*args, **kwargs)
            recorded.append(probabilities)
            return (
                probabilities
                if zero is None
                else probabilities + ops.cast(zero, probabilities.dtype)
            )

        return call

    return make


@dataclass(frozen=True)
class AttentionLayers:
    """The attention layers of a model, in the order its call runs them.

    Attributes:
        model: the model.
        paths: `/`-path of each attention layer.
        attentions: the `MultiHeadAttention` layers.
        softmaxes: the `Softmax` layer inside each, whose output is `A`.
        block_norms: per attention layer, the normalisation called last
            before it (its block's first norm; None where there is none).
        final_norm: the normalisation called last after the last attention,
            or None.
        heads: attention heads per layer.
        tokens: tokens `T` each attention layer attends over.
        grid: how the `T` tokens lie on the image (prefix tokens, then rows).
    """

    model: keras.Model
    paths: tuple[str, ...]
    attentions: tuple[keras.layers.Layer, ...]
    softmaxes: tuple[keras.layers.Layer, ...]
    block_norms: tuple[keras.layers.Layer | None, ...]
    final_norm: keras.layers.Layer | None
    heads: int
    tokens: int
    grid: TokenGrid

    def _makers(self, recorded: list[list], zeros: dict[int, Any]) -> dict:
        makers: dict[keras.layers.Layer, Callable] = {}
        for i, (attention, softmax) in enumerate(zip(self.attentions, self.softmaxes, strict=True)):
            makers[attention] = _with_scores
            makers[softmax] = _adding(recorded[i], zeros.get(i))
        return makers

    def run(self, x: Any, zeros: dict[int, Any] | None = None) -> tuple[list[Any], Any]:
        """Model outputs for `x`, and each attention layer's probabilities (plus `zeros[i]`)."""
        recorded: list[list] = [[] for _ in self.paths]
        with _patched(self._makers(recorded, zeros or {})):
            outputs = call_model(self.model, x)
        return [
            _once(found, path) for found, path in zip(recorded, self.paths, strict=True)
        ], outputs

    def run_layer_heads(
        self, x: Any, blocks: Sequence[int], zeros: dict[int, Any]
    ) -> tuple[list[Any], Any]:
        """`run`, with the model's head applied to the mean token of each block in `blocks`.

        Returns the probabilities of every attention layer and the outputs
        of the batch stacked `len(blocks)` times, copy `i` scoring block
        `blocks[i]`'s output tokens.
        """
        if self.final_norm is None or any(self.block_norms[i + 1] is None for i in blocks[:-1]):
            raise ValueError(self._no_norm_error())
        events: list = []
        recorded: list[list] = [[] for _ in self.paths]
        makers = self._makers(recorded, zeros)
        last = len(self.paths) - 1
        wanted = {self.block_norms[i + 1]: i for i in blocks if i < last}
        for norm in wanted:
            makers[norm] = _noting(events, norm)

        def layer_inputs(tokens):
            found = {wanted[layer]: inputs for layer, inputs in events if layer in wanted}
            found[last] = tokens
            means = [ops.mean(found[i], axis=1, keepdims=True) for i in blocks]
            return ops.concatenate([ops.broadcast_to(m, ops.shape(tokens)) for m in means], 0)

        makers[self.final_norm] = _noting(events, self.final_norm, layer_inputs)
        with _patched(makers):
            outputs = call_model(self.model, x)
        return [
            _once(found, path) for found, path in zip(recorded, self.paths, strict=True)
        ], outputs

    def _no_norm_error(self) -> str:
        return (
            f"LeGrad scores each block's output tokens with the model's head, reading them "
            f"at the input of the next block's first normalisation and of the final "
            f"normalisation (a pre-norm transformer: ViT, DeiT, DINOv2), but model "
            f"{self.model.name!r} has no LayerNormalization before each of its attention "
            f"layers {list(self.paths)} and after the last one. Use method='rollout' or "
            f"'gradrollout', which read the attention only."
        )

    def select(self, blocks: Any) -> list[int]:
        """The indices of `blocks` (None: all; ints, negative from the end; or a slice)."""
        count = len(self.paths)
        if blocks is None:
            return list(range(count))
        if isinstance(blocks, slice):
            chosen = list(range(count))[blocks]
        else:
            chosen = []
            for block in blocks:
                if isinstance(block, bool) or not isinstance(block, int):
                    raise ValueError(f"blocks must hold integers, got {block!r}.")
                if not -count <= block < count:
                    raise ValueError(
                        f"blocks={list(blocks)} names block {block}, but model "
                        f"{self.model.name!r} has {count} attention layers (0..{count - 1}, "
                        f"or negative from the end)."
                    )
                chosen.append(block % count)
        if not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"blocks={blocks!r} selects {len(chosen)} blocks of {count}"
                f"{' with repeats' if chosen else ''}; select each block at most once, and "
                f"at least one."
            )
        return sorted(chosen)

    def check_heads(self, heads: Sequence[int] | None) -> None:
        """Raises unless `heads` (None: all) are head indices of these layers."""
        if heads is not None and not all(
            isinstance(h, int) and not isinstance(h, bool) and 0 <= h < self.heads for h in heads
        ):
            raise ValueError(
                f"heads={list(heads)} must be head indices 0..{self.heads - 1} of model "
                f"{self.model.name!r}'s attention layers ({self.heads} heads each)."
            )

    def readout(self, relevance: Any) -> Any:
        """(N, T, T) token-to-token relevance -> (N, T): the row of what the head reads.

        The class token's row where the grid has a prefix; otherwise the mean
        over the rows (a mean-pooled head reads every token).
        """
        return relevance[:, 0, :] if self.grid.prefix else ops.mean(relevance, axis=1)

    def to_map(self, relevance: Any) -> Any:
        """(N, T) per-token relevance -> (N, h, w) on the patch grid, the prefix dropped."""
        return self.grid(relevance[:, :, None])[..., 0]


def _once(found: list, path: str) -> Any:
    if len(found) != 1:
        raise ValueError(
            f"Attention layer {path!r} ran {len(found)} times in one call of the model; the "
            f"attention methods need each attention layer to run exactly once."
        )
    return ops.cast(found[0], "float32")


def _image_size(model: keras.Model) -> tuple[int, int]:
    shape = model_input_shape(model)
    channels_first = shape[-1] not in (1, 3, 4) and shape[1] in (1, 3, 4)
    return tuple(int(s) for s in (shape[2:4] if channels_first else shape[1:3]))


def _grid(model: keras.Model, tokens: int, given: Any) -> TokenGrid:
    if isinstance(given, TokenGrid) and given.tokens == tokens:
        return given
    grid = detect_grid(model, tokens, _image_size(model))
    if grid is None:
        raise ValueError(
            f"Cannot tell how the {tokens} tokens that the attention layers of model "
            f"{model.name!r} attend over lie on the image; pass "
            f"tokens=keras_cam.TokenGrid(height, width, prefix=...) describing them."
        )
    return grid


def find_attention(model: keras.Model, compute: Any, tokens: Any = None) -> AttentionLayers:
    """The model's attention layers in call order, their probabilities' layers and norms.

    Args:
        model: a transformer built of Keras `MultiHeadAttention` layers (graph
            layers, or layers called inside a layer as KerasHub's blocks are).
        compute: the backend's compute module (one probing call).
        tokens: the explainer's `tokens=` (a `TokenGrid` of the attention's
            token count is used as given). Defaults to `None`: detected.

    Raises:
        ValueError: the model has no `MultiHeadAttention` layer, or one
            without a `Softmax` (a fused-attention subclass), or with
            `flash_attention=True` (it keeps no probabilities).
    """
    layers = all_layers(model)
    attentions = {
        path: layer
        for path, layer in layers.items()
        if isinstance(layer, keras.layers.MultiHeadAttention)
    }
    if not attentions:
        raise ValueError(
            f"The attention methods (rollout, gradrollout, legrad) read the attention "
            f"probabilities of a transformer's blocks, but model {model.name!r} has no "
            f"keras.layers.MultiHeadAttention layer (nor one called inside its layers). Build "
            f"its attention with keras.layers.MultiHeadAttention, or use a method that "
            f"explains a feature map, such as method='gradcam'."
        )
    for path, layer in attentions.items():
        if _softmax_of(layer) is None:
            raise ValueError(
                f"Attention layer {path!r} ({type(layer).__name__}) has no Softmax sublayer "
                f"whose output would be its attention probabilities; the attention methods "
                f"need keras.layers.MultiHeadAttention's own softmax."
            )
        if getattr(layer, "_flash_attention", False):
            raise ValueError(
                f"Attention layer {path!r} uses flash attention, which keeps no attention "
                f"probabilities; build it with flash_attention=False (or call "
                f"keras.config.disable_flash_attention() before building the model)."
            )
    norms = [layer for layer in layers.values() if isinstance(layer, _NORMALISATIONS)]
    by_layer = {id(layer): path for path, layer in attentions.items()}
    events: list = []
    recorded = {path: [] for path in attentions}

    def probe(x):
        makers = {norm: _noting(events, norm) for norm in norms}
        for path, layer in attentions.items():
            # Noted at the start of the call, after its block's first norm returned.
            makers[layer] = lambda original, layer=layer: _noting(events, layer)(
                _with_scores(original)
            )
            makers[_softmax_of(layer)] = _adding(recorded[path])
        with _patched(makers):
            return call_model(model, x)

    compute.call_once(probe, model, sample_input(model, "reading its attention"))
    order = [layer for layer, _ in events]
    calls = [i for i, layer in enumerate(order) if id(layer) in by_layer]
    paths = [by_layer[id(order[i])] for i in calls]
    if len(set(paths)) != len(paths) or len(paths) != len(attentions):
        raise ValueError(
            f"The attention layers of model {model.name!r} must each run exactly once per "
            f"call; {sorted(set(attentions) - set(paths)) or 'some'} did not."
        )
    shapes = {tuple(recorded[path][0].shape[1:]) for path in paths}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(
            f"The attention methods need every attention layer of model {model.name!r} to "
            f"give probabilities (N, heads, T, T) of the same shape, got {sorted(shapes)}."
        )
    heads, count, keys = next(iter(shapes))
    if count != keys:
        raise ValueError(
            f"The attention layers of model {model.name!r} are cross-attention ({count} "
            f"queries, {keys} keys); the attention methods explain self-attention."
        )
    block_norms = []
    for start, end in zip([-1, *calls[:-1]], calls, strict=True):
        before = [order[i] for i in range(start + 1, end) if id(order[i]) not in by_layer]
        block_norms.append(before[-1] if before else None)
    after = [layer for layer in order[calls[-1] + 1 :] if id(layer) not in by_layer]
    return AttentionLayers(
        model=model,
        paths=tuple(paths),
        attentions=tuple(attentions[p] for p in paths),
        softmaxes=tuple(_softmax_of(attentions[p]) for p in paths),
        block_norms=tuple(block_norms),
        final_norm=after[-1] if after else None,
        heads=int(heads),
        tokens=int(count),
        grid=_grid(model, int(count), tokens),
    )


@dataclass(frozen=True)
class AttentionReader:
    """The attention of a batch's blocks, and gradients of its explained score (for a method).

    Built by the explainer inside its compiled function; every read runs the
    model again on the given inputs (one forward pass, and backward passes
    where gradients are asked for).

    Attributes:
        layers: the model's `AttentionLayers` (grid, readout, block selection).
        probabilities: `(inputs) -> [A_l]`, float32 (N, heads, T, T) per block.
        gradients: `(inputs, classes) -> ([A_l], [dS/dA_l])` of the explained
            score `S` (one backward pass).
        layer_gradients: `(inputs, classes, blocks) -> [dS_l/dA_l]` for the
            blocks' indices: `S_l` is the explained score of the model's head
            applied to block `l`'s mean output token (one backward pass each).
    """

    layers: AttentionLayers
    probabilities: Callable[[Any], list[Any]]
    gradients: Callable[[Any, Any], tuple[list[Any], list[Any]]]
    layer_gradients: Callable[[Any, Any, Sequence[int]], list[Any]]


def attention_reader(layers: AttentionLayers, compute: Any, score_of: Callable) -> AttentionReader:
    """An `AttentionReader` of `layers`, scoring outputs with `score_of(outputs, classes)`."""
    shape = (layers.heads, layers.tokens, layers.tokens)

    def probabilities(x):
        return layers.run(x)[0]

    def gradients(x, classes):
        zeros = [ops.zeros((x.shape[0], *shape), "float32") for _ in layers.paths]

        def run(x, zeros):
            return layers.run(x, dict(enumerate(zeros)))

        found, grads, _ = compute.probe_gradients(run, x, lambda o: score_of(o, classes), zeros)
        return found, [ops.cast(g, "float32") for g in grads]

    def layer_gradients(x, classes, blocks):
        count = x.shape[0]
        zeros = [ops.zeros((count, *shape), "float32") for _ in blocks]

        def run(x, zeros):
            return layers.run_layer_heads(x, blocks, dict(zip(blocks, zeros, strict=True)))

        def block_score(i):
            def score(outputs):
                copy = keras.tree.map_structure(lambda t: t[i * count : (i + 1) * count], outputs)
                return score_of(copy, classes)

            return score

        scores = [block_score(i) for i in range(len(blocks))]
        _, grads, _ = compute.probe_gradients_each(run, x, scores, zeros)
        return [ops.cast(g, "float32") for g in grads]

    return AttentionReader(layers, probabilities, gradients, layer_gradients)
