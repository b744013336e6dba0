"""`WandbSink`: the callback's scalars, pages and per-image table in a Weights & Biases run."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from keras_cam.sinks.event import Event
from keras_cam.sinks.tags import describe
from keras_cam.sinks.tracking import import_tracker, is_picture, page_keys, table_columns

STEP_KEY = "cam/epoch"
"""The epoch of each CAM record: the x-axis of the `cam/*` charts (`define_metric`)."""


class WandbSink:
    """Writes events to a W&B run: scalars, captioned pages, a sortable per-image table.

    Per event, one `run.log` with W&B step = the Keras epoch: every scalar
    (`cam/<method>/<metric>`, the TensorBoard sink's tag names), `cam/epoch`,
    each image page as a `wandb.Image` captioned with the tag's display name
    (`sinks.tags.describe`), the drift histograms as `wandb.Histogram`, the
    alarms as HTML, and the per-image table (picture, overlay, true and
    predicted class, probability, every metric) as a `wandb.Table` under
    `cam/per_image`, which W&B sorts by any column (the worst
    `energy_in_mask` first). `cam/tags` is a table of the display name and
    description of every tag, logged again when new tags appear.

    Steps: your own `wandb.log(..., step=epoch)` calls land in the same
    history rows. The record is left open (not committed), so a later call of
    yours at the same step still joins it. When the run's step is already past
    the epoch (you log per batch, or at the next epoch before this event was
    written), the record is committed as a row at the run's current step
    instead of being dropped by W&B; the `cam/*` charts use `cam/epoch` as
    their x-axis (`run.define_metric`), so they are right either way.

    The run is `wandb.run` when `fit` begins, else one this sink starts with
    `wandb.init(**init_kwargs)` and finishes at the end of each `fit` (a
    later `fit` resumes it). A run it did not start is never finished.

    Args:
        table: log the per-image table. Defaults to `True`.
        **init_kwargs: arguments of `wandb.init` (`project`, `name`, `mode`,
            `dir`, ...), used only when no run is active.

    Example:

    >>> wandb.init(project="cats")                                   # doctest: +SKIP
    >>> model.fit(x, y, epochs=10, callbacks=[
    ...     keras_cam.CAMCallback(probe, sinks=[keras_cam.WandbSink()])])  # doctest: +SKIP
    """

    def __init__(self, table: bool = True, **init_kwargs: Any) -> None:
        self._wandb = import_tracker("wandb", "wandb")
        self.table, self.init_kwargs = table, init_kwargs
        self._run: Any = None
        self._started_id: str | None = None  # the id of the run this sink started
        self._described: list[str] = []  # the tags in the last cam/tags table

    @property
    def run(self) -> Any:
        """The run written to (None while closed)."""
        return self._run

    def open(self) -> None:
        wandb = self._wandb
        run = wandb.run
        if run is None:
            kwargs = dict(self.init_kwargs)
            if self._started_id is not None:  # a later fit continues the run
                kwargs.update(id=self._started_id, resume="allow")
            run = wandb.init(**kwargs)
            self._started_id = run.id
        run.define_metric("cam/*", step_metric=STEP_KEY)
        self._run = run

    def write(self, event: Event) -> None:
        if self._run is None:
            self.open()
        run, wandb = self._run, self._wandb
        data: dict[str, Any] = {STEP_KEY: event.step, **event.scalars}
        tags = [*event.scalars, *event.images, *event.texts, *event.histograms]
        if not set(tags) <= set(self._described):  # new tags (drift from the second event)
            self._described += [tag for tag in tags if tag not in self._described]
            rows = [[tag, *describe(tag)] for tag in self._described]
            data["cam/tags"] = wandb.Table(columns=["tag", "name", "description"], data=rows)
        for tag, values in event.histograms.items():
            finite = np.asarray(values, dtype=np.float64)
            data[tag] = wandb.Histogram(finite[np.isfinite(finite)])
        for tag, text in event.texts.items():
            data[tag] = wandb.Html(f"<pre>{html.escape(text)}</pre>")
        for tag, pages in event.images.items():
            name = describe(tag)[0]
            keys = page_keys(tag, len(pages))
            for number, (key, page) in enumerate(zip(keys, pages, strict=True)):
                caption = f"{name}, epoch {event.step}"
                if len(pages) > 1:
                    caption += f", page {number + 1}/{len(pages)}"
                data[key] = wandb.Image(np.asarray(page), caption=caption)
        if self.table and event.table:
            data["cam/per_image"] = self._table(event)
        # W&B drops a record whose step is behind the run's: it takes the next row then.
        if event.step >= run.step:
            run.log(data, step=event.step, commit=False)
        else:
            run.log(data)

    def _table(self, event: Event) -> Any:
        """The per-image table, pictures as `wandb.Image` (shown in the table)."""
        wandb = self._wandb
        columns = table_columns(event.table)
        rows = [
            [event.step]
            + [
                wandb.Image(row.get(name)) if is_picture(row.get(name)) else row.get(name)
                for name in columns
            ]
            for row in event.table
        ]
        return wandb.Table(columns=["step", *columns], data=rows)

    def close(self) -> None:
        run, self._run = self._run, None
        if run is not None and self._started_id is not None and run.id == self._started_id:
            run.finish()
