"""Token maps: a transformer's (N, T, D) token sequence seen as an (N, h, w, D) feature map.

A vision transformer cuts the image into an h×w grid of patches, embeds each
as a token, and may put a few extra tokens first (a class token, DeiT's
distillation token, DINOv2's register tokens). Dropping those `prefix`
tokens and reshaping the rest gives a channels-last map on which every CAM
method runs as on a CNN's. The grid is read off the model where it says so
(a `patch_size` attribute of the backbone or its patch-embedding layer) and
otherwise found as the rectangle of the input's aspect that `T − prefix`
tokens fill, with the fewest prefix tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from keras_cam.layers import sublayers

# More leading tokens than this are not a class/distillation/register prefix.
_MAX_PREFIX = 16


@dataclass(frozen=True)
class TokenGrid:
    """How a layer's tokens lie on the image: `prefix` extra tokens, then an h×w grid.

    Pass one as `tokens=` to `CAMExplainer`, `explain` or `CAMCallback` when
    the grid cannot be read off the model (an unusual patch embedding, tokens
    pooled into a coarser grid, a prefix longer than 16 tokens).

    Args:
        height: rows of patches.
        width: columns of patches.
        prefix: tokens before the grid (1 for a class token, 2 for DeiT's
            class and distillation tokens, 1 + registers for DINOv2).
            Defaults to `0`.

    Example:

    >>> grid = keras_cam.TokenGrid(14, 14, prefix=1)   # ViT-B/16 at 224×224
    >>> keras_cam.explain(vit, images, tokens=grid)    # doctest: +SKIP
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

    def to_map(self, tokens: Any) -> Any:
        """(N, T, D) tokens -> (N, height, width, D), the prefix dropped."""
        return ops.reshape(
            tokens[:, self.prefix :, :], (-1, self.height, self.width, tokens.shape[-1])
        )

    def patch_mask(self, dtype: str = "float32") -> Any:
        """(T,) 1 on the grid's tokens, 0 on the prefix."""
        return ops.concatenate(
            [ops.zeros((self.prefix,), dtype), ops.ones((self.height * self.width,), dtype)]
        )


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
