"""An event's pictures: grids, overlays, timelines, the compare table, top-k and galleries.

The callback hands each event's maps here (on its background thread) and
gets back `{tag: pages}`, uint8 `(P, H, W, 3)` per tag, for its sinks. Only
numpy and the other render modules: no Keras. A result is anything with the
fields of `keras_cam.CAMResult` (a dataclass: `heatmaps`, `raw`, `classes`,
`scores`, `predicted`, `confidence`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from keras_cam.render.cell_display import overlay_pictures, readable_px
from keras_cam.render.compare_table import compare_pages
from keras_cam.render.overlay import ColourBar, captioned_grid, card_pages, draw_marks
from keras_cam.render.timeline import Timeline

Scale = Callable[[Any], tuple[np.ndarray, "float | None"]]
"""Maps a result to its display maps and the raw value at full colour (None: per map)."""

Galleries = Mapping[str, tuple[np.ndarray, "str | None"]]
"""Gallery name (`worst_drift`, `misclassified`) -> (probe indices, the metric shown or None)."""


class View(Protocol):
    """What to draw: the fields of `keras_cam.ViewOptions` that rendering reads."""

    images: tuple[str, ...]
    max_images: int
    alpha: float
    colormap: str
    normalize: str
    top_k: int | None


@dataclass(frozen=True)
class Probe:
    """The probe as drawn, fixed for a run.

    Attributes:
        display: uint8 pictures of every measured probe image (`probe_pictures`).
        images: the probe as read (sequence and volume cells draw the signal).
        spatial_rank: 1 (sequences), 2 (images) or 3 (volumes).
        labels: class ids per image, or None.
        masks: object masks per image (marked on sequence and volume cells), or None.
        class_names: names for captions, indexed by class, or None.
        scores_are_probabilities: the head ends in softmax/sigmoid (top-k captions).
        confidence_is_probability: `CAMResult.confidence` is a probability (`p=`).
        task: a task target that draws its marks and writes its captions, or None.
        task_labels: the task's labels (masks, values), or None.
        multi_label: maps of `targets="positive"`.
    """

    display: np.ndarray
    images: np.ndarray
    spatial_rank: int = 2
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    class_names: Sequence[str] | None = None
    scores_are_probabilities: bool = False
    confidence_is_probability: bool = True
    task: Any = None
    task_labels: Any = None
    multi_label: bool = False


def _flat(heatmaps: np.ndarray) -> np.ndarray:
    """(N,) True where a map has nothing to show (its heatmap is all zero)."""
    return heatmaps.reshape(len(heatmaps), -1).max(axis=-1, initial=0.0) <= 0.0


class EventPainter:
    """Draws the pictures of each event; keeps what spans events (scales, timelines).

    Args:
        probe: the probe as drawn.
        view: what to draw (`keras_cam.ViewOptions`).
        scales: method name -> its display scale (`keras_cam.core.scales.DisplayScale`).

    Example:

    >>> painter = EventPainter(Probe(display, images), view, {"gradcam": scale})  # doctest: +SKIP
    >>> pages = painter(results, values, step=0)  # {"cam/gradcam/grid": (P, H, W, 3), ...}
    ... # doctest: +SKIP
    """

    def __init__(self, probe: Probe, view: View, scales: Mapping[str, Scale]) -> None:
        self.probe = probe
        self.view = view
        self._scales = dict(scales)
        self._timelines = {name: Timeline() for name in scales}

    @property
    def count(self) -> int:
        """Probe images drawn."""
        return min(self.view.max_images, len(self.probe.display))

    def __call__(
        self,
        results: Mapping[str, Any],
        values: Mapping[str, Mapping[str, np.ndarray]],
        step: int,
        galleries: Mapping[str, Galleries] | None = None,
    ) -> dict[str, np.ndarray]:
        """The pages of every picture of this event, by tag.

        Args:
            results: method -> the maps of every measured probe image (then
                the top-k ranks, `top_k` copies of the probe, when asked).
            values: method -> metric -> per-image values (the galleries' captions).
            step: the event's step (the timeline's column header).
            galleries: method -> the galleries to draw. Defaults to `None`.
        """
        return self.paint(results, values, step, galleries)[0]

    def paint(
        self,
        results: Mapping[str, Any],
        values: Mapping[str, Mapping[str, np.ndarray]],
        step: int,
        galleries: Mapping[str, Galleries] | None = None,
    ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """The pages of this event by tag, and its per-image table (`Event.table`).

        The table reuses the overlays drawn for the pages: one row per method
        and drawn probe image, with the picture, its overlay, the true and
        predicted classes, the confidence and every metric in `values`.
        """
        probe, view = self.probe, self.view
        measured, count = len(probe.display), self.count
        display = probe.display[:count]
        shown = set(view.images)
        pages: dict[str, np.ndarray] = {}
        overlays_of, ranges, flat = {}, {}, {}
        for name, combined in results.items():
            every = combined.take(0, measured)  # without the top-k ranks
            flat[name] = _flat(every.heatmaps)[:count]
            maps, top = self._scales[name](every)
            every = replace(every, heatmaps=maps)
            bar = self._colour_bar(top)
            ranges[name] = "per map" if top is None else f"0-{bar.high}"
            result = every.take(0, count)
            overlays = self._overlays(np.arange(count), result.heatmaps)
            overlays_of[name] = overlays
            tag = f"cam/{name}"
            if "overlays" in shown:
                pages[tag] = overlays
            if "grid" in shown:
                pages[f"{tag}/grid"] = self._grid(result, overlays, flat[name], bar)
            for gallery, (indices, metric) in (galleries or {}).get(name, {}).items():
                if len(indices):
                    found = values.get(name, {})
                    pages[f"{tag}/{gallery}"] = self._gallery(every, indices, metric, found)
            timeline = self._timelines[name]
            scale = None if top is None else ranges[name]
            timeline.add(step, overlays, self._correct(result), scale)
            if "timeline" in shown:
                titles = [self._title(i) for i in range(count)]
                # Each column is drawn on its own event's range, named in its header.
                legend = (
                    bar
                    if scale is None
                    else replace(bar, high="max", note="range over each column")
                )
                pages[f"{tag}/timeline"] = timeline.image(display, titles, legend=legend)
            if view.top_k is not None:
                pages[f"{tag}/topk"] = self._top_k_grid(combined)[None]
        if len(results) > 1 and "compare" in shown:
            first = next(iter(results.values())).take(0, count)
            captions = []
            for i in range(count):
                flat_here = [name for name in results if flat[name][i]]
                note = f" · flat: {', '.join(flat_here)}" if flat_here else ""
                captions.append(self._caption(first, i) + note)
            pages["cam/compare"] = compare_pages(
                display, overlays_of, captions, ranges, view.colormap, min_image_px=self._px
            )
        table = [
            self._row(name, results[name], i, overlays[i], values.get(name, {}))
            for name, overlays in overlays_of.items()
            for i in range(count)
        ]
        return pages, table

    def _row(
        self, name: str, result: Any, i: int, overlay: np.ndarray, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One row of the event's per-image table."""
        probe = self.probe
        plain = probe.task is None and not probe.multi_label
        true = None
        if plain and probe.labels is not None:
            true = self._name(int(probe.labels[i]))
        predicted = self._name(int(result.predicted[i])) if plain else self._caption(result, i)
        return {
            "method": name,
            "image": i,
            "picture": probe.display[i],
            "overlay": overlay,
            "true": true,
            "predicted": predicted,
            "probability": float(result.confidence[i]),
            **{metric: float(per_image[i]) for metric, per_image in values.items()},
        }

    @property
    def _px(self) -> int:
        return readable_px(self.probe.spatial_rank)

    def _grid(self, result: Any, overlays: np.ndarray, flat: np.ndarray, bar: ColourBar):
        """Each probe image next to its map, captioned, with the colour bar."""
        count = len(overlays)
        captions = [
            self._caption(result, i) + (" · flat map" if flat[i] else "") for i in range(count)
        ]
        pairs = list(zip(self.probe.display[:count], overlays, strict=True))
        task = self.probe.task
        if task is not None:
            pairs = [
                draw_marks(image, overlaid, task.marks(i, result.predicted[i]))
                for i, (image, overlaid) in enumerate(pairs)
            ]
        return card_pages(pairs, captions, min_image_px=self._px, legend=bar)

    def _gallery(
        self, result: Any, indices: np.ndarray, metric: str | None, values: Mapping[str, Any]
    ) -> np.ndarray:
        """The given probe images (the worst by a metric, the misclassified) with their maps."""
        overlays = self._overlays(indices, result.heatmaps[indices])
        captions = [
            f"#{i} "
            + (f"{metric} {values[metric][i]:.3g} · " if metric else "")
            + self._caption(result, i)
            for i in indices
        ]
        pairs = list(zip(self.probe.display[indices], overlays, strict=True))
        return captioned_grid(pairs, captions)[None]

    def _colour_bar(self, top: float | None) -> ColourBar:
        """The legend of the display maps: raw values from 0 to `top`."""
        if top is None:
            return ColourBar(self.view.colormap, "min", "max", "per map")
        return ColourBar(self.view.colormap, "0", f"{top:.2g}", f"{self.view.normalize} max")

    def _correct(self, result: Any) -> np.ndarray | None:
        """Per drawn image, whether the prediction is right (None without class labels)."""
        labels = self.probe.labels
        if labels is None or self.probe.multi_label:
            return None
        return result.predicted == labels[: len(result.predicted)]

    def _overlays(self, indices: Any, heatmaps: np.ndarray) -> np.ndarray:
        """The pictures of these probe samples' maps: overlays, sequence or volume cells."""
        probe = self.probe
        return overlay_pictures(
            probe.images[indices],
            probe.display[indices],
            heatmaps,
            self.view.alpha,
            self.view.colormap,
            None if probe.masks is None or heatmaps.ndim == 3 else probe.masks[indices],
        )

    def _top_k_grid(self, combined: Any) -> np.ndarray:
        """Each drawn image, then the maps of its k highest-scoring classes."""
        count, k = len(self.probe.display), self.view.top_k
        ranks = [combined.take(count * (r + 1), count * (r + 2)) for r in range(k)]
        groups, captions = [], []
        # Scores are the head's probabilities where it has a softmax/sigmoid, else logits.
        label = "p=" if self.probe.scores_are_probabilities else "logit "
        for i, image in enumerate(self.probe.display[: self.count]):
            groups.append([image])
            captions.append(self._title(i))
            for ranked in ranks:
                groups.append([self._overlays([i], ranked.heatmaps[i : i + 1])[0]])
                captions.append(
                    f"{self._name(int(ranked.classes[i]))} {label}{ranked.scores[i]:.2f}"
                )
        return captioned_grid(groups, captions, columns=k + 1)

    def _title(self, i: int) -> str:
        if self.probe.labels is not None:
            return f"true {self._name(int(self.probe.labels[i]))}"
        return f"probe {i}"

    def _name(self, class_id: int) -> str:
        names = self.probe.class_names
        if names is not None and 0 <= class_id < len(names):
            return str(names[class_id])
        return f"class {class_id}"

    def _caption(self, result: Any, i: int) -> str:
        probe = self.probe
        if probe.task is not None:
            label = None if probe.task_labels is None else probe.task_labels[i]
            name = self._name(int(result.classes[i]))
            return probe.task.caption(result.predicted[i], float(result.scores[i]), label, name)
        if probe.multi_label:
            positive = [self._name(k) for k in np.flatnonzero(result.predicted[i])]
            return "positive: " + (", ".join(positive) or "none")
        parts = []
        if probe.labels is not None:
            parts.append(f"true {self._name(int(probe.labels[i]))}")
        confidence = f"{result.confidence[i]:.2f}"
        if probe.confidence_is_probability:
            confidence = f"p={confidence}"
        parts.append(f"pred {self._name(int(result.predicted[i]))} {confidence}")
        if result.classes[i] != result.predicted[i] and result.classes[i] >= 0:
            parts.append(f"map of {self._name(int(result.classes[i]))}")
        return " · ".join(parts)
