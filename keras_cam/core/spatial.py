"""Feature maps of any spatial rank: their axes, per-channel shapes and linear resizing.

A target layer's activations are channels-last `(N, *spatial, C)` with one
spatial axis (a `Conv1D` sequence model: `(N, T, C)`), two (an image model or
a token grid: `(N, h, w, C)`) or three (a `Conv3D` volume model:
`(N, d, h, w, C)`); a map is `(N, *spatial)`. The methods reduce over "the
spatial axes" and never name them, so one file serves every rank.

`keras.ops` resizes 2-D images only; a 1-D map is resized as an image one
column wide, and a 3-D map separably: each depth slice in-plane, then along
depth (a linear resize leaves an axis whose size does not change as it is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from keras import ops


def spatial_axes(features: Any) -> tuple[int, ...]:
    """The spatial axes of a channels-last feature map `(N, *spatial, C)`."""
    return tuple(range(1, len(features.shape) - 1))


def map_axes(maps: Any) -> tuple[int, ...]:
    """The spatial axes of maps `(N, *spatial)`: all but the batch axis."""
    return tuple(range(1, len(maps.shape)))


def per_channel(weights: Any, rank: int) -> Any:
    """Weights (N, C) -> (N, 1, ..., 1, C), broadcastable over `rank` spatial axes."""
    return ops.reshape(weights, (-1, *([1] * rank), weights.shape[-1]))


def channels_last(tensor: Any) -> Any:
    """A channels-first tensor `(N, C, *spatial)` -> `(N, *spatial, C)`."""
    rank = len(tensor.shape)
    return ops.transpose(tensor, (0, *range(2, rank), 1))


def float32_channels_last(tensor: Any, channels_first: bool) -> Any:
    """Methods see float32 (N, *spatial, C), whatever the model's dtype policy and layout."""
    if tensor is None:
        return None
    tensor = ops.cast(tensor, "float32")
    return channels_last(tensor) if channels_first else tensor


def channels_first(tensor: Any) -> Any:
    """A channels-last tensor `(N, *spatial, C)` -> `(N, C, *spatial)`."""
    rank = len(tensor.shape)
    return ops.transpose(tensor, (0, rank - 1, *range(1, rank - 1)))


def _resize_2d(maps: Any, size: Sequence[int]) -> Any:
    resized = ops.image.resize(
        maps[..., None], tuple(size), interpolation="bilinear", data_format="channels_last"
    )
    return resized[..., 0]


def resize(maps: Any, size: Sequence[int]) -> Any:
    """Linearly resizes maps `(N, *spatial)` with 1, 2 or 3 spatial axes to `size`.

    Sample positions are pixel centres (half-pixel), clamped at the edges:
    the same convention on every backend and along every axis.

    Args:
        maps: float maps (N, t), (N, h, w) or (N, d, h, w).
        size: the output's spatial size, one entry per spatial axis.

    Returns:
        The maps at `size`, (N, *size).
    """
    rank, size = len(maps.shape) - 1, tuple(int(s) for s in size)
    if len(size) != rank:
        raise ValueError(f"Cannot resize {rank}-D maps {tuple(maps.shape)} to size {size}.")
    if tuple(maps.shape[1:]) == size:
        return maps
    if rank == 1:
        return _resize_2d(maps[:, :, None], (size[0], 1))[:, :, 0]
    if rank == 2:
        return _resize_2d(maps, size)
    if rank == 3:
        depth, height, width = maps.shape[1:]
        planes = _resize_2d(ops.reshape(maps, (-1, height, width)), size[1:])
        columns = ops.reshape(planes, (-1, depth, math.prod(size[1:])))
        return ops.reshape(_resize_2d(columns, (size[0], columns.shape[-1])), (-1, *size))
    raise ValueError(f"Maps with {rank} spatial axes are not supported (1, 2 or 3).")
