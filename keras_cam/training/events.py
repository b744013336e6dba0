"""Assembling the callback's events: sinks, measurements as an `Event`, galleries, alarms."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_cam.diagnostics.alarms import Alarm
from keras_cam.diagnostics.tracking import WORSE_WHEN_HIGHER, log_key, worst_images
from keras_cam.sinks.csv_file import CSVSink
from keras_cam.sinks.event import Event, EventWriteError, Sink
from keras_cam.sinks.tensorboard import TensorBoardSink, runs_root, tensorboard_command

logger = logging.getLogger("keras_cam")


def measured_event(
    step: int,
    results: Mapping[str, Any],
    values: Mapping[str, Mapping[str, np.ndarray]],
    metrics: Sequence[str],
    drawn: int,
    measured: int,
    alarms: Sequence[str] = (),
    images: dict[str, np.ndarray] | None = None,
    charts: dict[str, tuple[str, ...]] | None = None,
) -> Event:
    """The event of `step`, for the sinks.

    Args:
        step: the epoch index.
        results: method -> its `CAMResult` (the probe first, then any top-k ranks).
        values: method -> metric -> per-image values of every measured image.
        metrics: every metric of the run, in order (the CSV columns).
        drawn: probe images drawn; `mean_score` is their mean score.
        measured: probe images measured (one CSV row each).
        alarms: the alarm messages of this event. Defaults to `()`.
        images: tag -> pages. Defaults to `None`.
        charts: method -> the scalars it logs over the run. Defaults to `None`.
    """
    scalars: dict[str, float] = {}
    histograms: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for name, result in results.items():
        found = values[name]
        scalars[f"cam/{name}/mean_score"] = float(np.mean(result.scores[:drawn]))
        for metric, per_image in found.items():
            scalars[f"cam/{name}/{metric}"] = float(np.mean(per_image))
        if "drift" in found:
            histograms[f"cam/{name}/per_image"] = np.asarray(found["drift"])
        for image in range(measured):
            cells = {m: float(found[m][image]) if m in found else None for m in metrics}
            rows.append({"step": step, "method": name, "image": image, **cells})
    return Event(
        step=step,
        scalars=scalars,
        images=images or {},
        histograms=histograms,
        texts={"cam/alarms": "\n\n".join(alarms)} if alarms else {},
        rows=rows,
        charts=charts or {},
    )


def sinks_for(log_dir: str | None, sinks: Sequence[Sink] | None) -> list[Sink]:
    """The sinks of `log_dir` (TensorBoard, then `cam_metrics.csv`), then `sinks`, checked."""
    chosen: list[Sink] = []
    if log_dir is not None:
        chosen += [TensorBoardSink(log_dir), CSVSink(os.path.join(log_dir, "cam_metrics.csv"))]
    for sink in sinks or ():
        if not all(callable(getattr(sink, name, None)) for name in ("open", "write", "close")):
            raise TypeError(
                f"sinks must have open(), write(event) and close() (see keras_cam.Sink), "
                f"got {sink!r}."
            )
        chosen.append(sink)
    if not chosen:
        raise ValueError(
            "CAMCallback has nowhere to write: pass log_dir= (TensorBoard and CSV) or "
            "sinks=[...] (e.g. keras_cam.TensorBoardSink(dir))."
        )
    return chosen


def galleries(
    results: Mapping[str, Any],
    values: Mapping[str, Mapping[str, np.ndarray]],
    labels: np.ndarray | None,
    measured: int,
    drawn: int,
) -> dict[str, dict[str, tuple[np.ndarray, str | None]]]:
    """Per method, the probe images where attention went worst, out of all those measured.

    `worst_<metric>` for each metric with a bad end (worst first), and
    `misclassified` where class labels are known; at most `drawn` each.
    """
    found = {}
    for name, result in results.items():
        chosen = {
            f"worst_{metric}": (worst_images(per_image, metric, drawn), metric)
            for metric, per_image in values[name].items()
            if metric in WORSE_WHEN_HIGHER
        }
        if labels is not None:
            wrong = np.flatnonzero(result.predicted[:measured] != labels)
            chosen["misclassified"] = (wrong[:drawn], None)
        found[name] = chosen
    return found


def check_alarms(
    alarms: tuple[Alarm, ...], metrics: Sequence[str], methods: Sequence[str]
) -> tuple[Alarm, ...]:
    """`alarms`, once each is known to watch a metric and method the callback computes."""
    for alarm in alarms:
        if alarm.metric not in metrics:
            raise ValueError(
                f"Alarm '{alarm}' watches {alarm.metric!r}, which this callback does not "
                f"compute ({', '.join(metrics)}); add it to watch=WatchOptions(metrics=...) "
                f"(mask metrics need probe_masks=)."
            )
        if alarm.method is not None and alarm.method not in methods:
            raise ValueError(
                f"Alarm '{alarm}' watches method {alarm.method!r}, which this callback "
                f"does not run ({', '.join(methods)})."
            )
    return alarms


def sound_alarms(
    alarms: Sequence[Alarm], values: Mapping[str, Mapping[str, np.ndarray]], step: int
) -> tuple[list[str], bool]:
    """Warns for every alarm that fires; returns the messages and whether to stop training."""
    messages, stop = [], False
    for alarm in alarms:
        for name, found in values.items():
            per_image = found.get(alarm.metric)
            mean = None if per_image is None else float(np.mean(per_image))
            if not (alarm.applies_to(name) and alarm.update(name, mean)):
                continue
            worst = ", ".join(str(i) for i in alarm.worst_images(per_image))
            message = (
                f"keras_cam alarm at epoch {step}: {name} {alarm.metric} = {mean:.3g} "
                f"({alarm}); worst probe images: {worst}."
            )
            if alarm.stop_training:
                message += " Stopping training."
                stop = True
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            messages.append(message)
    return messages, stop


def failure_kind(error: Exception) -> tuple[str, Exception]:
    """`("write", cause)` for a write outage, `("event", error)` for anything else.

    A write outage (a full disk: `EventWriteError` from a sink, or an
    `OSError`) ends when writing works again; the sink's own error names the
    cause. Any other error (drawing, a bad setting, non-finite maps) is no
    outage and would likely repeat at every event.
    """
    if isinstance(error, EventWriteError) and isinstance(error.__cause__, Exception):
        return "write", error.__cause__
    return ("write" if isinstance(error, OSError) else "event"), error


def failure_message(kind: str, names: str, error: Exception, when: str) -> str:
    """The warning of the first failed event of a run of failures of one `kind`."""
    if kind == "write":
        advice = (
            "Writing failed: training goes on, and events resume once writing works "
            "again (this warning is not repeated until then)"
        )
    else:
        advice = (
            "This is not a write error: it comes from computing or drawing the event and "
            "will likely fail every later event too (this warning is not repeated "
            "until an event succeeds). Training goes on"
        )
    return (
        f"keras_cam: skipped the {names} event {when}: {type(error).__name__}: {error}. "
        f"{advice}; pass strict=True to raise instead."
    )


def step_offset(last_step: int | None, epoch: int) -> int:
    """Added to a fit's epochs so that no step is written twice.

    A later `fit` (or the same callback on another model) that starts at or
    before the last step written continues after it, as `initial_epoch`
    would: TensorBoard shows one image per step and tag, so a rewritten step
    would hide the earlier run's pictures behind the new ones.
    """
    if last_step is None or epoch > last_step:
        return 0
    offset = last_step + 1 - epoch
    logger.warning(
        "keras_cam: this fit starts at epoch %d, at or before the last CAM step "
        "written (%d): its events continue at step %d (pass initial_epoch=%d to fit "
        "to line them up with the epochs).",
        epoch,
        last_step,
        epoch + offset,
        last_step + 1,
    )
    return offset


def tensorboard_hints(sinks: Sequence[Sink], events: int) -> list[str]:
    """For each TensorBoard sink, how to see its images next to the run's training curves."""
    return [
        f"keras_cam: CAM images in {sink.log_dir}; view them with your training curves: "
        f"{tensorboard_command(runs_root(sink.log_dir), events)}"
        for sink in sinks
        if isinstance(sink, TensorBoardSink)
    ]


def logged_means(
    values: Mapping[str, Mapping[str, np.ndarray]], log_metrics: Sequence[str]
) -> dict[str, float]:
    """`cam_<method>_<metric>` -> the probe mean, for the metrics named in `log_metrics`."""
    return {
        log_key(name, metric): float(np.mean(per_image))
        for name, found in values.items()
        for metric, per_image in found.items()
        if metric in log_metrics
    }
