"""Deep Feature Factorization: k concepts a batch shares, by non-negative matrix factorisation."""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from keras_cam.core.spatial import spatial_axes
from keras_cam.methods.base import CAMMethod


def _coordinate_descent(data, factor, other):
    """One cyclic pass over the columns of `factor` (rows × k): sklearn's `_update_cdnmf_fast`.

    Minimises ‖data − factor · otherᵀ‖² over `factor` ≥ 0, one column at a
    time (each column's rows are independent given the others), and returns
    the new factor and the summed projected-gradient violation.
    """
    gram = ops.matmul(ops.transpose(other), other)  # (k, k)
    cross = ops.matmul(data, other)  # (rows, k)
    columns = [factor[:, t] for t in range(factor.shape[1])]
    violation = ops.zeros((), factor.dtype)
    for t in range(len(columns)):
        grad = -cross[:, t]
        for r, column in enumerate(columns):
            grad = grad + gram[t, r] * column
        projected = ops.where(columns[t] == 0, ops.minimum(grad, 0.0), grad)
        violation = violation + ops.sum(ops.abs(projected))
        hess = gram[t, t]
        step = ops.maximum(columns[t] - grad / ops.where(hess != 0, hess, 1.0), 0.0)
        columns[t] = ops.where(hess != 0, step, columns[t])
    return ops.stack(columns, axis=1), violation


def factorize(
    activations: Any,
    concepts: int = 5,
    seed: int = 0,
    max_iter: int = 200,
    tol: float = 1e-4,
) -> tuple[Any, Any]:
    """Factorises a batch's activations into `concepts` shared concepts and their maps.

    pytorch-grad-cam's `dff()`: the (C, N·h·w) matrix of every channel over
    every position of every image, shifted by each channel's minimum, is
    factorised as `W H` with `W, H ≥ 0` by scikit-learn's `NMF(init="random",
    random_state=seed)` default solver, written here with `keras.ops` (runs
    inside compiled functions on every backend): the same random start
    (numpy's `RandomState(seed)`, drawn while tracing, scaled by
    `sqrt(mean(X) / k)`), the same cyclic coordinate descent and the same
    stopping rule (the projected gradient below `tol` times the first
    iteration's, or `max_iter` iterations).

    Args:
        activations: float (N, *spatial, C), channels last.
        concepts: the number of concepts `k`. Defaults to `5`.
        seed: the random start's seed. Defaults to `0` (pytorch-grad-cam's).
        max_iter: iterations at most. Defaults to `200` (scikit-learn's).
        tol: the stopping tolerance. Defaults to `1e-4` (scikit-learn's).

    Returns:
        `(embeddings, maps)`: the concepts' channel vectors (C, k), the
        minimum added back (pytorch-grad-cam's `concepts`), and each
        position's concept loadings (N, *spatial, k), non-negative.

    Example:

    >>> features = keras.Model(model.inputs, model.get_layer("conv5").output)  # doctest: +SKIP
    >>> embeddings, maps = factorize(features(images), concepts=4)  # doctest: +SKIP
    """
    activations = ops.cast(activations, "float32")
    shape = tuple(activations.shape)
    channels = shape[-1]
    flat = ops.transpose(ops.reshape(activations, (-1, channels)))  # (C, N·h·w)
    flat = ops.where(ops.isnan(flat), 0.0, flat)
    offset = ops.min(flat, axis=1, keepdims=True)
    data = flat - offset
    count = int(np.prod(shape[:-1]))
    # The reference's start, drawn in the same order (H, then W) at trace time.
    rng = np.random.RandomState(seed)
    start_h = np.abs(rng.standard_normal((concepts, count)).astype(np.float32))
    start_w = np.abs(rng.standard_normal((channels, concepts)).astype(np.float32))
    scale = ops.sqrt(ops.mean(data) / concepts)
    state = (
        ops.zeros((), "int32"),
        scale * ops.convert_to_tensor(start_w),
        scale * ops.convert_to_tensor(start_h.T),
        ops.zeros((), "float32"),
        ops.zeros((), "bool"),
    )

    def running(step, w, ht, first, done):
        return ops.logical_and(step < max_iter, ops.logical_not(done))

    def iterate(step, w, ht, first, done):
        w, violation = _coordinate_descent(data, w, ht)
        ht, more = _coordinate_descent(ops.transpose(data), ht, w)
        violation = violation + more
        first = ops.where(step == 0, violation, first)
        done = ops.logical_or(first == 0, violation <= tol * first)
        return step + 1, w, ht, first, done

    _, w, ht, _, _ = ops.while_loop(running, iterate, state)
    maps = ops.reshape(ht, (*shape[:-1], concepts))
    return w + offset, maps


class DeepFeatureFactorization(CAMMethod):
    """Deep Feature Factorization: the map of the concept the explained class relies on most.

    Collins et al., "Deep Feature Factorization For Concept Discovery",
    ECCV 2018 (arXiv 1806.10206; pytorch-grad-cam's
    `DeepFeatureFactorization`). The activations of the whole batch, as a
    (C, N·h·w) matrix `A` shifted by each channel's minimum `m`, are
    factorised by non-negative matrix factorisation (see `factorize`):

        A − m ≈ W H,    W ∈ R₊^{C×k} (concepts),    H ∈ R₊^{k×N·h·w} (concept maps)

    DFF has no class: it finds `k` parts the batch shares. To give one map per
    explained class, as every method does, the concept `j*` whose embedding
    `e_j = W_j + m` the class's score depends on most (linearised: Grad-CAM's
    channel weights `α = mean ∂S/∂A`) is shown:

        j* = argmax_j α · e_j,    L = H_{j*}

    For a GAP→Dense head `α · e_j` is the class's logit of the concept vector
    up to a shared bias, which is what pytorch-grad-cam's
    `computation_on_concepts` scores. All `k` maps and embeddings of a batch:
    `concepts(activations)`. In `explain()` and the callback the
    factorisation spans each batch the explainer runs (`batch_size`), so
    concepts are shared within a batch, as in the reference.

    Args:
        concepts: the number of concepts `k`. Defaults to `5`.
        seed: the factorisation's random start. Defaults to `0`.

    Example:

    >>> from keras_cam.methods import DeepFeatureFactorization
    >>> dff = DeepFeatureFactorization(concepts=4)
    >>> keras_cam.explain(model, images, method=dff)  # doctest: +SKIP
    >>> embeddings, maps = dff.concepts(features(images))  # doctest: +SKIP
    """

    name = "dff"
    description = "Deep Feature Factorization (Collins et al. 2018): NMF concepts; the class's."
    paper = "Collins et al., ECCV 2018 (arXiv 1806.10206)"
    cost = "1 forward + 1 backward + NMF (≤ 200 sweeps over the batch's activations)"

    def __init__(self, concepts: int = 5, seed: int = 0) -> None:
        if isinstance(concepts, bool) or not isinstance(concepts, int) or concepts < 1:
            raise ValueError(f"concepts must be an integer >= 1, got {concepts!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
        self.concepts_count = concepts
        self.seed = seed

    def concepts(self, activations: Any) -> tuple[Any, Any]:
        """`(embeddings (C, k), maps (N, *spatial, k))` of a batch: see `factorize`."""
        return factorize(activations, self.concepts_count, self.seed)

    def weighted_activations(self, activations, gradients, classes, forward=None):
        # What eigen_smooth (which bypasses `cam`) projects: the activations, as in Eigen-CAM.
        return activations

    def cam(self, activations, gradients, classes, forward=None):
        embeddings, maps = self.concepts(activations)
        weights = ops.mean(gradients, axis=spatial_axes(gradients))  # (N, C)
        chosen = ops.argmax(ops.matmul(weights, embeddings), axis=-1)
        pick = ops.one_hot(chosen, self.concepts_count, dtype=maps.dtype)
        pick = ops.reshape(pick, (-1, *[1] * (len(maps.shape) - 2), self.concepts_count))
        return ops.sum(maps * pick, axis=-1)
