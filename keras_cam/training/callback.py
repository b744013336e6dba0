"""CAMCallback: class activation maps of a fixed probe batch, written to sinks during `fit`."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import keras
from keras.src.utils import io_utils  # Keras' own notes: stdout, or absl when not interactive

from keras_cam.core import interrupts
from keras_cam.core.explainer import (
    CAMExplainer,
    MethodSpec,
    Preprocess,
    resolve_methods,
)
from keras_cam.core.options import ExplainOptions
from keras_cam.core.result import with_ranks
from keras_cam.diagnostics import sanity as _sanity
from keras_cam.diagnostics.tracking import ProbeMetrics, check_masks, check_metrics, explain_again
from keras_cam.render.display_scale import DisplayScale
from keras_cam.render.event import EventPainter
from keras_cam.sinks.event import Event, ReopeningSink, Sink, write_all
from keras_cam.targets.tasks import Targets, TaskTarget
from keras_cam.training.background import BackgroundJobs
from keras_cam.training.distributed import is_chief
from keras_cam.training.events import (
    check_alarms,
    failure_kind,
    failure_message,
    galleries,
    logged_means,
    measured_event,
    sinks_for,
    sound_alarms,
    step_offset,
    tensorboard_hints,
)
from keras_cam.training.guidance import CAMGuidedModel
from keras_cam.training.options import (
    ViewOptions,
    WatchOptions,
    check_arguments,
    check_log_metrics,
    clean_class_names,
    option_group,
)
from keras_cam.training.probe import drawn_probe, image_shape, take_probe

logger = logging.getLogger("keras_cam")


class CAMCallback(keras.callbacks.Callback):
    """Explains a fixed probe batch every few epochs and writes maps and metrics to sinks.

    At every `every_n_epochs`-th epoch it explains the probe with the current
    weights (on the training thread, `training=False`: weights, BatchNorm
    statistics, optimizer state and the random stream are untouched),
    measures the maps (`watch`; those named in `WatchOptions.log_metrics` also
    go to the epoch's Keras `logs` as `cam_<method>_<metric>`, for the
    callbacks after this one) and sounds the alarms. Drawing (`view`) and
    writing to the sinks run on one background thread (a queue of two
    events), flushed at `on_train_end`; its errors are reported at the next event.

    With `log_dir`, TensorBoard gets `cam/<method>/grid`, `.../timeline`,
    `cam/compare` (several methods), `cam/<method>/<metric>`,
    `cam/<method>/mean_score`, `cam/<method>/per_image` (drift histogram),
    `cam/alarms`, galleries of the worst images, and `cam_metrics.csv` one
    row per event, method and probe image. The step is the epoch index.

    Configuration errors are raised at the first `on_train_begin`, before any
    training work. A failing event warns once per run of failures (a write
    outage told apart from a drawing error) and is skipped; training goes on
    unless `strict=True`. A sink whose write failed is reopened at the next
    event. A later `fit` continues the step count. Only the chief of a
    multi-process run explains and writes.

    Args:
        probe: display images (uint8 0–255 or float 0–1), `(images, labels)`,
            or a `tf.data.Dataset` / `keras.utils.PyDataset` of such batches;
            `Conv1D` sequences or `Conv3D` volumes in any value range.
        log_dir: short for `sinks=[TensorBoardSink(log_dir),
            CSVSink(log_dir + "/cam_metrics.csv")]` (a `gs://` URL needs
            TensorFlow). Defaults to `None`.
        sinks: where events go (`keras_cam.Sink`: `open`, `write(event)`,
            `close`), after those of `log_dir`. Defaults to `None`.
        method: a name from `keras_cam.available_methods()`, a `CAMMethod`,
            or a list of them. Defaults to `"gradcam"`.
        every_n_epochs: explain after every n-th epoch. Defaults to `1`.
        targets: `"predicted"`, `"label"`, `"positive"`, a class index, one
            per image, a task target or a callable. Defaults to `"predicted"`.
        class_names: names for captions, indexed by class. Defaults to `None`.
        preprocess: maps display images to model input. Defaults to `None`.
        explain: what is explained: `keras_cam.ExplainOptions` (layer, score,
            output, tokens, smoothing, batch size). Defaults to `None`.
        view: what is drawn: `keras_cam.ViewOptions`. Defaults to `None`.
        watch: what is measured and acted on: `keras_cam.WatchOptions`
            (metrics, masks, probe size, alarms, sanity check). Defaults to `None`.
        strict: raise instead of warning when an event fails. Defaults to `False`.

    Example:

    >>> callback = keras_cam.CAMCallback(
    ...     (x_val[:16], y_val[:16]), "runs/cam", method=["gradcam", "layercam"],
    ...     explain=keras_cam.ExplainOptions(layer="conv3"),
    ...     watch=keras_cam.WatchOptions(metrics=("drift", "deletion")),
    ... )                                                              # doctest: +SKIP
    >>> model.fit(x_train, y_train, epochs=10, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(
        self,
        probe: Any,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        sinks: Sequence[Sink] | None = None,
        method: MethodSpec | Sequence[MethodSpec] = "gradcam",
        every_n_epochs: int = 1,
        targets: Targets = "predicted",
        class_names: Sequence[str] | None = None,
        preprocess: Preprocess | None = None,
        explain: ExplainOptions | None = None,
        view: ViewOptions | None = None,
        watch: WatchOptions | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.explain = option_group(explain, ExplainOptions, "explain")
        self.view = view = option_group(view, ViewOptions, "view")
        self.watch = watch = option_group(watch, WatchOptions, "watch")
        self.probe_size = check_arguments(every_n_epochs, strict, targets, view, watch)
        self.methods = resolve_methods(method)
        self.probe, self.targets, self.preprocess = probe, targets, preprocess
        self.every_n_epochs, self.strict = int(every_n_epochs), strict
        self.class_names = clean_class_names(class_names)
        task_regions = isinstance(targets, TaskTarget) and targets.has_region
        self.metrics = check_metrics(watch.metrics, watch.probe_masks is not None or task_regions)
        self.alarms = check_alarms(watch.alarms, self.metrics, [m.name for m in self.methods])
        self.log_metrics = check_log_metrics(watch.log_metrics, self.metrics)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.sinks = sinks_for(self.log_dir, sinks)
        self._sinks = [ReopeningSink(sink) for sink in self.sinks]
        self._explainer: CAMExplainer | None = None
        self._batch = self._images = self._labels = self._painter = None
        # The step of the last event (over every fit), the last epoch, and the last one explained.
        self._last_step = self._last_epoch = self._last_event_epoch = self._step_offset = None
        self._failing, self._chief, self._hint_shown = None, True, False  # _failing: write/event
        self._interrupts = interrupts.count()
        self._jobs = BackgroundJobs()

    @property
    def explainer(self) -> CAMExplainer | None:
        """The explainer built at the first `on_train_begin` (None before)."""
        return self._explainer

    @property
    def explained_model(self) -> keras.Model:
        """The model explained: the one being fit, or the classifier a `CAMGuidedModel` wraps.

        Reading it (through `self.model`) syncs the JAX trainer's live state.
        """
        model = self.model
        return model.model if isinstance(model, CAMGuidedModel) else model

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        model = self.explained_model
        self._chief = is_chief(model)  # only the chief explains and writes
        if not self._chief:
            return
        for alarm in self.alarms:  # breaches are counted within one `fit`
            alarm.reset()
        self._interrupts, self._step_offset = interrupts.watch(), None
        if self._explainer is None or self._explainer.model is not model:
            self._explainer = CAMExplainer(model, list(self.methods), self.explain)
            self._batch = None
        if self._batch is None:
            self._read_probe(model)
        if self.watch.sanity_check:
            _sanity.check_sanity_check_applies(self._explainer)
        self._finish_writing()  # an interrupted fit may have left events queued
        for sink in self._sinks:  # an unwritable log_dir fails here, before training
            sink.open()
        if not self._hint_shown and (self.params or {}).get("verbose", 1) != 0:
            events = int((self.params or {}).get("epochs") or 0) // self.every_n_epochs
            for line in tensorboard_hints(self.sinks, events + self.watch.log_on_train_end):
                io_utils.print_msg(line)  # as Keras prints its notes: nobody sees INFO logs
                self._hint_shown = True
        # Tracing now surfaces any problem before the first epoch's work.
        try:
            self._explainer.run(self._batch)
        except FloatingPointError as error:
            self._fail(error, "before training")

    def _read_probe(self, model: keras.Model) -> None:
        """Reads and prepares the probe, and what drawing and measuring it needs."""
        explainer, view, targets = self._explainer, self.view, self.targets
        images, labels = take_probe(self.probe, self.probe_size, image_shape(model))
        batch = explainer.prepare(images, targets, labels=labels, preprocess=self.preprocess)
        resolved = explainer.resolved
        classes = resolved.num_classes
        if view.top_k is not None and classes is not None and view.top_k > classes:
            raise ValueError(f"top_k={view.top_k} but the model scores {classes} classes.")
        masks = None
        if self.watch.probe_masks is not None:
            masks = check_masks(self.watch.probe_masks, len(images), batch.size)
        elif isinstance(targets, TaskTarget) and targets.has_region:
            # The explained region (a mask, a box) is where the map should sit.
            masks = targets.region_masks(len(images), batch.size)
        probe = drawn_probe(images, labels, targets, resolved, masks, view, self.class_names)
        scales = {method.name: DisplayScale(view.normalize) for method in self.methods}
        self._painter = EventPainter(probe, view, scales)
        self._images, self._labels = images, probe.labels
        self._diagnostics = ProbeMetrics(self.metrics, masks, self._labels)
        # The top-k maps ride in the same batch, so one compiled function does everything.
        self._batch = batch if view.top_k is None else with_ranks(batch, range(view.top_k))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._chief:
            return
        # A Ctrl-C that some code swallowed (see keras_cam.core.interrupts) stops fit here.
        interrupts.raise_if_interrupted(self._interrupts)
        self._last_epoch = epoch
        if self._step_offset is None:  # a later fit continues after the last step written
            self._step_offset = step_offset(self._last_step, epoch)
        if (epoch + 1) % self.every_n_epochs == 0:
            self._event(epoch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._explainer is None or not self._chief:
            return
        last = self._last_epoch
        if self.watch.log_on_train_end and last not in (None, self._last_event_epoch):
            self._event(last)
        if self.watch.sanity_check and self._last_step is not None:
            try:
                self._sanity_event(self._last_step)
            except Exception as error:
                self._fail(error, "in the sanity check")
        self._finish_writing()
        interrupts.unwatch()

    def _finish_writing(self) -> None:
        """Waits for every queued event, closes the sinks, and reports the worker's errors."""
        self._jobs.join()
        try:
            self._report_outcomes()
        finally:
            for sink in self._sinks:
                try:
                    sink.close()
                except Exception as error:
                    self._fail(error, "while closing a sink")

    @property
    def _charts(self) -> dict[str, tuple[str, ...]]:
        sanity = ("sanity",) if self.watch.sanity_check else ()
        return {method.name: (*self.metrics, *sanity) for method in self.methods}

    def _event(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._report_outcomes()
        step = epoch + (self._step_offset or 0)
        when = f"at epoch {epoch}" + (f" (step {step})" if step != epoch else "")
        measured, drawn = len(self._images), self._painter.count
        try:
            model, explainer = self.explained_model, self._explainer
            results = explainer.run(self._batch)

            model_input = functools.partial(explainer.model_input, preprocess=self.preprocess)
            values = {}
            for name, result in results.items():
                probe = result.take(0, measured)
                again = explain_again(explainer, name, probe, self.preprocess)
                values[name] = self._diagnostics.values(
                    name, probe, model, self._images, model_input, again
                )
            if logs is not None:  # for the other callbacks: in `logs` when this returns
                logs.update(logged_means(values, self.log_metrics))
            alarms, stop = sound_alarms(self.alarms, values, step)
            self.model.stop_training = getattr(self.model, "stop_training", False) or stop
            shown = (
                galleries(results, values, self._labels, measured, drawn)
                if measured > drawn
                else None
            )
        except Exception as error:
            # A Ctrl-C inside compiled code comes back as the framework's error.
            interrupts.raise_if_interrupted(self._interrupts, error)
            self._fail(error, when)
            return

        def draw_and_write() -> None:  # on the worker, while the next epoch trains
            try:
                (images, table), failed = self._painter.paint(results, values, step, shown), None
            except Exception as error:  # the numbers are written all the same
                images, table, failed = {}, [], error
            event = measured_event(
                step, results, values, self.metrics, drawn, measured, alarms, images, self._charts
            )
            write_all(self._sinks, replace(event, table=table))
            if failed is not None:
                raise failed

        self._jobs.submit(draw_and_write, when)
        self._last_step, self._last_event_epoch = step, epoch

    def _report_outcomes(self) -> None:
        """Warns (or raises, with `strict=True`) for the worker's failed jobs, in order."""
        for when, error in self._jobs.outcomes():
            if error is not None:
                self._fail(error, when)
            elif self._failing:
                logger.warning("keras_cam: CAM events written again from %s on", when)
                self._failing = None

    def _fail(self, error: Exception, when: str) -> None:
        """Warns once per run of consecutive failures of one kind (raises with `strict=True`).

        A write outage (`EventWriteError` from a sink, or an `OSError`) ends when
        writing works again; any other error (drawing, a bad setting, non-finite
        maps) is no outage and is warned as what it is.
        """
        kind, error = failure_kind(error)
        if self.strict:
            raise error
        if self._failing == kind:
            logger.info("keras_cam: skipped the event %s too: %s", when, error)
            return
        self._failing = kind
        names = ", ".join(method.name for method in self.methods)
        warnings.warn(failure_message(kind, names, error, when), RuntimeWarning, stacklevel=2)

    def _sanity_event(self, step: int) -> None:
        model, layer = self.explained_model, self._explainer.layer
        scalars = {
            f"cam/{method.name}/sanity": _sanity.sanity_check(
                model,
                self._images,
                preprocess=self.preprocess,
                explainer=CAMExplainer(model, method, self.explain, layer=layer),
            )
            for method in self.methods
        }
        event = Event(step, scalars=scalars, charts=self._charts)
        self._jobs.submit(lambda: write_all(self._sinks, event), "in the sanity check")
