"""Localisation metrics: numpy arrays in, numbers out."""

from __future__ import annotations

import numpy as np


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray) -> float:
    """Share of images whose heatmap maximum falls inside the object mask.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
    2016 (without their 15-pixel tolerance). A map whose maximum is shared by
    several pixels counts as a hit when the first of them, in row-major order,
    lies in the mask; an all-zero map therefore points at pixel (0, 0).

    Args:
        heatmaps: (N, H, W) maps.
        masks: (N, H, W) boolean object masks of the same size.

    Returns:
        The hit rate in [0, 1].

    Example:

    >>> maps = np.zeros((1, 2, 2)); maps[0, 1, 1] = 1.0
    >>> pointing_game(maps, np.eye(2, dtype=bool)[None])
    1.0
    """
    heatmaps = np.asarray(heatmaps)
    masks = np.asarray(masks, dtype=bool)
    if heatmaps.shape != masks.shape or heatmaps.ndim != 3:
        raise ValueError(
            f"heatmaps and masks must both be (N, H, W) of the same shape, got "
            f"{heatmaps.shape} and {masks.shape}."
        )
    if len(heatmaps) == 0:
        raise ValueError("pointing_game needs at least one image.")
    flat = np.nan_to_num(heatmaps.reshape(len(heatmaps), -1), nan=-np.inf)
    peaks = flat.argmax(axis=1)
    hits = masks.reshape(len(masks), -1)[np.arange(len(masks)), peaks]
    return float(hits.mean())
