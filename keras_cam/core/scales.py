"""Which map values get the full colour offline: `explain(normalize=...)`.

`CAMResult.heatmaps` scales every map to its own maximum, so a map a
thousand times weaker than its neighbour looks just as hot. `fixed_scale`
applies one scale instead: `"probe"` for the maps of the call, a number for a
scale fixed across calls. A map with nothing to show (all-zero heatmap: flat,
or negligible next to the layer's activations) stays zero under every scale
and never sets the scale. The callback's scales, event after event, are
`keras_cam.render.display_scale.DisplayScale`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from keras import ops

from keras_cam.core.spatial import resize

if TYPE_CHECKING:
    from keras_cam.core.result import CAMResult

OfflineScale = str | float


def check_offline_normalize(normalize: OfflineScale) -> OfflineScale:
    """`normalize` if `explain()` can apply it, else a ValueError saying what can."""
    if isinstance(normalize, str) and normalize == "run":
        raise ValueError(
            "normalize='run' is the callback's running maximum over a training run; "
            "explain() has no run to follow. Use normalize='probe' for one scale across "
            "the maps of this call, or a number (the raw value shown at full colour, e.g. "
            "the largest CAMResult.raw over your data set) for one scale across calls."
        )
    if isinstance(normalize, (int, float)) and not isinstance(normalize, bool):
        if not (math.isfinite(normalize) and normalize > 0):
            raise ValueError(
                f"A fixed normalize= is the raw map value shown at full colour and must be "
                f"a finite number > 0, got {normalize!r}."
            )
        return float(normalize)
    if normalize not in ("image", "probe"):
        raise ValueError(
            f"normalize must be 'image' (each map to its own range), 'probe' (one scale for "
            f"all maps of the call) or a number > 0 (the raw value at full colour), "
            f"got {normalize!r}."
        )
    return normalize


def _flat(heatmaps: np.ndarray, rank: int) -> np.ndarray:
    """True per map (leading axes) where the heatmap over the last `rank` axes is all zero."""
    return heatmaps.reshape(*heatmaps.shape[:-rank], -1).max(axis=-1, initial=0.0) <= 0.0


def flat_maps(result: CAMResult) -> np.ndarray:
    """(N,) True where a map has nothing to show (its heatmap is all zero)."""
    return _flat(result.heatmaps, result.heatmaps.ndim - 1)


def _shown_raw(result: CAMResult, rank: int) -> np.ndarray:
    """The raw maps, zero where the map has nothing to show, so those never set a scale."""
    flat = _flat(result.heatmaps, rank)[(..., *([None] * rank))]
    return np.where(flat, 0.0, result.raw).astype(np.float32)


def _resized(raw: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Raw maps (..., *spatial) resized to `size` over their last len(size) axes."""
    rank = len(size)
    # The explainer's own resize: the heatmaps were upsampled with it, on this thread.
    resized = ops.convert_to_numpy(resize(raw.reshape(-1, *raw.shape[-rank:]), tuple(size)))
    return np.asarray(resized, dtype=np.float32).reshape(*raw.shape[:-rank], *size)


def fixed_scale(result: CAMResult, normalize: OfflineScale, rank: int) -> CAMResult:
    """`result` with its heatmaps on the scale `normalize` names (see `explain`).

    Args:
        result: a `CAMResult` of an explainer (a top-k or multi-label result too).
        normalize: a value `check_offline_normalize` accepted: `"image"`
            (returns `result`: each map to its own range),
            `"probe"` (the raw maps divided by their largest value in
            `result`) or a number > 0 (the raw value shown at full colour;
            larger values are clipped to 1).
        rank: the maps' spatial axes (1, 2 or 3).

    Returns:
        The result with `heatmaps` replaced by the raw maps at the heatmaps'
        size, divided by the scale's peak and clipped to [0, 1]; maps with
        nothing to show stay zero.
    """
    if normalize == "image":
        return result
    raw = _shown_raw(result, rank)
    peak = float(raw.max(initial=0.0)) if normalize == "probe" else normalize
    shown = _resized(raw, result.heatmaps.shape[-rank:])
    heatmaps = np.clip(shown / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(shown)
    return replace(result, heatmaps=heatmaps.astype(np.float32))
