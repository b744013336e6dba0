"""The first principal component of per-location channel vectors (Eigen-CAM, eigen_smooth)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from keras import ops


def first_component_map(features: Any, reference: Any) -> Any:
    """Projects each location's channel vector on the batch item's first principal component.

    The (L, C) matrix of each image (L locations: h·w for a 2-D map, t or
    d·h·w for 1-D or 3-D) is centred per channel; its projection on the first
    principal component is `u₁·σ₁` of its reduced SVD. That comes from the
    eigenvector of the smaller of the two Gram matrices (L × L or C × C), far
    cheaper than a full SVD. A principal
    component's sign is arbitrary, so the map is signed to correlate
    positively with `reference`.

    Args:
        features: float32 (N, *spatial, C), e.g. (N, h, w, C).
        reference: float32 (N, *spatial), e.g. the channel mean of `features`.

    Returns:
        float32 (N, *spatial).
    """
    spatial, channels = tuple(features.shape[1:-1]), features.shape[-1]
    locations = math.prod(spatial)
    flat = ops.reshape(features, (-1, locations, channels))
    # The eigensolver fails on NaN or inf, and the Gram matrix overflows for huge
    # activations: decompose finite values scaled to at most 1, and give an item with a
    # non-finite input a NaN map, which the explainer reports.
    finite = ops.all(ops.isfinite(flat), axis=(1, 2))
    flat = ops.where(ops.isfinite(flat), flat, 0.0)
    scale = ops.max(ops.abs(flat), axis=(1, 2), keepdims=True)
    scale = ops.where(scale > 0, scale, 1.0)
    flat = flat / scale
    centred = flat - ops.mean(flat, axis=1, keepdims=True)
    if locations <= channels:
        gram = ops.matmul(centred, ops.transpose(centred, (0, 2, 1)))
        values, vectors = ops.eigh(gram)  # ascending eigenvalues
        projection = vectors[..., -1] * ops.sqrt(ops.relu(values[..., -1:]))
    else:
        covariance = ops.matmul(ops.transpose(centred, (0, 2, 1)), centred)
        _, vectors = ops.eigh(covariance)
        projection = ops.matmul(centred, vectors[..., -1:])[..., 0]
    agreement = ops.sum(projection * ops.reshape(reference, (-1, locations)), axis=1)
    sign = ops.where(agreement < 0, -1.0, 1.0)
    projection = ops.where(finite[:, None], projection * sign[:, None] * scale[:, 0], np.nan)
    return ops.reshape(projection, (-1, *spatial))
