"""The metric registry: one `Metric` entry per metric, read by everything that names one.

The callback's scalars, Keras `logs` and CSV (`diagnostics.tracking`), the
TensorBoard tag descriptions (`sinks.tags`), the worst-image galleries, the
alarms and the `keras-cam` command's `--metrics` all read this table. Adding a
metric is one `register_metric(Metric(...))` and its function.

This module imports no Keras (the command line lists the metrics in `--help`):
the built-in entries import `keras_cam.diagnostics.metrics` when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

NEEDS = ("masks", "labels", "forward", "previous", "explain")
"""What a metric may need beyond the maps: object masks, the probe's labels, extra forward
passes of the model (the images, the model and `preprocess`), the previous event's maps, the
same method re-run on other images (`MetricInputs.explain`)."""


@dataclass(frozen=True)
class MetricInputs:
    """Everything a metric may read, for one method's maps of one batch.

    Attributes:
        maps: the heatmaps (N, *spatial) in [0, 1].
        classes: int (N,) the explained class of each map.
        model: the model, for metrics that run it (`"forward"`).
        images: the display images the maps explain (`"forward"`).
        preprocess: maps display images to model input, or `None`.
        masks: bool (N, *spatial) object masks (`"masks"`), or `None`.
        labels: int (N,) the images' true classes (`"labels"`), or `None`.
        previous: the same method's maps at the previous event
            (`"previous"`), or `None` at the first event.
        batch_size: images per forward pass of `"forward"` metrics, or
            `None` for each function's default.
        explain: display images -> the same method's heatmaps (N, H, W) for
            the same classes (`"explain"`), or `None`.
    """

    maps: np.ndarray
    classes: np.ndarray
    model: Any = None
    images: np.ndarray | None = None
    preprocess: Callable[[np.ndarray], Any] | None = None
    masks: np.ndarray | None = None
    labels: np.ndarray | None = None
    previous: np.ndarray | None = None
    batch_size: int | None = None
    explain: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class Metric:
    """One metric: how to compute it, what it needs, which end is bad, what it means.

    Args:
        name: the name in `metrics=`, tags (`cam/<method>/<name>`), Keras
            logs (`cam_<method>_<name>`), CSV columns and `--metrics`.
        function: `MetricInputs` -> per-image values (N,) (NaN: no value).
        description: what the value measures and which way is good; shown
            in TensorBoard's card info.
        needs: a subset of `NEEDS`. Defaults to `()`: the maps alone.
        worse_when: `"higher"` or `"lower"`: the end where attention went
            wrong (the worst-image galleries sort by it). Defaults to `None`:
            neither end is bad in itself (no gallery).
        display_name: the short name TensorBoard shows. Defaults to `""`:
            `name` with spaces for underscores.

    Example:

    >>> from keras_cam.diagnostics.registry import Metric, register_metric
    >>> register_metric(Metric(
    ...     "peak", lambda inputs: inputs.maps.reshape(len(inputs.maps), -1).max(1),
    ...     "Largest map value.", worse_when="lower"))        # doctest: +SKIP
    """

    name: str
    function: Callable[[MetricInputs], np.ndarray]
    description: str
    needs: tuple[str, ...] = ()
    worse_when: str | None = None
    display_name: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(
                f"A metric name must be a Python identifier (it becomes a tag, a Keras logs "
                f"key and a CSV column), got {self.name!r}."
            )
        object.__setattr__(self, "needs", tuple(self.needs))
        unknown = [need for need in self.needs if need not in NEEDS]
        if unknown:
            raise ValueError(f"Metric {self.name!r} needs {unknown}; choose from {NEEDS}.")
        if self.worse_when not in (None, "higher", "lower"):
            raise ValueError(
                f"Metric {self.name!r}: worse_when must be 'higher', 'lower' or None, got "
                f"{self.worse_when!r}."
            )
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name.replace("_", " "))

    def compute(self, inputs: MetricInputs) -> np.ndarray:
        """Per-image values (N,) as float64."""
        return np.asarray(self.function(inputs), dtype=np.float64).reshape(len(inputs.maps))


METRICS: dict[str, Metric] = {}
"""Every registered metric by name, in registration order."""


def register_metric(metric: Metric) -> Metric:
    """Adds `metric` to the registry; every reader sees it from then on.

    Raises:
        ValueError: a metric of that name is already registered.
    """
    if not isinstance(metric, Metric):
        raise TypeError(f"register_metric takes a Metric, got {type(metric).__name__}.")
    if metric.name in METRICS:
        raise ValueError(f"A metric named {metric.name!r} is already registered.")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """The registered metric `name`, or a ValueError listing those that exist."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRICS)}.")
    return METRICS[name]


def metric_names(without: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Registered metric names, in order, except those that need any of `without`."""
    return tuple(name for name, metric in METRICS.items() if not set(metric.needs) & set(without))


def _measures() -> Any:
    from keras_cam.diagnostics import metrics  # imports Keras: only when a metric runs

    return metrics


def _forward(function_name: str) -> Callable[[MetricInputs], np.ndarray]:
    def run(inputs: MetricInputs) -> np.ndarray:
        function = getattr(_measures(), function_name)
        chunks = {} if inputs.batch_size is None else {"batch_size": inputs.batch_size}
        return function(
            inputs.model,
            inputs.images,
            inputs.maps,
            inputs.classes,
            preprocess=inputs.preprocess,
            per_image=True,
            **chunks,
        )

    return run


for _metric in (
    Metric(
        "drift",
        lambda x: _measures().drift(x.previous, x.maps, per_image=True),
        "1 − Pearson correlation between each probe image's map and the same method's map at "
        "the previous event, averaged over the probe: 0 = where the model looks did not "
        "change, 1 = unrelated, 2 = inverted. It settles towards 0 as training converges.",
        needs=("previous",),
        worse_when="higher",
        display_name="attention drift",
    ),
    Metric(
        "focus",
        lambda x: _measures().focus(x.maps, per_image=True),
        "Normalised entropy of each map read as a distribution over its pixels, averaged over "
        "the probe: 0 = all on one pixel, 1 = spread evenly (or nothing to show). Neither end "
        "is good in itself: compare with what the object covers.",
        display_name="attention spread (focus)",
    ),
    Metric(
        "pointing_game",
        lambda x: _measures().pointing_game(x.maps, x.masks, per_image=True),
        "Share of probe images whose map peak lies inside the object mask (higher is better).",
        needs=("masks",),
        worse_when="lower",
    ),
    Metric(
        "energy_in_mask",
        lambda x: _measures().energy_in_mask(x.maps, x.masks, per_image=True),
        "Share of the map's mass inside the object mask, averaged over the probe (higher is "
        "better; the mask's area share is what a uniform map scores).",
        needs=("masks",),
        worse_when="lower",
    ),
    Metric(
        "deletion",
        _forward("deletion_auc"),
        "Area under the class score while the most salient pixels are removed first "
        "(lower is better: a faithful map finds what the score needs).",
        needs=("forward",),
        worse_when="higher",
        display_name="deletion AUC",
    ),
    Metric(
        "insertion",
        _forward("insertion_auc"),
        "Area under the class score while the most salient pixels are revealed first "
        "(higher is better).",
        needs=("forward",),
        worse_when="lower",
        display_name="insertion AUC",
    ),
    Metric(
        "average_drop",
        _forward("average_drop"),
        "Relative class score lost when the image is multiplied by its map (lower is better).",
        needs=("forward",),
        worse_when="higher",
    ),
    Metric(
        "increase_in_confidence",
        _forward("increase_in_confidence"),
        "Share of probe images whose class score rises when the image is multiplied by its "
        "map (higher is better).",
        needs=("forward",),
        worse_when="lower",
    ),
    Metric(
        "road",
        _forward("road_combined"),
        "ROAD (Rong et al., ICML 2022): (least − most relevant first) / 2, the class score's "
        "change when the bottom or top pixels are filled from their neighbours, averaged over "
        "the 10th..90th percentiles (higher is better: removing what the map calls important "
        "hurts more than removing the rest).",
        needs=("forward",),
        worse_when="lower",
        display_name="ROAD combined",
    ),
    Metric(
        "arcc",
        lambda x: _measures().arcc(
            x.model,
            x.images,
            x.maps,
            x.classes,
            explain=x.explain,
            preprocess=x.preprocess,
            per_image=True,
            **({} if x.batch_size is None else {"batch_size": x.batch_size}),
        ),
        "ARCC (pytorch-grad-cam, arXiv 2605.14641): harmonic mean of coherency (the method "
        "re-run on the image times its map agrees with the map), 1 − complexity (mean map "
        "value) and ROAD ×2 clipped to [0, 1]; in [0, 1], higher is better.",
        needs=("forward", "explain"),
        worse_when="lower",
        display_name="ARCC",
    ),
    Metric(
        "background_sensitivity",
        lambda x: _measures().background_sensitivity(
            x.model,
            x.images,
            x.masks,
            x.classes,
            preprocess=x.preprocess,
            per_image=True,
            **({} if x.batch_size is None else {"batch_size": x.batch_size}),
        ),
        "Absolute change of the class score when each probe image's object is put on the next "
        "probe image's background (lower is better: about 0 for a model that decides from the "
        "object; a shortcut in the background, a stamp or a texture, moves it). A check of "
        "CAM-guided training that the guidance does not optimise.",
        needs=("masks", "forward"),
        worse_when="higher",
        display_name="background sensitivity",
    ),
):
    register_metric(_metric)
del _metric
