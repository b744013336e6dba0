"""Which map values get the full colour: per image, per probe, or fixed across the run.

`CAMResult.heatmaps` scales every map to its own maximum, so a map a
thousand times weaker than its neighbour looks just as hot. The callback
draws with a `DisplayScale` instead: `"probe"` divides the raw maps of one
event by the largest of them, `"run"` by the largest seen so far in the run,
so a map that fades over training fades on screen. A map with nothing to
show (all-zero heatmap: flat, or negligible next to the layer's activations)
stays zero under every scale and never sets the scale.

Offline, `explain(normalize=...)` applies the same scales to
`CAMResult.heatmaps` with `fixed_scale`: `"probe"` is one scale for the maps
of the call, and a number is a scale fixed across calls (there is no run to
take a running maximum over).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from keras_cam.render.overlay import resize_maps

if TYPE_CHECKING:
    from keras_cam.core.result import CAMResult

NORMALIZE = ("image", "probe", "run")
OfflineScale = str | float


def check_normalize(normalize: str) -> str:
    """`normalize` if it names a scale, else a ValueError saying which exist."""
    if normalize not in NORMALIZE:
        raise ValueError(
            f"normalize must be one of {', '.join(map(repr, NORMALIZE))}, got {normalize!r}: "
            f"'image' scales each map to its own maximum, 'probe' all maps of an event to "
            f"their common maximum, 'run' to the largest value seen so far in training."
        )
    return normalize


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
    resized = resize_maps(raw.reshape(-1, *raw.shape[-rank:]), tuple(size))
    return resized.reshape(*raw.shape[:-rank], *size)


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


class DisplayScale:
    """Turns one method's maps into display maps in [0, 1], event after event.

    Args:
        normalize: `"image"` (each map to its own range, as
            `CAMResult.heatmaps`), `"probe"` (the raw maps of the event
            divided by their largest value) or `"run"` (divided by the
            largest raw value of any event so far).

    Example:

    >>> scale = DisplayScale("run")                                   # doctest: +SKIP
    >>> maps, top = scale(result)  # top: the raw value at full colour  # doctest: +SKIP
    """

    def __init__(self, normalize: str) -> None:
        self.normalize = check_normalize(normalize)
        self.peak = 0.0

    def __call__(self, result: CAMResult) -> tuple[np.ndarray, float | None]:
        """The display maps (N, h, w) and the raw value at full colour (None: per image)."""
        if self.normalize == "image":
            return result.heatmaps, None
        raw = _shown_raw(result, result.raw.ndim - 1)
        peak = float(raw.max(initial=0.0))
        if self.normalize == "run":
            self.peak = peak = max(self.peak, peak)
        if raw.ndim != 3:  # sequence and volume cells are drawn at the heatmaps' size
            # (image overlays resize their maps themselves).
            raw = resize_maps(raw, result.heatmaps.shape[1:])
        return raw / peak if peak > 0 else raw, peak
