"""Token maps: a transformer's (N, T, D) token sequence seen as an (N, h, w, D) feature map.

A vision transformer cuts the image into an h×w grid of patches, embeds each
as a token, and may put a few extra tokens first (a class token, DeiT's
distillation token, DINOv2's register tokens). Dropping those `prefix`
tokens and reshaping the rest gives a channels-last map on which every CAM
method runs as on a CNN's. The grid is read off the model where it says so
(a `patch_size` attribute of the backbone or its patch-embedding layer) and
otherwise found as the rectangle of the input's aspect that `T − prefix`
tokens fill, with the fewest prefix tokens. A layout no grid describes
(tokens stored column by column, windows, channels first) is given as a
function that rearranges the layer's output into the map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_cam.core.layers import sublayers

# More leading tokens than this are not a class/distillation/register prefix.
_MAX_PREFIX = 16


@dataclass(frozen=True)
class TokenGrid:
    """How a layer's tokens lie on the image: `prefix` extra tokens, then an h×w grid.

    Pass one as `tokens=` to `CAMExplainer`, `explain` or `CAMCallback` when
    the grid cannot be read off the model (an unusual patch embedding, tokens
    pooled into a coarser grid, a prefix longer than 16 tokens). Calling it
    on (N, T, D) tokens gives the (N, height, width, D) map.

    Args:
        height: rows of patches.
        width: columns of patches.
        prefix: tokens before the grid (1 for a class token, 2 for DeiT's
            class and distillation tokens, 1 + registers for DINOv2).
            Defaults to `0`.

    For a layout no grid describes, pass instead a function (with
    `keras.ops`) that rearranges the layer's output into an (N, h, w, C) map.
    It may only select and rearrange entries, because the same function maps
    the gradients; this is checked when the explainer is built.

    Example:

    >>> import keras_cam
    >>> grid = keras_cam.TokenGrid(14, 14, prefix=1)   # ViT-B/16 at 224×224
    >>> keras_cam.explain(vit, images, tokens=grid)    # doctest: +SKIP
    >>> def columns_first(tokens):                     # 6 columns of 4 tokens, no prefix
    ...     grid = ops.reshape(tokens, (-1, 6, 4, tokens.shape[-1]))
    ...     return ops.transpose(grid, (0, 2, 1, 3))   # -> (N, 4, 6, D)
    >>> keras_cam.explain(model, images, tokens=columns_first)  # doctest: +SKIP
    """

    height: int
    width: int
    prefix: int = 0

    def __post_init__(self) -> None:
        for name in ("height", "width", "prefix"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "prefix" else 1):
                raise ValueError(
                    f"TokenGrid {name} must be an integer >= {0 if name == 'prefix' else 1}, "
                    f"got {value!r}."
                )

    @property
    def tokens(self) -> int:
        """The length of the token sequence this grid describes."""
        return self.prefix + self.height * self.width

    def __call__(self, tokens: Any) -> Any:
        """(N, T, D) tokens -> (N, height, width, D), the prefix dropped."""
        return ops.reshape(
            tokens[:, self.prefix :, :], (-1, self.height, self.width, tokens.shape[-1])
        )


TokenLayout = TokenGrid | Callable[[Any], Any]
"""A `TokenGrid`, or a function from a layer's output to an (N, h, w, C) map."""


def check_layout(tokens: Any) -> None:
    """Raises unless `tokens` is None, a `TokenGrid` or a function."""
    if tokens is not None and not callable(tokens):
        raise ValueError(
            f"tokens must be None, a keras_cam.TokenGrid(height, width, prefix=...) or a "
            f"function from the layer's output to an (N, h, w, C) map, got {tokens!r}."
        )


_PROBE_LIMIT = 2**22
"""Entries the check can number exactly: ±(i + 1.5) is exact in float32 below 2**23."""


def _probe_values(size: int, seed: int) -> np.ndarray:
    """`size` distinct, signed, non-integer float32 values, shuffled by `seed`.

    Signed and non-integer, so that no value survives `abs`, `round`,
    `relu`, a clip or `maximum(x, 1)`, and a negated value is never another
    entry's: anything that computes rather than moves an entry gives a value
    not in the set. Shuffled, so that a value-dependent reordering (a sort)
    moves entries differently for two numberings.
    """
    magnitudes = np.arange(size, dtype=np.float64) + 1.5
    signs = np.where(np.arange(size) % 2 == 0, 1.0, -1.0)
    values = (magnitudes * signs).astype("float32")
    return np.random.default_rng(seed).permutation(values) if seed else values


def _entries(layout: Callable[[Any], Any], values: np.ndarray, item_shape) -> tuple[Any, Any]:
    """(the map `layout` makes of `values`, the index of each map value in `values`, -1 if none)."""
    try:
        mapped = np.asarray(
            ops.convert_to_numpy(layout(ops.convert_to_tensor(values.reshape(1, *item_shape))))
        )
    except Exception as error:  # the user's function: say which call failed, keep the cause
        raise ValueError(
            f"tokens={layout!r} failed on a layer output of shape (1, "
            f"{', '.join(map(str, item_shape))}): {error}"
        ) from error
    order = np.argsort(values, kind="stable")
    flat = mapped.astype("float32", copy=False).ravel() if mapped.size else np.zeros(0, "float32")
    at = np.clip(np.searchsorted(values[order], flat), 0, max(len(values) - 1, 0))
    found = values[order][at] == flat if len(values) else np.zeros(flat.shape, bool)
    return mapped, np.where(found, order[at], -1).reshape(mapped.shape)


def map_channels(layout: Callable[[Any], Any], item_shape: tuple[int, ...]) -> np.ndarray:
    """The map channel each entry of a layer's output lands in (-1: not in the map).

    `layout` must only select and rearrange entries (slicing, reshape,
    transpose, gather): the same function maps the gradients, which is
    right only for such a rearrangement. The layer's entries are numbered
    twice, with distinct signed non-integer values in two orders, and the
    numbers are looked up in the map: every map entry must be one layer
    entry, at most once, the same one for both numberings. So `abs`,
    `round`, `relu`, `sort` or `maximum(x, 1)`, which leave the positive
    integers 1..N as they are, are refused. Ablation-CAM scales a map
    channel through this index.
    """
    size = int(np.prod(item_shape))
    if size >= _PROBE_LIMIT:
        raise ValueError(
            f"tokens= as a function is checked on a layer output of at most {_PROBE_LIMIT} "
            f"entries per image, got {size} (shape {item_shape}); pass a "
            f"keras_cam.TokenGrid instead."
        )
    mapped, entries = _entries(layout, _probe_values(size, 0), item_shape)
    valid = (
        mapped.ndim == 4
        and mapped.shape[0] == 1
        and entries.min(initial=0) >= 0
        and len(np.unique(entries)) == entries.size
    )
    if valid:
        _, again = _entries(layout, _probe_values(size, 1), item_shape)
        valid = np.array_equal(entries, again)
    if not valid:
        raise ValueError(
            f"tokens= must map the layer's output (N, {', '.join(map(str, item_shape))}) to "
            f"an (N, h, w, C) map by selecting and rearranging entries only (slicing, "
            f"reshape, transpose), each entry at most once and in the same place whatever "
            f"the values (no abs, round, relu, clip, sort or arithmetic: the same function "
            f"maps the gradients); it gave shape {tuple(mapped.shape)}"
            f"{'' if mapped.ndim != 4 else ' with entries computed, repeated or moved by value'}."
        )
    channels = np.full(size, -1, dtype=np.int64)
    channels[entries.ravel()] = np.broadcast_to(np.arange(mapped.shape[-1]), mapped.shape).ravel()
    return channels.reshape(item_shape)


def _patch_sizes(model: keras.Model) -> list[tuple[int, int]]:
    """The patch sizes a model and its layers declare, outermost first."""
    sizes, seen, stack = [], set(), [model]
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        size = getattr(layer, "patch_size", None)
        if isinstance(size, int):
            size = (size, size)
        if (
            isinstance(size, (tuple, list))
            and len(size) == 2
            and all(isinstance(s, int) for s in size)
        ):
            sizes.append(tuple(size))
        stack.extend(sublayers(layer))
    return sizes


def _aspect_grid(tokens: int, height: int, width: int) -> TokenGrid | None:
    """The grid of the input's aspect filled by all but the fewest leading tokens."""
    for prefix in range(min(_MAX_PREFIX, tokens - 1) + 1):
        cells = tokens - prefix
        rows = round((cells * height / width) ** 0.5)
        if rows >= 1 and cells % rows == 0 and rows * width == (cells // rows) * height:
            return TokenGrid(rows, cells // rows, prefix)
    return None


def detect_grid(model: keras.Model, tokens: int, image_size: tuple[int, int]) -> TokenGrid | None:
    """Finds how `tokens` tokens of a layer of `model` lie on an image of `image_size`.

    Returns None when neither the model's patch size nor the input's aspect
    explains the count.
    """
    height, width = image_size
    for patch_height, patch_width in _patch_sizes(model):
        cells = (height // patch_height) * (width // patch_width)
        if 0 <= tokens - cells <= _MAX_PREFIX:
            return TokenGrid(height // patch_height, width // patch_width, tokens - cells)
    return _aspect_grid(tokens, height, width)


class GridContradiction(ValueError):
    """An explicit `TokenGrid` of a layer's token count that the model lays out otherwise."""


def check_grid(model: keras.Model, grid: TokenGrid, image_size: tuple[int, int]) -> None:
    """Refuses an explicit grid that contradicts the layout the model itself tells.

    The model tells its layout where its patch size, or else its input's
    aspect, explains the same token count: then a grid of the same count but
    another shape or prefix (no prefix on a class-token ViT, a transposed
    grid) would put the class token on a patch and shift or transpose every
    patch, silently. A count the model does not explain (tokens pooled into a
    coarser grid, a long prefix) is the user's to describe, and is accepted.

    Raises:
        ValueError: the grid contradicts the model's own layout.
    """
    told = detect_grid(model, grid.tokens, image_size)
    if told is None or told == grid:
        return
    fitting = [
        (h, w)
        for h, w in _patch_sizes(model)
        if 0 <= grid.tokens - (image_size[0] // h) * (image_size[1] // w) <= _MAX_PREFIX
    ]
    source = (
        f"its patch size {fitting[0]}"
        if fitting
        else f"its {image_size[0]}x{image_size[1]} input's aspect"
    )
    raise GridContradiction(
        f"tokens={grid} contradicts model {model.name!r}: {source} lays its {grid.tokens} "
        f"tokens out as {told} ({told.prefix} leading token(s), then {told.height} rows of "
        f"{told.width}). With {grid} every patch would be drawn in the wrong place. Pass "
        f"tokens={told} (or leave tokens=None); for a layout the model cannot tell (e.g. it "
        f"resizes the image inside), pass a function that rearranges the tokens instead."
    )
