"""What the callback tracks across events: per-image metrics, their CSV, and the timeline."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from PIL import Image

from keras_cam.core.explainer import Preprocess
from keras_cam.core.result import CAMResult
from keras_cam.diagnostics import registry
from keras_cam.render.overlay import Legend, card_pages, draw_border
from keras_cam.sinks import log_files


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
    return masks[:count].astype(bool)


def csv_file_for(path: str, header: list[str]) -> str:
    """`path`, or `stem_2.csv`, `stem_3.csv`, ...: the first that is new or has this header.

    A log directory reused with other metrics keeps every file valid: rows are
    only ever appended under their own header.
    """
    stem, extension = os.path.splitext(path)
    candidate, number = path, 1
    while log_files.size(candidate):
        with log_files.open_text(candidate, "r") as file:
            if next(csv.reader(file), None) == header:
                return candidate
        number += 1
        candidate = f"{stem}_{number}{extension}"
    return candidate


class ProbeMetrics:
    """Per-image metric values of each event, the maps they compare with, and the CSV file.

    `drift` compares each method's maps with the same method's previous
    event, so it has no value at the first event (an empty CSV cell, no
    scalar).
    """

    def __init__(
        self,
        names: tuple[str, ...],
        masks: np.ndarray | None,
        csv_path: str,
        labels: np.ndarray | None = None,
    ) -> None:
        self.names = names
        self.masks = masks
        self.labels = labels
        self.header = ["step", "method", "image", *names]
        self.csv_path = csv_file_for(csv_path, self.header)
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
        inputs = registry.MetricInputs(
            maps=maps,
            classes=result.classes,
            model=model,
            images=images,
            preprocess=preprocess,
            masks=self.masks,
            labels=self.labels,
            previous=self._previous.get(method),
        )
        found: dict[str, np.ndarray] = {}
        for name in self.names:
            metric = registry.get_metric(name)
            if "previous" in metric.needs and inputs.previous is None:
                continue  # no value at the first event
            found[name] = metric.compute(inputs)
        self._previous[method] = maps.copy()
        return found

    def append_csv(self, step: int, method: str, values: dict[str, np.ndarray], count: int) -> None:
        """One row per image: step, method, image index, then each metric (empty if none)."""
        new = not log_files.size(self.csv_path)
        with log_files.open_text(self.csv_path, "a") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(self.header)
            for image in range(count):
                cells = [
                    f"{values[name][image]:.6g}" if name in values else "" for name in self.names
                ]
                writer.writerow([step, method, image, *cells])


RIGHT, WRONG = (0, 170, 0), (220, 0, 0)


class Timeline:
    """Thumbnails of the first probe images' overlays at each event, oldest first.

    Memory stays bounded over long runs: at most `max_events` columns of
    thumbnails no larger than `thumbnail` pixels. The columns stay evenly
    spread over the run: every `stride`-th event, plus the latest; when they
    no longer fit, the stride doubles (the first event always stays), so a
    phase in the middle of a long run keeps its columns. Where the
    prediction's correctness is known, each thumbnail has a green (right) or
    red (wrong) border.
    """

    def __init__(self, images: int = 4, max_events: int = 8, thumbnail: int = 64) -> None:
        self.images = images
        self.max_events = max_events
        self.thumbnail = thumbnail
        self.steps: list[int] = []
        self._columns: list[np.ndarray] = []
        self._events: list[int] = []  # each column's event number (0, 1, 2, ...)
        self._stride = 1

    def _shrink(self, overlays: np.ndarray) -> np.ndarray:
        height, width = overlays.shape[1:3]
        scale = self.thumbnail / max(height, width)
        if scale >= 1:
            return overlays.copy()
        size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
        return np.stack(
            [
                np.asarray(Image.fromarray(o).resize(size, Image.Resampling.BILINEAR))
                for o in overlays
            ]
        )

    def add(self, step: int, overlays: np.ndarray, correct: np.ndarray | None = None) -> None:
        """Adds the overlays of the event at `step`; `correct`: (N,) right predictions."""
        column = self._shrink(overlays[: self.images])
        if correct is not None:
            column = np.stack(
                [
                    draw_border(thumbnail, RIGHT if right else WRONG)
                    for thumbnail, right in zip(column, correct[: len(column)], strict=True)
                ]
            )
        event = self._events[-1] + 1 if self._events else 0
        if self._events and self._events[-1] % self._stride:  # kept only as the latest
            self._keep(range(len(self._events) - 1))
        self.steps.append(step)
        self._columns.append(column)
        self._events.append(event)
        while len(self._events) > self.max_events:
            self._stride *= 2
            last = len(self._events) - 1
            self._keep(
                [i for i, e in enumerate(self._events) if e % self._stride == 0 or i == last]
            )

    def _keep(self, indices: Sequence[int]) -> None:
        self.steps = [self.steps[i] for i in indices]
        self._columns = [self._columns[i] for i in indices]
        self._events = [self._events[i] for i in indices]

    def image(
        self, display: np.ndarray, captions: Sequence[str], legend: Legend = None
    ) -> np.ndarray:
        """Pages (P, H, W, 3) of one row per image: the image, then its overlay at each event.

        Columns are headed with the epoch as Keras prints it (1-based: "Epoch 3").
        """
        originals = self._shrink(display[: self.images])
        rows = [
            (original, *(column[i] for column in self._columns))
            for i, original in enumerate(originals)
        ]
        headers = ["image", *(f"Epoch {step + 1}" for step in self.steps)]
        return card_pages(
            rows,
            list(captions[: len(rows)]),
            headers,
            min_cell=self.thumbnail,
            lines=1,
            min_image_px=40,
            legend=legend,
        )
