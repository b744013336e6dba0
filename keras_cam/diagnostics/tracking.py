"""What the callback tracks across events: per-image metrics and the maps drift compares."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_cam.core.explainer import CAMExplainer, Preprocess
from keras_cam.core.result import CAMResult
from keras_cam.diagnostics import registry
from keras_cam.diagnostics.metrics import binary_masks


class _WorseWhenHigher(Mapping):
    """Metric name -> whether higher is worse, for metrics with a bad end (the galleries').

    A live view of the registry: a metric registered later is in it too.
    """

    def _table(self) -> dict[str, bool]:
        return {
            name: metric.worse_when == "higher"
            for name, metric in registry.METRICS.items()
            if metric.worse_when is not None
        }

    def __getitem__(self, name: str) -> bool:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


WORSE_WHEN_HIGHER: Mapping[str, bool] = _WorseWhenHigher()
"""Which end of each metric means attention went wrong; `focus` has no bad end (a shortcut
and a sharp object map are both focused)."""


def check_metrics(
    names: Sequence[str], has_masks: bool, has_labels: bool = False
) -> tuple[str, ...]:
    """The metric names to log, in order; the mask metrics are added when masks are given."""
    if isinstance(names, str):
        names = (names,)
    unknown = [name for name in names if name not in registry.METRICS]
    if unknown:
        raise ValueError(
            f"Unknown metrics {unknown}; available: {', '.join(registry.METRICS)} (add one "
            f"with keras_cam.diagnostics.registry.register_metric)."
        )
    for need, has, remedy in (
        ("masks", has_masks, "pass probe_masks=, one (H, W) boolean mask per probe image"),
        ("labels", has_labels, "give the probe with its labels, (images, labels)"),
    ):
        needing = [name for name in names if need in registry.METRICS[name].needs]
        if needing and not has:
            raise ValueError(f"Metrics {needing} need the objects' {need}: {remedy}.")
    chosen = list(dict.fromkeys(names))
    if has_masks:
        chosen += [
            name
            for name, metric in registry.METRICS.items()
            if metric.needs == ("masks",) and name not in chosen
        ]
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
    return binary_masks(masks[:count], "probe_masks")


def explain_again(
    explainer: CAMExplainer, method: str, result: CAMResult, preprocess: Preprocess | None
) -> Callable[[np.ndarray], np.ndarray]:
    """Display images -> `method`'s heatmaps for `result`'s classes (ARCC's coherency).

    Runs only when a metric that needs `"explain"` asks; one more explainer call
    (every method of the explainer) on the images it is given.
    """

    def again(images: np.ndarray) -> np.ndarray:
        maps = explainer(images, targets=np.asarray(result.classes), preprocess=preprocess)
        return maps[method].heatmaps

    return again


class ProbeMetrics:
    """Per-image metric values of each event, and the maps they compare with.

    `drift` compares each method's maps with the same method's previous
    event, so it has no value at the first event (an empty CSV cell, no
    scalar).
    """

    def __init__(
        self,
        names: tuple[str, ...],
        masks: np.ndarray | None,
        labels: np.ndarray | None = None,
    ) -> None:
        self.names = names
        self.masks = masks
        self.labels = labels
        self._previous: dict[str, np.ndarray] = {}

    def values(
        self,
        method: str,
        result: CAMResult,
        model: keras.Model,
        images: np.ndarray,
        preprocess: Preprocess | None,
        explain: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-image values (N,) of every metric that has one at this event.

        `explain` re-runs `method` on display images (for `"explain"` metrics).
        """
        maps = result.heatmaps
        inputs = registry.MetricInputs(
            maps=maps,
            classes=result.classes,
            model=model,
            images=images,
            preprocess=preprocess,
            masks=self.masks,
            labels=self.labels,
            previous=self._previous.get(method),
            explain=explain,
        )
        found: dict[str, np.ndarray] = {}
        for name in self.names:
            metric = registry.get_metric(name)
            if "previous" in metric.needs and inputs.previous is None:
                continue  # no value at the first event
            found[name] = metric.compute(inputs)
        self._previous[method] = maps.copy()
        return found
