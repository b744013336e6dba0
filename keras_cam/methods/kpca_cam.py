"""KPCA-CAM."""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from keras_cam.methods.base import CAMMethod

_TANH_1 = math.tanh(1.0)


class KPCACAM(CAMMethod):
    """KPCA-CAM: the activations' first kernel principal component; no gradients, no class.

    Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision
    Models using Kernel PCA", arXiv 2410.00267 (pytorch-grad-cam's
    `KPCA_CAM`). Eigen-CAM with a kernel: each location's channel vector
    `a_i` (the (h·w, C) activation matrix centred per channel) enters a
    sigmoid kernel, the kernel matrix is centred, and each location's map
    value is its coordinate on the first kernel principal component:

        K_ij = tanh(γ a_i·a_j + 1),    γ = 1/C by default
        K̃ = K - 1K/n - K1/n + 1K1/n²     (n = h·w locations)
        L = ReLU(v₁ √λ₁),    (λ₁, v₁) the top eigenpair of K̃

    as scikit-learn's `KernelPCA(n_components=1, kernel="sigmoid")`, which
    the reference calls. The component's sign is arbitrary; like
    scikit-learn's `svd_flip`, the entry of largest magnitude is made
    positive. The eigendecomposition is of the n × n kernel matrix, so its
    cost grows with the cube of the layer's number of locations (cheap at
    7×7 or 14×14, slow beyond about 64×64).

    Args:
        gamma: the kernel's scale `γ`. Defaults to `None`: 1 / channels
            (scikit-learn's default).

    Example:

    >>> from keras_cam.methods import KPCACAM
    >>> keras_cam.explain(model, images, method=KPCACAM(gamma=0.01))  # doctest: +SKIP
    """

    name = "kpcacam"
    description = "KPCA-CAM (Karmani et al. 2024): first sigmoid-kernel principal component."
    paper = "Karmani et al., arXiv 2410.00267 (2024)"
    cost = "1 forward + one (h·w)² kernel eigendecomposition"
    uses_gradients = False

    def __init__(self, gamma: float | None = None) -> None:
        if gamma is not None and (
            isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0
        ):
            raise ValueError(f"gamma must be None (1 / channels) or a number > 0, got {gamma!r}.")
        self.gamma = None if gamma is None else float(gamma)

    def weighted_activations(self, activations, gradients, classes, forward=None):
        return activations

    def cam(self, activations, gradients, classes, forward=None):
        spatial, channels = tuple(activations.shape[1:-1]), activations.shape[-1]
        locations = math.prod(spatial)
        gamma = 1.0 / channels if self.gamma is None else self.gamma
        flat = ops.reshape(activations, (-1, locations, channels))
        # The eigensolver fails on NaN or inf: decompose finite values, and give an item
        # with a non-finite input a NaN map, which the explainer reports.
        finite = ops.all(ops.isfinite(flat), axis=(1, 2))
        flat = ops.where(ops.isfinite(flat), flat, 0.0)
        centred = flat - ops.mean(flat, axis=1, keepdims=True)
        inner = ops.tanh(gamma * ops.matmul(centred, ops.transpose(centred, (0, 2, 1))))
        # tanh(u + 1) - tanh(1), written without the cancellation: float32 keeps the small
        # differences between kernel entries (all near tanh(1)) that the centring leaves.
        # The constant tanh(1) it drops is removed by the centring anyway.
        kernel = inner * (1.0 - _TANH_1**2) / (1.0 + inner * _TANH_1)
        kernel = (
            kernel
            - ops.mean(kernel, axis=1, keepdims=True)
            - ops.mean(kernel, axis=2, keepdims=True)
            + ops.mean(kernel, axis=(1, 2), keepdims=True)
        )
        # Values near float32's limit overflow in the centring (inf - inf): such an item's
        # kernel is not finite either, and PyTorch's eigh raises on it instead of giving NaN.
        finite = finite & ops.all(ops.isfinite(kernel), axis=(1, 2))
        kernel = ops.where(finite[:, None, None], kernel, 0.0)
        values, vectors = ops.eigh(kernel)  # ascending eigenvalues
        top = vectors[..., -1]
        largest = ops.take_along_axis(top, ops.argmax(ops.abs(top), axis=1)[:, None], axis=1)
        sign = ops.where(largest < 0, -1.0, 1.0)
        projection = top * sign * ops.sqrt(ops.relu(values[..., -1:]))
        projection = ops.where(finite[:, None], projection, np.nan)
        return ops.reshape(projection, (-1, *spatial))
