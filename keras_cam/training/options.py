"""The callback's option groups: what it draws (`ViewOptions`) and watches (`WatchOptions`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_cam.diagnostics import registry
from keras_cam.diagnostics.alarms import Alarm
from keras_cam.render.display_scale import check_normalize
from keras_cam.render.overlay import colormap_table
from keras_cam.targets.tasks import MULTI_LABEL, is_multi_label

IMAGES = ("grid", "timeline", "compare", "overlays")
DEFAULT_IMAGES = ("grid", "timeline", "compare")


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class ViewOptions:
    """What the callback draws at each event, and how.

    Args:
        images: which pictures to write: `"grid"` (each probe image next to
            its map, captioned), `"timeline"` (the first 4 probe images' maps
            at every event so far), `"compare"` (one column per method, with
            several methods), `"overlays"` (one TensorBoard card per image).
            Defaults to `("grid", "timeline", "compare")`.
        max_images: probe images drawn (grid, timeline, each gallery).
            Defaults to `16`.
        alpha: overlay opacity. Defaults to `0.4`.
        colormap: matplotlib colormap name. Defaults to `"jet"`.
        normalize: which map value gets the full colour: `"image"` (each map
            its own maximum), `"probe"` (the largest map of the event: weak
            maps look weak) or `"run"` (the largest so far in the run: a map
            that fades over training fades on screen). Every picture has a
            colour bar; a map with nothing to show is captioned "flat map".
            Defaults to `"probe"`.
        display: maps the probe images to the images drawn, when the probe
            holds only preprocessed model inputs (then leave `preprocess` out):
            e.g. `lambda x: (x + 1) * 127.5` for [-1, 1]. Defaults to `None`.
        top_k: also draw each probe image's maps of its k highest-scoring
            classes (`cam/<method>/topk`). Defaults to `None`.

    Example:

    >>> keras_cam.ViewOptions(images=("grid", "overlays"), max_images=8)  # doctest: +SKIP
    """

    images: Sequence[str] = DEFAULT_IMAGES
    max_images: int = 16
    alpha: float = 0.4
    colormap: str = "jet"
    normalize: str = "probe"
    display: Callable[[np.ndarray], Any] | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        images = (self.images,) if isinstance(self.images, str) else tuple(self.images)
        unknown = [name for name in images if name not in IMAGES]
        if unknown:
            raise ValueError(f"Unknown images {unknown}; choose from {', '.join(IMAGES)}.")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "max_images", _count(self.max_images, "max_images"))
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}.")
        colormap_table(self.colormap)
        check_normalize(self.normalize)
        if self.display is not None and not callable(self.display):
            raise TypeError(
                f"display must be a callable (images -> display images), got {self.display!r}."
            )
        if self.top_k is not None and (
            isinstance(self.top_k, bool)
            or not isinstance(self.top_k, (int, np.integer))
            or self.top_k < 1
        ):
            raise ValueError(f"top_k must be None or an integer >= 1, got {self.top_k!r}.")


@dataclass(frozen=True, eq=False)
class WatchOptions:
    """What the callback measures and acts on at each event.

    Args:
        metrics: names from `"drift"`, `"focus"`, `"pointing_game"`,
            `"energy_in_mask"` (these two need `probe_masks`, and are added
            when it is given), and the faithfulness metrics `"deletion"`,
            `"insertion"`, `"average_drop"`, `"increase_in_confidence"`,
            which cost extra forward passes, and the shortcut check
            `"background_sensitivity"` (one extra forward pass; needs
            `probe_masks`). Each goes to
            `cam/<method>/<metric>`, the Keras logs (`cam_<method>_<metric>`)
            and the CSV rows. Defaults to `("drift", "focus")`.
        probe_masks: (N, H, W) boolean object masks of the probe images
            ((N, T) for sequences, (N, D, H, W) for volumes), for the
            localisation metrics. Defaults to `None`.
        probe_size: probe images read, explained and measured; with more
            than `ViewOptions.max_images` the worst are drawn as galleries
            (`cam/<method>/worst_<metric>`, `cam/<method>/misclassified`).
            Defaults to `None`: `max_images`.
        alarms: `keras_cam.Alarm` rules checked at every event. Defaults to `()`.
        sanity_check: log the model-randomisation rank correlation once, at
            the end of training (`cam/<method>/sanity`). Defaults to `False`.
        log_on_train_end: also explain after the last epoch when it is not a
            multiple of `every_n_epochs`. Defaults to `False`.
        log_metrics: the metrics whose probe mean also goes to the epoch's
            Keras `logs` as `cam_<method>_<metric>` (for `EarlyStopping`,
            `ModelCheckpoint`, the history): names from `metrics`, or `True`
            for all of them. Defaults to `()`: none (Keras' progress bar and
            history stay as they are).

    Example:

    >>> keras_cam.WatchOptions(metrics=("drift", "deletion"), probe_size=64)  # doctest: +SKIP
    """

    metrics: Sequence[str] = ("drift", "focus")
    probe_masks: Any = None
    probe_size: int | None = None
    alarms: Sequence[Alarm] = ()
    sanity_check: bool = False
    log_on_train_end: bool = False
    log_metrics: Sequence[str] | bool = ()

    def __post_init__(self) -> None:
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)
        unknown = [name for name in metrics if name not in registry.METRICS]
        if unknown:
            raise ValueError(
                f"Unknown metrics {unknown}; available: {', '.join(registry.METRICS)} (add one "
                f"with keras_cam.diagnostics.registry.register_metric)."
            )
        object.__setattr__(self, "metrics", metrics)
        if self.probe_size is not None:
            object.__setattr__(self, "probe_size", _count(self.probe_size, "probe_size"))
        alarms = (self.alarms,) if isinstance(self.alarms, Alarm) else tuple(self.alarms)
        for alarm in alarms:
            if not isinstance(alarm, Alarm):
                raise TypeError(f"alarms must be keras_cam.Alarm rules, got {alarm!r}.")
        object.__setattr__(self, "alarms", alarms)


def check_arguments(
    every_n_epochs: Any,
    strict: Any,
    targets: Any,
    view: ViewOptions,
    watch: WatchOptions,
) -> int:
    """Checks the callback's arguments that its option groups cannot check alone.

    Returns:
        The probe size: `watch.probe_size`, or `view.max_images` when not given.
    """
    if isinstance(every_n_epochs, bool):
        raise TypeError("every_n_epochs must be an integer >= 1, got a bool.")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r}.")
    if not isinstance(every_n_epochs, (int, np.integer)) or every_n_epochs < 1:
        raise ValueError(
            f"every_n_epochs must be an integer >= 1, got {every_n_epochs!r}; "
            f"use 1 to explain after every epoch."
        )
    probe_size = view.max_images if watch.probe_size is None else watch.probe_size
    if probe_size < view.max_images:
        raise ValueError(
            f"probe_size must be an integer >= max_images ({view.max_images}), got "
            f"{probe_size!r}: it is how many probe images are measured, of which "
            f"max_images are drawn."
        )
    if isinstance(targets, str) and targets not in ("predicted", "label", MULTI_LABEL):
        raise ValueError(
            f"Unknown targets {targets!r}: use 'predicted', 'label', 'positive', a class "
            f"index, a list of class indices, a task target or a callable (and "
            f"view=ViewOptions(top_k=...) for top-k maps)."
        )
    if view.top_k is not None and (
        (callable(targets) and not isinstance(targets, str)) or is_multi_label(targets)
    ):
        kind = "targets='positive'" if is_multi_label(targets) else "a callable target"
        raise ValueError(
            f"top_k needs class targets; {kind} ({targets!r}) has no class ranks: "
            f"drop top_k or explain classes ('predicted', 'label', an index)."
        )
    return probe_size


def clean_class_names(class_names: Sequence[str] | None) -> list[str] | None:
    """The names as captions draw them: trailing whitespace (a `readlines()` newline) removed.

    A name that still holds a line break cannot be drawn on a one-line
    caption and would fail every event of the run: it is an error here.
    """
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names):
        raise TypeError(
            f"class_names must be a sequence of strings, one per class, got {class_names!r}."
        )
    names = [name.rstrip() for name in class_names]
    broken = [(i, name) for i, name in enumerate(names) if "\n" in name or "\r" in name]
    if broken:
        i, name = broken[0]
        raise ValueError(
            f"class_names[{i}] = {name!r} holds a line break; captions are one line per "
            f"name. Give one name per class without line breaks (e.g. "
            f"open(path).read().splitlines() rather than readlines())."
        )
    return names


def check_log_metrics(log_metrics: Sequence[str] | bool, metrics: Sequence[str]) -> tuple:
    """The metrics that go to the Keras logs: `WatchOptions.log_metrics` against those computed."""
    if isinstance(log_metrics, bool):
        return tuple(metrics) if log_metrics else ()
    log_metrics = (log_metrics,) if isinstance(log_metrics, str) else tuple(log_metrics)
    unknown = [name for name in log_metrics if name not in metrics]
    if unknown:
        raise ValueError(
            f"log_metrics names {unknown}, which this callback does not compute "
            f"({', '.join(metrics) or 'none'}); add them to WatchOptions(metrics=...) (mask "
            f"metrics need probe_masks=), or pass log_metrics=True for all of them."
        )
    return log_metrics


def option_group(value: Any, kind: type, name: str) -> Any:
    """`value`, an instance of the option group `kind`, or `kind()` when None."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a keras_cam.{kind.__name__}, got {value!r}.")
    return value
