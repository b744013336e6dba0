"""Noisy linear imputation: fill removed pixels from their neighbours (ROAD's perturbation).

Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022 (arXiv 2202.00449). Removing pixels by a constant leaks
the removed shape to the model; ROAD instead sets each removed pixel to the
weighted mean of its 8 neighbours (1/6 for the 4 sides, 1/12 for the
corners), removed neighbours included, which is one sparse linear system per
image, then adds Gaussian noise to the filled values:

    Σ_j w_j (x_i − x_j) = 0    for each removed pixel i, j its neighbours in the image

Numpy and scipy only (no Keras): `keras_cam.diagnostics.metrics` runs it on
the display images before the model sees them.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import linalg

NEIGHBOURS = (
    ((-1, -1), 1 / 12),
    ((-1, 0), 1 / 6),
    ((-1, 1), 1 / 12),
    ((0, -1), 1 / 6),
    ((0, 1), 1 / 6),
    ((1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((1, 1), 1 / 12),
)
"""(row offset, column offset), weight: the 8 neighbours of ROAD's imputation."""


def noisy_linear_impute(
    image: np.ndarray,
    removed: np.ndarray,
    noise: float = 0.01,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """`image` with its `removed` pixels filled from their neighbours, plus noise.

    Args:
        image: (H, W, C) float image.
        removed: (H, W) bool, the pixels to replace.
        noise: the standard deviation of the Gaussian noise added to each
            filled value. Defaults to `0.01` (ROAD's).
        rng: the noise's generator. Defaults to `None`: a fresh unseeded one.

    Returns:
        float32 (H, W, C); the pixels not removed are unchanged.

    Example:

    >>> image = np.zeros((3, 3, 1)); image[:, 2] = 3.0
    >>> removed = np.zeros((3, 3), bool); removed[:, 1] = True
    >>> noisy_linear_impute(image, removed, noise=0.0)[:, 1, 0]
    array([1.5, 1.5, 1.5], dtype=float32)
    """
    height, width = removed.shape
    values = np.asarray(image, np.float64).reshape(height * width, -1)
    flat = removed.reshape(-1)
    unknown = np.flatnonzero(flat)
    result = values.copy()
    if len(unknown):
        variable = np.full(height * width, -1)
        variable[unknown] = np.arange(len(unknown))
        rows, cols = np.divmod(unknown, width)
        diagonal = np.zeros(len(unknown))
        right = np.zeros((len(unknown), values.shape[1]))
        entries_i, entries_j, entries_w = [], [], []
        for (dr, dc), weight in NEIGHBOURS:
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            at = np.flatnonzero(inside)
            neighbour = r[at] * width + c[at]
            diagonal[at] += weight
            known = ~flat[neighbour]
            right[at[known]] += weight * values[neighbour[known]]
            entries_i.append(at[~known])
            entries_j.append(variable[neighbour[~known]])
            entries_w.append(np.full(int((~known).sum()), -weight))
        system = sparse.csc_matrix(
            (
                np.concatenate([diagonal, *entries_w]),
                (
                    np.concatenate([np.arange(len(unknown)), *entries_i]),
                    np.concatenate([np.arange(len(unknown)), *entries_j]),
                ),
            ),
            shape=(len(unknown), len(unknown)),
        )
        filled = linalg.spsolve(system, right).reshape(len(unknown), -1)
        if noise:
            rng = rng if rng is not None else np.random.default_rng()
            filled = filled + noise * rng.standard_normal(filled.shape)
        result[unknown] = filled
    return result.reshape(np.shape(image)).astype(np.float32)
