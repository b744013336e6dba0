"""The timeline: thumbnails of the first probe images' maps at each event, one column each."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from keras_cam.render.overlay import Legend, card_pages, draw_border

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
