"""Which map values get the full colour in the callback's pictures, event after event.

`CAMResult.heatmaps` scales every map to its own maximum, so a map a
thousand times weaker than its neighbour looks just as hot. The callback
draws with a `DisplayScale` instead: `"probe"` divides the raw maps of one
event by the largest of them, `"run"` by the largest seen so far in the run,
so a map that fades over training fades on screen. A map with nothing to
show (all-zero heatmap: flat, or negligible next to the layer's activations)
stays zero under every scale and never sets the scale. (Offline,
`explain(normalize=...)` uses `keras_cam.core.scales.fixed_scale`.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_cam.render.overlay import resize_maps

NORMALIZE = ("image", "probe", "run")


def check_normalize(normalize: str) -> str:
    """`normalize` if it names a scale, else a ValueError saying which exist."""
    if normalize not in NORMALIZE:
        raise ValueError(
            f"normalize must be one of {', '.join(map(repr, NORMALIZE))}, got {normalize!r}: "
            f"'image' scales each map to its own maximum, 'probe' all maps of an event to "
            f"their common maximum, 'run' to the largest value seen so far in training."
        )
    return normalize


def _shown_raw(heatmaps: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The raw maps (N, *spatial), zero where the heatmap is all zero (nothing to show)."""
    flat = heatmaps.reshape(len(heatmaps), -1).max(axis=-1, initial=0.0) <= 0.0
    return np.where(flat[(..., *([None] * (raw.ndim - 1)))], 0.0, raw).astype(np.float32)


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

    def __call__(self, result: Any) -> tuple[np.ndarray, float | None]:
        """The display maps (N, h, w) of a `CAMResult` and the raw value at full colour.

        The value is None for `"image"`: each map on its own scale.
        """
        if self.normalize == "image":
            return result.heatmaps, None
        raw = _shown_raw(result.heatmaps, result.raw)
        peak = float(raw.max(initial=0.0))
        if self.normalize == "run":
            self.peak = peak = max(self.peak, peak)
        if raw.ndim != 3:  # sequence and volume cells are drawn at the heatmaps' size
            # (image overlays resize their maps themselves).
            raw = resize_maps(raw, result.heatmaps.shape[1:])
        return raw / peak if peak > 0 else raw, peak
