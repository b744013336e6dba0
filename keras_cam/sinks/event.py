"""What a sink receives (`Event`), what a sink is (`Sink`), and the one reopen-after-error path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger("keras_cam")


class EventWriteError(RuntimeError):
    """Writing an event failed (a full disk, a lost remote filesystem): an outage, not a bug.

    `ReopeningSink` raises it from the sink's own error (its `__cause__`), so
    the callback can tell a write outage, after which writing resumes, from a
    drawing or configuration error that would repeat at every event.
    """


@dataclass(frozen=True)
class Event:
    """Everything one step of the callback writes, as plain Python and numpy.

    Attributes:
        step: the step (the epoch index for the callback).
        scalars: tag -> value, e.g. `{"cam/gradcam/focus": 0.42}`.
        images: tag -> uint8 pages `(P, H, W, 3)`, e.g. `"cam/gradcam/grid"`.
        histograms: tag -> the values whose distribution is shown.
        texts: tag -> Markdown text, e.g. `"cam/alarms"`.
        rows: one dict per method and probe image: `step`, `method`,
            `image`, then every metric of the run (None where it has no
            value at this step, e.g. `drift` at the first event).
        charts: method -> the scalar names it logs over the whole run, for
            sinks that lay out a dashboard once (TensorBoard's custom
            scalars).
        name: what the event is about where that is not the step alone (the
            command line's input file); sinks that name files use it. None
            for the callback's events.
        table: one dict per method and drawn probe image, for sinks that show
            sortable tables (W&B, MLflow): `method`, `image` (probe index),
            `picture` (uint8 `(H, W, 3)`, the probe image as drawn),
            `overlay` (uint8, its map over it), `true` (class name, or None),
            `predicted` (class name, or the task's caption), `probability`
            (the prediction's confidence), then every metric of the event.
    """

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    charts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    name: str | None = None
    table: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class Sink(Protocol):
    """Where events go. The callback calls these from its one background thread only.

    `open` is called before the first `write` of each `fit` and again after a
    failed `write` (see `ReopeningSink`); `close` at the end of each `fit`.

    Example:

    >>> class PrintScalars:
    ...     def open(self): pass
    ...     def write(self, event):
    ...         for tag, value in event.scalars.items():
    ...             print(event.step, tag, round(value, 3))
    ...     def close(self): pass
    """

    def open(self) -> None:
        """Acquires what writing needs (a file, a connection)."""

    def write(self, event: Event) -> None:
        """Writes one event."""

    def close(self) -> None:
        """Flushes and releases what `open` acquired."""


class ReopeningSink:
    """A sink whose failed write closes it; the next event opens it again.

    On a full disk `tf.summary` and the `tensorboard` writer raise
    `ResourceExhaustedError`-like errors, not `OSError`, and a writer that
    failed once may never write again (its file ends in a half-written
    record). So any error in `write` closes the sink (a second error while
    closing is only logged) and is raised again as `EventWriteError` from the
    original; the next `write` opens it
    afresh: for TensorBoard a new event file, which TensorBoard reads after
    the old one, so nothing written later is hidden. The events that failed
    are lost; the caller warns.

    Args:
        sink: the `Sink` to wrap.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._open = False

    def open(self) -> None:
        if not self._open:
            self.sink.open()
            self._open = True

    def write(self, event: Event) -> None:
        try:
            self.open()
            self.sink.write(event)
        except Exception as error:
            if self._open:
                self._open = False
                try:
                    self.sink.close()
                except Exception as second:  # the disk is still full: the write error says why
                    logger.debug("keras_cam: closing a failed sink failed too: %s", second)
            raise EventWriteError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        if self._open:
            self._open = False
            self.sink.close()


def write_all(sinks: list[ReopeningSink], event: Event) -> None:
    """Writes `event` to every sink; one sink's error does not keep it from the others.

    Raises:
        Exception: the first sink's error, once every sink was tried.
    """
    errors = []
    for sink in sinks:
        try:
            sink.write(event)
        except Exception as error:
            errors.append(error)
    if errors:
        raise errors[0]
