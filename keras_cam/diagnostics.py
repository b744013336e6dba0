"""What the callback tracks across events: per-image metrics, their CSV, and the timeline."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from PIL import Image

from keras_cam import log_files
from keras_cam import metrics as _metrics
from keras_cam.explainer import CAMResult, Preprocess
from keras_cam.overlay import Legend, card_pages, draw_border

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
    return _metrics.binary_masks(masks[:count], "probe_masks")


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

    def __init__(self, names: tuple[str, ...], masks: np.ndarray | None, csv_path: str) -> None:
        self.names = names
        self.masks = masks
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

    Each column keeps the overlays as drawn at its event, on that event's
    scale, and its header says that scale ("Epoch 3 · 0-0.002"): a map 250×
    weaker than today's would otherwise look just as hot next to it. (Redrawing
    the old columns on today's scale would keep every raw map and redraw them
    all at every event, and an older, stronger map would saturate.)
    """

    def __init__(self, images: int = 4, max_events: int = 8, thumbnail: int = 64) -> None:
        self.images = images
        self.max_events = max_events
        self.thumbnail = thumbnail
        self.steps: list[int] = []
        self._columns: list[np.ndarray] = []
        self._events: list[int] = []  # each column's event number (0, 1, 2, ...)
        self._ranges: list[str | None] = []  # each column's colour range, as drawn
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

    def add(
        self,
        step: int,
        overlays: np.ndarray,
        correct: np.ndarray | None = None,
        scale: str | None = None,
    ) -> None:
        """Adds the overlays of the event at `step`.

        Args:
            step: the event's epoch.
            overlays: (N, h, w, 3) uint8, the event's overlays.
            correct: (N,) whether each prediction is right. Defaults to `None`.
            scale: the range the overlays were drawn on (e.g. `"0-0.47"`),
                shown in the column's header. Defaults to `None`: none (maps
                each drawn on their own range, as the legend says).
        """
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
        self._ranges.append(scale)
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
        self._ranges = [self._ranges[i] for i in indices]
        self._events = [self._events[i] for i in indices]

    @property
    def column_titles(self) -> list[str]:
        """Each column's header: the epoch as Keras prints it, and the range it was drawn on."""
        return [
            f"Epoch {step + 1}" + (f" · {scale}" if scale else "")
            for step, scale in zip(self.steps, self._ranges, strict=True)
        ]

    def image(
        self, display: np.ndarray, captions: Sequence[str], legend: Legend = None
    ) -> np.ndarray:
        """Pages (P, H, W, 3) of one row per image: the image, then its overlay at each event.

        Columns are headed with the epoch as Keras prints it (1-based: "Epoch 3"),
        and the range the column was drawn on.
        """
        originals = self._shrink(display[: self.images])
        rows = [
            (original, *(column[i] for column in self._columns))
            for i, original in enumerate(originals)
        ]
        headers = ["image", *self.column_titles]
        return card_pages(
            rows,
            list(captions[: len(rows)]),
            headers,
            min_cell=self.thumbnail,
            lines=1,
            min_image_px=40,
            legend=legend,
        )
