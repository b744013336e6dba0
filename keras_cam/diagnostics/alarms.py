"""Alarms: readable rules on the CAM metrics that warn, and may stop training.

A rule reads like the sentence it stands for: `Alarm("energy_in_mask",
below=0.2, events=2)` is "energy in mask below 0.2 for 2 events". The
callback feeds each rule the probe mean of its metric at every CAM event;
the rule counts consecutive events in breach per method and fires once
when the count reaches `events`. It fires again only after the metric has
come back within bounds (one warning per breach, not one per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keras_cam.diagnostics import registry


@dataclass
class Alarm:
    """A threshold on one CAM metric, held for a number of consecutive events.

    When it fires the callback logs a warning naming the epoch, the method,
    the metric, its value and the worst probe images, writes the same text
    to TensorBoard under `cam/alarms`, and, with `stop_training=True`, sets
    `model.stop_training` so `fit` ends after this epoch (as
    `EarlyStopping` does).

    Args:
        metric: a metric the callback computes (see `CAMCallback(metrics=)`):
            `"energy_in_mask"`, `"drift"`, `"focus"`, ...
        below: fire when the probe mean is below this. Defaults to `None`.
        above: fire when the probe mean is above this. Defaults to `None`.
            Give exactly one of `below` and `above`.
        events: consecutive CAM events the condition must hold. An event
            without a value for the metric (drift at the first event) neither
            counts nor breaks the run. Defaults to `1`.
        method: the method whose metric is watched, e.g. `"gradcam"`.
            Defaults to `None`: every method, each counted on its own.
        stop_training: stop `fit` when the alarm fires. Defaults to `False`.

    Example:

    >>> shortcut = Alarm("energy_in_mask", below=0.2, events=2, stop_training=True)
    >>> str(shortcut)
    'energy_in_mask below 0.2 for 2 events'
    >>> [shortcut.update("gradcam", v) for v in (0.5, 0.15, 0.1, 0.05)]
    [False, False, True, False]
    """

    metric: str
    below: float | None = None
    above: float | None = None
    events: int = 1
    method: str | None = None
    stop_training: bool = False
    _runs: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if (self.below is None) == (self.above is None):
            raise ValueError(
                f"Alarm({self.metric!r}) needs exactly one threshold: below= or above=, "
                f"got below={self.below!r}, above={self.above!r}."
            )
        registry.get_metric(self.metric)  # an unknown metric names those that exist
        for side in ("below", "above"):
            threshold = getattr(self, side)
            if threshold is None:
                continue
            # NaN compares false with everything: such a rule could never fire.
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
                raise ValueError(
                    f"Alarm({self.metric!r}) {side}= must be a number, got {threshold!r}."
                )
            if not np.isfinite(threshold):
                raise ValueError(
                    f"Alarm({self.metric!r}) {side}={threshold!r} can never be crossed; "
                    f"give a finite threshold."
                )
        if not isinstance(self.events, (int, np.integer)) or self.events < 1:
            raise ValueError(f"Alarm events must be an integer >= 1, got {self.events!r}.")

    def __str__(self) -> str:
        side, threshold = ("below", self.below) if self.below is not None else ("above", self.above)
        plural = "event" if self.events == 1 else "events"
        return f"{self.metric} {side} {threshold:g} for {self.events} {plural}"

    def applies_to(self, method: str) -> bool:
        """Whether this rule watches `method`."""
        return self.method is None or self.method == method

    def breached(self, value: float) -> bool:
        """Whether one value is outside the bounds (NaN counts as a breach)."""
        if np.isnan(value):
            return True
        return value < self.below if self.below is not None else value > self.above

    def update(self, method: str, value: float | None) -> bool:
        """Feeds one event's probe mean; True when the alarm fires at this event.

        Args:
            method: the method the value belongs to.
            value: the probe mean of `metric`, or `None` when the event has
                no value for it.
        """
        if value is None:
            return False
        if not self.breached(float(value)):
            self._runs[method] = 0
            return False
        self._runs[method] = self._runs.get(method, 0) + 1
        return self._runs[method] == self.events

    def worst_images(self, per_image: np.ndarray, k: int = 3) -> np.ndarray:
        """Indices of the `k` probe images furthest on the wrong side, worst first."""
        # Lowest first for `below`, highest first for `above`; NaN is worst on either side.
        sign = 1.0 if self.below is not None else -1.0
        values = sign * np.asarray(per_image, dtype=np.float64)
        order = np.argsort(np.nan_to_num(values, nan=-np.inf), kind="stable")
        return order[:k]

    def reset(self) -> None:
        """Forgets the counts (a new run)."""
        self._runs.clear()
