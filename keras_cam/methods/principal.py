"""The first principal component of per-location channel vectors (Eigen-CAM, eigen_smooth)."""

from __future__ import annotations

from typing import Any

from keras import ops


def first_component_map(features: Any, reference: Any) -> Any:
    """Projects each location's channel vector on the batch item's first principal component.

    The (h·w, C) matrix of each image is centred per channel; its projection
    on the first principal component is `u₁·σ₁` of its reduced SVD. That
    comes from the eigenvector of the smaller of the two Gram matrices
    (h·w × h·w or C × C), far cheaper than a full SVD. A principal
    component's sign is arbitrary, so the map is signed to correlate
    positively with `reference`.

    Args:
        features: float32 (N, h, w, C).
        reference: float32 (N, h, w), e.g. the channel mean of `features`.

    Returns:
        float32 (N, h, w).
    """
    _, height, width, channels = features.shape
    locations = height * width
    flat = ops.reshape(features, (-1, locations, channels))
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
    return ops.reshape(projection * sign[:, None], (-1, height, width))
