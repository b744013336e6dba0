"""What the callback tracks across events: per-image metrics and the maps drift compares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_cam.core.explainer import CAMResult, Preprocess
from keras_cam.diagnostics import metrics as _metrics

MASK_METRICS = ("pointing_game", "energy_in_mask")
FORWARD_METRICS = ("deletion", "insertion", "average_drop", "increase_in_confidence")
METRICS = ("drift", "focus", *MASK_METRICS, *FORWARD_METRICS)

# Which end of each metric means attention went wrong, for the galleries of worst
# cases. `focus` has no bad end (a shortcut and a sharp object map are both focused).
WORSE_WHEN_HIGHER = {
    "drift": True,
    "pointing_game": False,
    "energy_in_mask": False,
    "deletion": True,  # a faithful map makes the score fall fast: a low AUC
    "insertion": False,
    "average_drop": True,
    "increase_in_confidence": False,
}

_FORWARD_FUNCTIONS = {
    "deletion": _metrics.deletion_auc,
    "insertion": _metrics.insertion_auc,
    "average_drop": _metrics.average_drop,
    "increase_in_confidence": _metrics.increase_in_confidence,
}


def check_metrics(names: Sequence[str], has_masks: bool) -> tuple[str, ...]:
    """The metric names to log, in order; the mask metrics are added when masks are given."""
    if isinstance(names, str):
        names = (names,)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; available: {', '.join(METRICS)}.")
    needing_masks = [name for name in names if name in MASK_METRICS]
    if needing_masks and not has_masks:
        raise ValueError(
            f"Metrics {needing_masks} need the objects' masks: pass probe_masks=, one "
            f"(H, W) boolean mask per probe image."
        )
    chosen = list(dict.fromkeys(names))
    if has_masks:
        chosen += [name for name in MASK_METRICS if name not in chosen]
    return tuple(chosen)


def log_key(method: str, metric: str) -> str:
    """The flat Keras `logs` key of a method's metric: `cam_gradcampp_focus` for Grad-CAM++."""
    name = "".join(c if c.isalnum() else "_" for c in method.replace("+", "p"))
    return f"cam_{name}_{metric}"


def worst_images(per_image: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Indices of the `k` images with the worst values of `metric`, worst first.

    Ties keep the probe order; NaN (no value) is never chosen.
    """
    values = np.asarray(per_image, dtype=np.float64)
    badness = values if WORSE_WHEN_HIGHER[metric] else -values
    order = np.argsort(np.where(np.isnan(badness), -np.inf, -badness), kind="stable")
    order = order[~np.isnan(badness[order])]
    return order[:k]


def check_masks(masks: Any, count: int, size: tuple[int, ...]) -> np.ndarray:
    """The masks of the first `count` probe inputs of spatial `size`, as (N, *size) booleans.

    `size` is (H, W) for images, (T,) for sequences, (D, H, W) for volumes.
    """
    masks = np.asarray(keras.ops.convert_to_numpy(masks))
    if masks.ndim == len(size) + 2 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim != len(size) + 1 or len(masks) < count or masks.shape[1:] != tuple(size):
        axes = {1: "(N, T)", 2: "(N, H, W)", 3: "(N, D, H, W)"}[len(size)]
        raise ValueError(
            f"probe_masks must be {axes} with one mask per probe input of size "
            f"{'×'.join(str(s) for s in size)} (at least {count}), got shape {masks.shape}."
        )
    return masks[:count].astype(bool)


class ProbeMetrics:
    """Per-image metric values of each event, and the maps they compare with.

    `drift` compares each method's maps with the same method's previous
    event, so it has no value at the first event (an empty CSV cell, no
    scalar).
    """

    def __init__(self, names: tuple[str, ...], masks: np.ndarray | None) -> None:
        self.names = names
        self.masks = masks
        self._previous: dict[str, np.ndarray] = {}

    def values(
        self,
        method: str,
        result: CAMResult,
        model: keras.Model,
        images: np.ndarray,
        preprocess: Preprocess | None,
    ) -> dict[str, np.ndarray]:
        """Per-image values (N,) of every metric that has one at this event."""
        maps = result.heatmaps
        found: dict[str, np.ndarray] = {}
        for name in self.names:
            if name == "drift":
                if method in self._previous:
                    found[name] = _metrics.drift(self._previous[method], maps, per_image=True)
            elif name == "focus":
                found[name] = _metrics.focus(maps, per_image=True)
            elif name == "pointing_game":
                found[name] = _metrics.pointing_game(maps, self.masks, per_image=True)
            elif name == "energy_in_mask":
                found[name] = _metrics.energy_in_mask(maps, self.masks, per_image=True)
            else:
                found[name] = _FORWARD_FUNCTIONS[name](
                    model, images, maps, result.classes, preprocess=preprocess, per_image=True
                )
        self._previous[method] = maps.copy()
        return found
