"""CAMCallback: class activation maps of a fixed probe batch, in TensorBoard during `fit`."""

from __future__ import annotations

import logging
import os
import shlex
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import keras
import numpy as np
from keras.src.utils import io_utils  # Keras' own notes: stdout, or absl when not interactive

from keras_cam import interrupts, log_files
from keras_cam import sanity as _sanity
from keras_cam.alarms import Alarm
from keras_cam.background import BackgroundJobs
from keras_cam.cell_display import overlay_pictures, probe_pictures, readable_px
from keras_cam.compare_table import compare_pages
from keras_cam.diagnostics import (
    WORSE_WHEN_HIGHER,
    ProbeMetrics,
    Timeline,
    check_masks,
    check_metrics,
    log_key,
    worst_images,
)
from keras_cam.distributed import is_chief
from keras_cam.explainer import (
    CAMExplainer,
    CAMResult,
    MethodSpec,
    Preprocess,
    _Batch,
    own_inputs,
    resolve_methods,
    take_images,
    with_ranks,
)
from keras_cam.guidance import CAMGuidedModel
from keras_cam.layers import model_input_shape
from keras_cam.log_files import check_log_dir
from keras_cam.overlay import (
    ColourBar,
    _colormap_table,
    captioned_grid,
    card_pages,
    to_rgb_uint8,
)
from keras_cam.scales import DisplayScale, check_normalize, flat_maps
from keras_cam.tags import describe, scalars_layout
from keras_cam.targets import (
    MULTI_LABEL,
    Targets,
    TaskTarget,
    is_multi_label,
    labels_to_class_ids,
)
from keras_cam.tokens import TokenLayout, check_layout
from keras_cam.writer import WRITERS, EventWriteError, EventWriter, create_writer

logger = logging.getLogger("keras_cam")

IMAGES = ("grid", "timeline", "compare", "overlays")
DEFAULT_IMAGES = ("grid", "timeline", "compare")


def _check_images(images: Sequence[str]) -> tuple[str, ...]:
    if isinstance(images, str):
        images = (images,)
    unknown = [name for name in images if name not in IMAGES]
    if unknown:
        raise ValueError(f"Unknown images {unknown}; choose from {', '.join(IMAGES)}.")
    return tuple(images)


def _clean_class_names(class_names: Sequence[str] | None) -> list[str] | None:
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


def _check_log_metrics(log_metrics: Sequence[str] | bool, metrics: Sequence[str]) -> tuple:
    if isinstance(log_metrics, bool):
        return tuple(metrics) if log_metrics else ()
    log_metrics = (log_metrics,) if isinstance(log_metrics, str) else tuple(log_metrics)
    unknown = [name for name in log_metrics if name not in metrics]
    if unknown:
        raise ValueError(
            f"log_metrics names {unknown}, which this callback does not compute "
            f"({', '.join(metrics) or 'none'}); add them to metrics= (mask metrics need "
            f"probe_masks=), or pass log_metrics=True for all of them."
        )
    return log_metrics


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)):
        if len(batch) not in (1, 2, 3):
            raise ValueError(
                f"A probe batch must be images or (images, labels), got a {len(batch)}-tuple."
            )
        return batch[0], batch[1] if len(batch) > 1 else None
    return batch, None


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def take_probe(
    probe: Any, max_images: int, image_shape: tuple[int | None, ...] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads up to `max_images` (images, labels) from arrays, a tf.data.Dataset or a PyDataset.

    A dataset must yield batches. One whose elements have `image_shape` (the
    model's input shape without the batch axis, None matching any size)
    yields single images, which concatenated would read as rows of pixels:
    that is an error saying to batch it.
    """
    if isinstance(probe, (tuple, list, dict)) or hasattr(probe, "shape"):
        images, labels = _split_batch(probe)
        images = _numpy(own_inputs(None, images))  # a one-input model's {"name": images}
        if image_shape is not None and _is_one_image(images.shape, image_shape):
            raise ValueError(
                f"The probe is one image of shape {images.shape}, not a batch of them; add a "
                f"batch axis: images[None]."
            )
        if labels is not None:
            labels = _numpy(labels)
            if len(labels) != len(images):
                raise ValueError(
                    f"The probe has {len(images)} images but {len(labels)} labels; "
                    f"pass one label per image."
                )
            labels = labels[:max_images]
        return images[:max_images], labels
    if hasattr(probe, "as_numpy_iterator"):
        batches = probe.as_numpy_iterator()
    elif isinstance(probe, keras.utils.PyDataset):
        batches = (probe[i] for i in range(len(probe)))
    else:
        raise TypeError(
            f"The probe must be images, (images, labels), a tf.data.Dataset or a "
            f"keras.utils.PyDataset of such batches, got {type(probe).__name__}."
        )
    images, labels, count = [], [], 0
    for batch in batches:
        batch_images, batch_labels = _split_batch(batch)
        batch_images = _numpy(own_inputs(None, batch_images))
        if image_shape is not None and _is_one_image(batch_images.shape, image_shape):
            raise ValueError(
                f"The probe dataset yields single images of shape {batch_images.shape}, not "
                f"batches of them; batch it first, e.g. probe.batch({max_images})."
            )
        images.append(batch_images)
        if batch_labels is not None:
            labels.append(_numpy(batch_labels))
        count += len(batch_images)
        if count >= max_images:
            break
    if not images:
        raise ValueError("The probe dataset yielded no batch.")
    if labels and len(labels) != len(images):
        raise ValueError("Some probe batches have labels and some do not.")
    stacked = np.concatenate(labels)[:max_images] if labels else None
    return np.concatenate(images)[:max_images], stacked


def _image_shape(model: keras.Model) -> tuple[int | None, ...] | None:
    """The model's input shape without the batch axis; None for a model not built yet."""
    try:
        return model_input_shape(model)[1:]
    except AttributeError:  # a Sequential model without an Input
        return None


def _is_one_image(shape: tuple[int, ...], image_shape: tuple[int | None, ...]) -> bool:
    return len(shape) == len(image_shape) and all(
        expected is None or expected == size
        for size, expected in zip(shape, image_shape, strict=True)
    )


def _warn_if_preprocessed(images: np.ndarray) -> None:
    """Display images are uint8 0–255 or float 0–1 / 0–255; anything else was preprocessed."""
    if images.dtype == np.uint8 or not np.issubdtype(images.dtype, np.number):
        return
    low, high = float(np.nanmin(images)), float(np.nanmax(images))
    if low < 0.0 or high > 255.0:
        warnings.warn(
            f"keras_cam: the probe images range over [{low:.3g}, {high:.3g}]: they look "
            f"preprocessed (e.g. [-1, 1] or mean-subtracted), so the overlays will be drawn "
            f"on distorted colours. Pass the display images (uint8 0-255 or float 0-1) as the "
            f"probe and the model's preprocessing as preprocess=; or, if you only have the "
            f"preprocessed images, pass display= to map them back for display (e.g. "
            f"display=lambda x: (x + 1) * 127.5 for [-1, 1]).",
            UserWarning,
            stacklevel=3,
        )


def _runs_root(log_dir: str) -> str:
    """The folder above the CAM folder, where the training curves of the run usually lie.

    TensorBoard finds runs in every subfolder of `--logdir`: the parent of
    `runs/exp1/cam` shows the CAM images next to `runs/exp1/train` and
    `runs/exp1/validation` of Keras' TensorBoard callback.
    """
    if log_files.is_remote(log_dir):
        return log_dir.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.normpath(log_dir)) or "."


def tensorboard_command(log_dir: str, events: int) -> str:
    """The command that shows every image step of a run with `events` events.

    TensorBoard keeps a sample of 10 image steps per tag unless told otherwise.
    """
    # Every image step is kept: TensorBoard's default keeps a sample of 10 per tag.
    return (
        f"tensorboard --logdir {shlex.quote(log_dir)} --samples_per_plugin images={max(events, 10)}"
    )


class CAMCallback(keras.callbacks.Callback):
    """Writes class activation maps of a fixed probe batch to TensorBoard during `fit`.

    Every `every_n_epochs` epochs it explains the probe images with the
    current weights and writes, under `log_dir`:

    - `cam/<method>/grid`: original | overlay per probe image, captioned
      with the true and predicted classes and the probability (`p=`);
    - `cam/<method>/mean_score`: the mean explained score;
    - `cam/compare`, when several methods are given: one row per probe
      image, the original then one overlay per method, methods as column
      headers;
    - `cam/<method>` with `"overlays"` in `images`: one overlay per probe
      image (opt-in: one TensorBoard card each).

    Grids, tables and timelines are split into pages (the samples of one
    tag) that read well on a default TensorBoard card. The CAM runs on the
    training thread; drawing, PNG encoding and writing run on one
    background thread with a queue of two events, flushed at
    `on_train_end`.

    All methods of an event share one compiled function, and one forward and
    backward pass where they need only activations and gradients.

    Diagnostics, per method, so that attention drifting or latching onto a
    shortcut shows up next to the loss:

    - `cam/<method>/<metric>`: the probe mean of each of `metrics` (see
      `keras_cam.metrics`; `drift` from the second event on), plus
      `pointing_game` and `energy_in_mask` when `probe_masks` is given;
    - `cam/<method>/per_image`: a histogram of the per-image drift;
    - `cam_metrics.csv` in `log_dir`: one row per event, method and probe
      image with every metric, to analyse without TensorBoard;
    - `cam/<method>/timeline`: the first 4 probe images, each with its
      overlay at every event so far (most recent right);
    - `cam/<method>/topk` with `top_k=k`: each probe image with the maps of
      its k highest-scoring classes, titled with class and probability;
    - `cam/<method>/sanity` once at the end of training with
      `sanity_check=True` (see `keras_cam.sanity_check`).

    Acting on the maps:

    - the probe mean of every metric goes into the epoch's Keras `logs` as
      `cam_<method>_<metric>` (`+` becomes `p`: `cam_gradcampp_focus`), so
      callbacks listed *after* this one can use it:
      `EarlyStopping(monitor="cam_gradcam_energy_in_mask", mode="max")`,
      `ModelCheckpoint`, `ReduceLROnPlateau`, `CSVLogger`, `History`, and the
      Keras `TensorBoard` callback (which plots it as `epoch_cam_...` in its
      own `train` run). Epochs without an event add nothing: monitoring
      callbacks then skip the epoch, so `EarlyStopping`'s patience counts
      events, not epochs; use `every_n_epochs=1` to monitor;
    - `alarms=`: rules such as `Alarm("energy_in_mask", below=0.2,
      events=2, stop_training=True)` that warn, write `cam/alarms` (text)
      and may stop `fit` (see `keras_cam.Alarm`);
    - with `probe_size` larger than `max_images`, every probe image is
      explained and measured (one CSV row each) and the worst are shown:
      `cam/<method>/worst_<metric>` (the `max_images` images with the
      lowest energy in mask, highest drift, highest deletion AUC, ...) and
      `cam/<method>/misclassified` (with labels).

    The TensorBoard step is the epoch index, so it continues across `fit`
    calls with `initial_epoch` and lines up with the Keras TensorBoard
    callback's epoch scalars. The target layer, the gradient sub-model and the
    compiled CAM function are built once, at the first `on_train_begin`,
    where every configuration error is raised, before any training work. A
    failure inside a later CAM event (non-finite maps, a write error) warns
    and skips that event; training goes on unless `strict=True`. A run of
    failures warns once; after a write error the event file is reopened at
    the next event, so writing resumes as soon as the disk allows.

    The model runs with `training=False`: weights, BatchNorm statistics,
    optimizer state and the training's random stream are untouched.

    Distributed training: under a single-process strategy
    (`tf.distribute.MirroredStrategy`, Keras' `DataParallel` on one host) the
    callback reads the mirrored weights; in a multi-process run
    (`MultiWorkerMirroredStrategy`, multi-process JAX, `torch.distributed`)
    only the chief explains and writes, and the other processes skip every
    event. The CAM event uses no collective operation, so it cannot
    deadlock with the workers: they simply wait at the next gradient
    all-reduce until the chief's event is done.

    Args:
        probe: display images (uint8 0–255 or float 0–1, RGB or 1-channel),
            `(images, labels)`, or a `tf.data.Dataset` / `keras.utils.PyDataset`
            of such batches; read once, up to `probe_size`. For a `Conv1D`
            or `Conv3D` model, sequences `(N, T, C)` or volumes
            `(N, D, H, W, C)` in any value range, shown as line plots over
            a map band or as three slices through the map's peak (see
            `keras_cam.cell_display`).
        log_dir: directory for the event files (created if needed); a URL
            such as `gs://bucket/logs` is written through `tf.io.gfile`
            (needs TensorFlow installed, on any backend).
        every_n_epochs: explain after every n-th epoch. Defaults to `1`.
        method: a name from `keras_cam.available_methods()`, a `CAMMethod`
            instance, or a list of them. Defaults to `"gradcam"`.
        layer: target layer name or `/`-path. Defaults to `None` (automatic).
        targets: `"predicted"`, `"label"`, a class index, one index per
            image, or a callable (see `CAMExplainer`). Defaults to `"predicted"`.
        preprocess: maps display images to model input. Defaults to `None`.
        class_names: names for captions, indexed by class. Defaults to `None`.
        max_images: number of probe images drawn (overlays, grid, timeline,
            each gallery). Defaults to `16`.
        probe_size: number of probe images read, explained and measured
            (in chunks of `batch_size`); at least `max_images`. Defaults to
            `None`: `max_images`.
        alarms: `keras_cam.Alarm` rules checked at every event. Defaults to
            `()`.
        strict: raise instead of warning when a CAM event fails. Defaults to `False`.
        score: `"logit"` or `"probability"` (see `CAMExplainer`). Defaults to `"logit"`.
        alpha: overlay opacity. Defaults to `0.4`.
        colormap: matplotlib colormap name. Defaults to `"jet"`.
        aug_smooth: average over flipped and zoomed copies (see
            `CAMExplainer`). Defaults to `False`.
        eigen_smooth: first principal component smoothing (see
            `CAMExplainer`). Defaults to `False`.
        probe_masks: (N, H, W) object masks (rule: `metrics.binary_masks`) of the probes
            ((N, T) for sequences, (N, D, H, W) for volumes, then also marked
            on their cells), for the localisation metrics. Defaults to `None`.
        metrics: names from `"drift"`, `"focus"`, `"pointing_game"`,
            `"energy_in_mask"` (these two need `probe_masks`), and the
            faithfulness metrics `"deletion"`, `"insertion"`,
            `"average_drop"`, `"increase_in_confidence"`, which cost extra
            forward passes. Defaults to `("drift", "focus")`.
        top_k: also log the maps of each probe image's k highest-scoring
            classes. Defaults to `None`.
        sanity_check: log the model-randomisation rank correlation once,
            at the end of training. Defaults to `False`.
        log_on_train_end: also explain after the last epoch when it is not a
            multiple of `every_n_epochs`. Defaults to `False`.
        batch_size: probe images explained per pass of the compiled function;
            a larger probe runs in chunks (the last one padded: no retrace).
            Defaults to `32`.
        images: which images to write: `"grid"`, `"timeline"`, `"compare"`
            (several methods), `"overlays"` (per image). Defaults to
            `("grid", "timeline", "compare")`.
        writer: `"tensorflow"`, `"tensorboard"` (no TensorFlow needed) or
            `"auto"` (TensorFlow's under the TensorFlow backend, else the
            `tensorboard` package's). Defaults to `"auto"`.
        tokens: how a token layer's output lies on the image, a
            `keras_cam.TokenGrid` or a function to an (N, h, w, C) map; see
            `CAMExplainer`. Defaults to `None`: detected from the model.
        normalize: which map value gets the full colour: `"image"` (each map
            its own maximum: every map looks equally hot), `"probe"` (the
            largest map of the probe at that event: weak maps look weak) or
            `"run"` (the largest seen so far in the run: a map that fades
            over training fades on screen). Every drawn image has a colour
            bar with the range. A map with nothing to show (flat, or
            negligible next to the layer's activations) is drawn flat and
            captioned "flat map". Defaults to `"probe"`.
        display: maps the probe images to the images drawn, when the probe
            holds only preprocessed model inputs (then leave `preprocess`
            out): e.g. `lambda x: (x + 1) * 127.5` for MobileNetV2's
            [-1, 1]. Defaults to `None`: the probe images are drawn as they are.

    Example:

    >>> model.fit(
    ...     x_train, y_train, epochs=10,
    ...     callbacks=[keras_cam.CAMCallback((x_val[:16], y_val[:16]), "runs/cam")],
    ... )                                                              # doctest: +SKIP
    >>> keras_cam.CAMCallback(probe, "runs/cam", method=["gradcam", "layercam", "scorecam"])
    ... # doctest: +SKIP
    """

    def __init__(
        self,
        probe: Any,
        log_dir: str | os.PathLike[str],
        *,
        every_n_epochs: int = 1,
        method: MethodSpec | Sequence[MethodSpec] = "gradcam",
        layer: str | None = None,
        targets: Targets = "predicted",
        preprocess: Preprocess | None = None,
        class_names: Sequence[str] | None = None,
        max_images: int = 16,
        strict: bool = False,
        score: str = "logit",
        alpha: float = 0.4,
        colormap: str = "jet",
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        probe_masks: Any = None,
        metrics: Sequence[str] = ("drift", "focus"),
        top_k: int | None = None,
        sanity_check: bool = False,
        batch_size: int = 32,
        writer: str = "auto",
        log_on_train_end: bool = False,
        output: str | int | None = None,
        images: Sequence[str] = DEFAULT_IMAGES,
        probe_size: int | None = None,
        alarms: Sequence[Alarm] = (),
        tokens: TokenLayout | None = None,
        normalize: str = "probe",
        display: Callable[[np.ndarray], Any] | None = None,
        log_metrics: Sequence[str] | bool = (),
    ) -> None:
        super().__init__()
        if isinstance(every_n_epochs, bool):
            raise TypeError("every_n_epochs must be an integer >= 1, got a bool.")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}.")
        class_names = _clean_class_names(class_names)
        if not isinstance(every_n_epochs, (int, np.integer)) or every_n_epochs < 1:
            raise ValueError(
                f"every_n_epochs must be an integer >= 1, got {every_n_epochs!r}; "
                f"use 1 to explain after every epoch."
            )
        if not isinstance(max_images, (int, np.integer)) or max_images < 1:
            raise ValueError(f"max_images must be an integer >= 1, got {max_images!r}.")
        probe_size = max_images if probe_size is None else probe_size
        if not isinstance(probe_size, (int, np.integer)) or probe_size < max_images:
            raise ValueError(
                f"probe_size must be an integer >= max_images ({max_images}), got "
                f"{probe_size!r}: it is how many probe images are measured, of which "
                f"max_images are drawn."
            )
        if isinstance(targets, str) and targets not in ("predicted", "label", MULTI_LABEL):
            raise ValueError(
                f"Unknown targets {targets!r}: use 'predicted', 'label', 'positive', a class "
                f"index, a list of class indices, a task target or a callable (and top_k= "
                f"for top-k maps)."
            )
        if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}.")
        if top_k is not None and (
            (callable(targets) and not isinstance(targets, str)) or is_multi_label(targets)
        ):
            kind = "targets='positive'" if is_multi_label(targets) else "a callable target"
            raise ValueError(
                f"top_k needs class targets; {kind} ({targets!r}) has no class ranks: "
                f"drop top_k or explain classes ('predicted', 'label', an index)."
            )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
        self.images = _check_images(images)
        self.normalize = check_normalize(normalize)
        if display is not None and not callable(display):
            raise TypeError(
                f"display must be a callable (images -> display images), got {display!r}."
            )
        self.display = display
        self.methods = resolve_methods(method)
        _colormap_table(colormap)
        self.probe = probe
        self.log_dir = os.fspath(log_dir)
        check_log_dir(self.log_dir)
        self.every_n_epochs = int(every_n_epochs)
        self.layer = layer
        self.targets = targets
        self.preprocess = preprocess
        self.class_names = class_names
        self.max_images = int(max_images)
        self.probe_size = int(probe_size)
        self.strict = strict
        self.score = score
        self.alpha = alpha
        self.colormap = colormap
        self.aug_smooth = aug_smooth
        self.eigen_smooth = eigen_smooth
        self.probe_masks = probe_masks
        task_regions = isinstance(targets, TaskTarget) and targets.has_region
        self.metrics = check_metrics(metrics, probe_masks is not None or task_regions)
        self.alarms = self._check_alarms(alarms)
        self.log_metrics = _check_log_metrics(log_metrics, self.metrics)
        self.top_k = None if top_k is None else int(top_k)
        self.sanity_check = sanity_check
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {WRITERS}, got {writer!r}.")
        self.writer = writer
        self.output = output
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        self.batch_size = int(batch_size)
        self._images: np.ndarray | None = None
        self._diagnostics: ProbeMetrics | None = None
        self._timelines: dict[str, Timeline] = {}
        self._last_step: int | None = None  # the TensorBoard step of the last event, any fit
        self._last_epoch: int | None = None
        self._last_event_epoch: int | None = None
        self._step_offset: int | None = None  # fixed at each fit's first epoch
        self._failing: str | None = None  # "write" or "event" during a run of failures
        self._hint_shown = False
        self._interrupts = interrupts.count()
        self._chief = True
        self.log_on_train_end = bool(log_on_train_end)
        check_layout(tokens)
        self.tokens = tokens
        self._explainer: CAMExplainer | None = None
        self._batch: _Batch | None = None
        self._display: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._writer: EventWriter | None = None  # used by the worker thread only
        self._jobs = BackgroundJobs()
        self._layout_written = False

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
        # In a multi-process run only the chief explains and writes; the other
        # processes skip every event, so none of them waits on the CAM work.
        self._chief = is_chief(model)
        if not self._chief:
            return
        for alarm in self.alarms:  # breaches are counted within one `fit`
            alarm.reset()
        self._interrupts = interrupts.watch()
        self._step_offset = None
        if self._explainer is None or self._explainer.model is not model:
            self._explainer = CAMExplainer(
                model,
                list(self.methods),
                layer=self.layer,
                score=self.score,
                aug_smooth=self.aug_smooth,
                eigen_smooth=self.eigen_smooth,
                batch_size=self.batch_size,
                output=self.output,
                tokens=self.tokens,
            )
            self._batch = None
        if self._batch is None:
            images, labels = take_probe(self.probe, self.probe_size, _image_shape(model))
            explainer = self._explainer
            if is_multi_label(self.targets):
                batch = explainer._positive_batch(images, self.preprocess)
            else:
                batch = explainer._prepare(images, self.targets, self.preprocess, labels)
            self._images = images
            rank = explainer.spatial_rank  # 1, 2, 3: sequences, images, volumes
            # Sequence and volume cells scale each sample to its own range.
            shown = self._display_images(images) if rank == 2 else images
            # A task's labels (masks, values) are shown as they are; class labels as ids.
            self._task_labels = labels if isinstance(self.targets, TaskTarget) else None
            class_labels = labels is not None and self._task_labels is None
            self._labels = labels_to_class_ids(labels, len(images)) if class_labels else None
            self._check_class_names()
            if self.top_k is not None and self.top_k > self._explainer.num_classes:
                raise ValueError(
                    f"top_k={self.top_k} but the model scores {self._explainer.num_classes} "
                    f"classes."
                )
            masks = None
            if self.probe_masks is not None:
                masks = check_masks(self.probe_masks, len(images), batch.size)
            elif isinstance(self.targets, TaskTarget) and self.targets.has_region:
                # The explained region (a mask, a box) is where the map should sit.
                masks = self.targets.region_masks(len(images), batch.size)
            self._display = probe_pictures(shown, rank, masks)
            self._diagnostics = ProbeMetrics(
                self.metrics, masks, os.path.join(self.log_dir, "cam_metrics.csv")
            )
            self._timelines = {method.name: Timeline() for method in self.methods}
            self._scales = {method.name: DisplayScale(self.normalize) for method in self.methods}
            # The top-k maps ride in the same batch, so one compiled function does everything.
            self._batch = batch if self.top_k is None else with_ranks(batch, range(self.top_k))
        if self.sanity_check:
            self._check_sanity_check_applies()
        # An interrupted fit may have left events queued and its file open.
        self._finish_writing()
        self._writer = create_writer(self.log_dir, self.writer, describe)
        if not self._layout_written:  # once: TensorBoard reads every event file of the run
            layout = scalars_layout(
                [method.name for method in self.methods],
                [*self.metrics, *(["sanity"] if self.sanity_check else [])],
            )
            self._submit(lambda: self._writer.scalars_layout(layout), "writing the scalars layout")
            self._layout_written = True
        if not self._hint_shown and (self.params or {}).get("verbose", 1) != 0:
            self._hint_shown = True
            # Printed as Keras prints its own notes: a default user never sees INFO logs.
            io_utils.print_msg(
                f"keras_cam: CAM images in {self.log_dir}; view them with your training "
                f"curves: {tensorboard_command(_runs_root(self.log_dir), self._events_in_run())}"
            )
        # Tracing now surfaces any problem before the first epoch's work, and
        # keeps the compile time out of the epoch timings.
        try:
            self._explained()
        except FloatingPointError as error:
            self._fail(error, "before training")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._chief:
            return
        # A Ctrl-C that some code swallowed (see keras_cam.interrupts) stops fit here.
        interrupts.raise_if_interrupted(self._interrupts)
        self._last_epoch = epoch
        if self._step_offset is None:
            self._step_offset = self._offset_for(epoch)
        if (epoch + 1) % self.every_n_epochs == 0:
            self._event(epoch, logs)

    def _offset_for(self, epoch: int) -> int:
        """Added to this fit's epochs so that no TensorBoard step is written twice.

        A later `fit` (or the same callback on another model) that starts at or
        before the last step written continues after it, as `initial_epoch`
        would: TensorBoard shows one image per step and tag, so a rewritten
        step would hide the earlier run's pictures behind the new ones.
        """
        if self._last_step is None or epoch > self._last_step:
            return 0
        offset = self._last_step + 1 - epoch
        logger.warning(
            "keras_cam: this fit starts at epoch %d, at or before the last CAM step "
            "written (%d): its events continue at step %d (pass initial_epoch=%d to fit "
            "to line them up with the epochs).",
            epoch,
            self._last_step,
            epoch + offset,
            self._last_step + 1,
        )
        return offset

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._explainer is None or not self._chief:
            return
        last = self._last_epoch
        if self.log_on_train_end and last is not None and self._last_event_epoch != last:
            self._event(last)
        if self.sanity_check and self._last_step is not None:
            try:
                self._sanity_event(self._last_step)
            except Exception as error:
                self._fail(error, "in the sanity check")
        self._finish_writing()
        interrupts.unwatch()

    def _finish_writing(self) -> None:
        """Waits for every queued event, closes the file, and reports the worker's errors."""
        self._jobs.join()
        try:
            self._report_outcomes()
        finally:
            self._close_writer()

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
        except Exception as error:
            self._fail(error, "while closing the event file")

    def _check_sanity_check_applies(self) -> None:
        """Fails before training, not after it, where the sanity check has nothing to re-draw."""
        try:
            _sanity.kernels_to_randomise(self._explainer)
        except ValueError:
            raise ValueError(
                f"sanity_check=True re-draws the kernels of the layers after the target "
                f"layer {self._explainer.layer!r}, but they have none (e.g. only pooling "
                f"and softmax), so the check could not say anything. Pass an earlier "
                f"layer= or drop sanity_check."
            ) from None

    def _sanity_event(self, step: int) -> None:
        values = {}
        for method in self.methods:
            model = self.explained_model
            explainer = CAMExplainer(model, method, layer=self._explainer.layer, tokens=self.tokens)
            values[method.name] = _sanity.sanity_check(
                model, self._images, preprocess=self.preprocess, explainer=explainer
            )

        def write() -> None:
            for name, value in values.items():
                self._writer.scalar(f"cam/{name}/sanity", value, step)
            self._writer.flush()

        self._submit(write, "in the sanity check")

    def _check_class_names(self) -> None:
        if isinstance(self.targets, TaskTarget):
            return  # a task's classes need not be the output's last axis
        if self.class_names is not None and len(self.class_names) < self._explainer.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but the model scores "
                f"{self._explainer.num_classes} classes; give one name per class."
            )

    def _check_alarms(self, alarms: Sequence[Alarm]) -> tuple[Alarm, ...]:
        alarms = (alarms,) if isinstance(alarms, Alarm) else tuple(alarms)
        names = [method.name for method in self.methods]
        for alarm in alarms:
            if not isinstance(alarm, Alarm):
                raise TypeError(f"alarms must be keras_cam.Alarm rules, got {alarm!r}.")
            if alarm.metric not in self.metrics:
                raise ValueError(
                    f"Alarm '{alarm}' watches {alarm.metric!r}, which this callback does not "
                    f"compute ({', '.join(self.metrics)}); add it to metrics= (mask metrics "
                    f"need probe_masks=)."
                )
            if alarm.method is not None and alarm.method not in names:
                raise ValueError(
                    f"Alarm '{alarm}' watches method {alarm.method!r}, which this callback "
                    f"does not run ({', '.join(names)})."
                )
        return alarms

    def _event(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._report_outcomes()
        step = epoch + (self._step_offset or 0)
        when = f"at epoch {epoch}" + (f" (step {step})" if step != epoch else "")
        try:
            model = self.explained_model
            results = self._explained()
            values = {name: self._measure(name, result, model) for name, result in results.items()}
            # Numbers for the other callbacks first: they must be in `logs` when this returns.
            if logs is not None:
                logs.update(
                    {
                        log_key(name, metric): float(np.mean(per_image))
                        for name, found in values.items()
                        for metric, per_image in found.items()
                        if metric in self.log_metrics
                    }
                )
            alarms = self._sound_alarms(values, step)
        except Exception as error:
            # A Ctrl-C inside compiled code comes back as the framework's error.
            interrupts.raise_if_interrupted(self._interrupts, error)
            self._fail(error, when)
            return
        # Drawing, encoding and writing happen on the worker while the next epoch trains.
        self._submit(lambda: self._draw_event(results, values, alarms, step), when)
        self._last_step = step
        self._last_event_epoch = epoch

    def _events_in_run(self) -> int:
        epochs = int((self.params or {}).get("epochs") or 0)
        return epochs // self.every_n_epochs + int(self.log_on_train_end)

    def _report_outcomes(self) -> None:
        """Warns (or raises, with `strict=True`) for the worker's failed jobs, in order."""
        for when, error in self._jobs.outcomes():
            if error is not None:
                self._fail(error, when)
            elif self._failing:
                logger.warning("keras_cam: CAM events written again from %s on", when)
                self._failing = None

    def _explained(self) -> dict[str, CAMResult]:
        results = self._explainer._explain(self._batch)
        if is_multi_label(self.targets):
            # The grid shows where all of an image's positive labels look: the
            # strongest of their maps at each pixel.
            results = {
                name: replace(
                    result, heatmaps=result.heatmaps.max(axis=1), raw=result.raw.max(axis=1)
                )
                for name, result in self._explainer._positive_results(results).items()
            }
        return results

    def _fail(self, error: Exception, when: str) -> None:
        """Warns once per run of consecutive failures of one kind (raises with `strict=True`).

        A write outage (a full disk: `EventWriteError`, or an `OSError` of the
        CSV) ends when writing works again. Any other error (drawing, a bad
        setting, non-finite maps) is no outage and is warned as what it is.
        """
        outage = isinstance(error, (EventWriteError, OSError))
        if isinstance(error, EventWriteError) and isinstance(error.__cause__, Exception):
            error = error.__cause__  # the writer's own error names the cause
        if self.strict:
            raise error
        kind = "write" if outage else "event"
        if self._failing == kind:
            logger.info("keras_cam: skipped the event %s too: %s", when, error)
            return
        self._failing = kind
        names = ", ".join(method.name for method in self.methods)
        if outage:
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
        warnings.warn(
            f"keras_cam: skipped the {names} event {when}: {type(error).__name__}: {error}. "
            f"{advice}; pass strict=True to raise instead.",
            RuntimeWarning,
            stacklevel=2,
        )

    def _sound_alarms(self, values: dict[str, dict[str, np.ndarray]], step: int) -> list[str]:
        """Warns (and stops training where asked) now; returns the messages to write."""
        messages = []
        for alarm in self.alarms:
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
                    self.model.stop_training = True
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                messages.append(message)
        return messages

    def _submit(self, write: Callable[[], None], when: str) -> None:
        """Queues `write` for the worker thread, which owns the writer from here on."""

        def job() -> None:
            if self._writer is None:  # closed at the end of a fit
                self._writer = create_writer(self.log_dir, self.writer, describe)
            # A write error drops only the event file (the writer opens a fresh one at the
            # next write); a drawing error leaves it as it is: no new file per failed event.
            write()

        self._jobs.submit(job, when)

    def _draw_event(
        self,
        results: dict[str, CAMResult],
        values: dict[str, dict[str, np.ndarray]],
        alarms: list[str],
        step: int,
    ) -> None:
        measured = len(self._display)
        count = min(self.max_images, measured)
        display = self._display[:count]
        shown = set(self.images)
        for message in alarms:
            self._writer.text("cam/alarms", message, step)
        # The numbers first: an error while drawing loses the pictures only.
        for name, combined in results.items():
            scores = take_images(combined, 0, count).scores
            self._writer.scalar(f"cam/{name}/mean_score", float(np.mean(scores)), step)
            self._write_metrics(name, values[name], step, measured)
        all_overlays = []
        bars, ranges, flat = {}, {}, {}
        for name, combined in results.items():
            every = take_images(combined, 0, measured)  # without the top-k ranks
            flat[name] = flat_maps(every)[:count]
            maps, top = self._scales[name](every)
            every = replace(every, heatmaps=maps)
            bars[name] = self._colour_bar(top)
            ranges[name] = "per map" if top is None else f"0-{bars[name].high}"
            result = take_images(every, 0, count)
            overlays = self._overlays(np.arange(count), result.heatmaps)
            all_overlays.append(overlays)
            tag = f"cam/{name}"
            if "overlays" in shown:
                self._writer.images(tag, overlays, step)
            if "grid" in shown:
                captions = [
                    self._caption(result, i) + (" · flat map" if flat[name][i] else "")
                    for i in range(count)
                ]
                pairs = list(zip(display, overlays, strict=True))
                if isinstance(self.targets, TaskTarget):
                    pairs = [
                        self.targets.draw(i, image, overlaid, result.predicted[i])
                        for i, (image, overlaid) in enumerate(pairs)
                    ]
                pages = card_pages(
                    pairs, captions, min_image_px=self._readable_px, legend=bars[name]
                )
                self._writer.images(f"{tag}/grid", pages, step)
            if measured > count:
                self._write_galleries(name, every, values[name], step)
            timeline = self._timelines[name]
            scale = None if top is None else ranges[name]
            timeline.add(step, overlays, self._correct(result), scale)
            if "timeline" in shown:
                titles = [self._title(i) for i in range(count)]
                # Each column is drawn on its own event's range, named in its header.
                legend = bars[name]
                if scale is not None:
                    legend = replace(legend, high="max", note="range over each column")
                pages = timeline.image(display, titles, legend=legend)
                self._writer.images(f"{tag}/timeline", pages, step)
            if self.top_k is not None:
                self._writer.images(f"{tag}/topk", self._top_k_grid(combined)[None], step)
        if len(results) > 1 and "compare" in shown:
            first = take_images(next(iter(results.values())), 0, count)
            captions = []
            for i in range(count):
                flat_here = [name for name in results if flat[name][i]]
                note = f" · flat: {', '.join(flat_here)}" if flat_here else ""
                captions.append(self._caption(first, i) + note)
            pictures = dict(zip(results, all_overlays, strict=True))
            pages = compare_pages(
                display, pictures, captions, ranges, self.colormap, min_image_px=self._readable_px
            )
            self._writer.images("cam/compare", pages, step)
        self._writer.flush()

    def _display_images(self, images: np.ndarray) -> np.ndarray:
        """The probe as drawn: `display(images)` when given, else the images themselves."""
        if self.display is None:
            _warn_if_preprocessed(images)
            return to_rgb_uint8(images)
        shown = to_rgb_uint8(_numpy(self.display(images)))
        if shown.shape[:3] != images.shape[:3]:
            raise ValueError(
                f"display= returned images of shape {shown.shape} for a probe of shape "
                f"{images.shape}; it must return one display image of the same size per "
                f"probe image."
            )
        return shown

    def _colour_bar(self, top: float | None) -> ColourBar:
        """The legend of maps shown with `DisplayScale`: raw values from 0 to `top`."""
        if top is None:
            return ColourBar(self.colormap, "min", "max", "per map")
        return ColourBar(self.colormap, "0", f"{top:.2g}", f"{self.normalize} max")

    def _correct(self, result: CAMResult) -> np.ndarray | None:
        """Per drawn image, whether the prediction is right (None without class labels)."""
        if self._labels is None or is_multi_label(self.targets):
            return None
        return result.predicted == self._labels[: len(result.predicted)]

    def _measure(self, name: str, combined: CAMResult, model: keras.Model) -> dict[str, Any]:
        """Per-image values of every metric at this event, on all probe images."""
        # The faithfulness metrics perturb the display images, then feed them as the
        # explainer does (preprocess, channel axis, channels-first transpose).
        explainer = self._explainer
        return self._diagnostics.values(
            name,
            take_images(combined, 0, len(self._display)),
            model,
            self._images,
            lambda images: explainer.model_input(images, self.preprocess),
        )

    def _write_metrics(
        self, name: str, values: dict[str, np.ndarray], step: int, count: int
    ) -> None:
        for metric, per_image in values.items():
            self._writer.scalar(f"cam/{name}/{metric}", float(np.mean(per_image)), step)
        if "drift" in values:
            self._writer.histogram(f"cam/{name}/per_image", values["drift"], step)
        self._diagnostics.append_csv(step, name, values, count)

    def _write_galleries(
        self, name: str, result: CAMResult, values: dict[str, np.ndarray], step: int
    ) -> None:
        """The probe images where attention went worst, out of all those measured."""
        galleries = {
            f"worst_{metric}": (worst_images(per_image, metric, self.max_images), metric)
            for metric, per_image in values.items()
            if metric in WORSE_WHEN_HIGHER
        }
        if self._labels is not None:
            wrong = np.flatnonzero(result.predicted != self._labels)[: self.max_images]
            galleries["misclassified"] = (wrong, None)
        for gallery, (indices, metric) in galleries.items():
            if len(indices) == 0:
                continue
            images = self._display[indices]
            overlays = self._overlays(indices, result.heatmaps[indices])
            captions = [
                f"#{i} "
                + (f"{metric} {values[metric][i]:.3g} · " if metric else "")
                + self._caption(result, i)
                for i in indices
            ]
            grid = captioned_grid(list(zip(images, overlays, strict=True)), captions)
            self._writer.images(f"cam/{name}/{gallery}", grid[None], step)

    def _overlays(self, indices: Any, heatmaps: np.ndarray) -> np.ndarray:
        """The pictures of these probe samples' maps: overlays, sequence or volume cells."""
        masks = self._diagnostics.masks
        return overlay_pictures(
            self._images[indices],
            self._display[indices],
            heatmaps,
            self.alpha,
            self.colormap,
            None if masks is None or heatmaps.ndim == 3 else masks[indices],
        )

    @property
    def _readable_px(self) -> int:
        return readable_px(self._explainer.spatial_rank)

    def _top_k_grid(self, combined: CAMResult) -> np.ndarray:
        count, k = len(self._display), self.top_k
        ranks = [take_images(combined, count * (r + 1), count * (r + 2)) for r in range(k)]
        groups, captions = [], []
        # Scores are the head's probabilities where it has a softmax/sigmoid, else logits.
        label = "logit " if self._explainer._activation is None else "p="
        for i, image in enumerate(self._display[: self.max_images]):
            groups.append([image])
            captions.append(self._title(i))
            for ranked in ranks:
                groups.append([self._overlays([i], ranked.heatmaps[i : i + 1])[0]])
                captions.append(
                    f"{self._name(int(ranked.classes[i]))} {label}{ranked.scores[i]:.2f}"
                )
        return captioned_grid(groups, captions, columns=k + 1)

    def _title(self, i: int) -> str:
        if self._labels is not None:
            return f"true {self._name(int(self._labels[i]))}"
        return f"probe {i}"

    def _name(self, class_id: int) -> str:
        if self.class_names is not None and 0 <= class_id < len(self.class_names):
            return str(self.class_names[class_id])
        return f"class {class_id}"

    def _caption(self, result: CAMResult, i: int) -> str:
        if isinstance(self.targets, TaskTarget):
            label = None if self._task_labels is None else self._task_labels[i]
            name = self._name(int(result.classes[i]))
            return self.targets.caption(result.predicted[i], float(result.scores[i]), label, name)
        if is_multi_label(self.targets):
            positive = [self._name(k) for k in np.flatnonzero(result.predicted[i])]
            return "positive: " + (", ".join(positive) or "none")
        parts = []
        if self._labels is not None:
            parts.append(f"true {self._name(int(self._labels[i]))}")
        confidence = f"{result.confidence[i]:.2f}"
        if self._explainer._confidence_activation is not None:
            confidence = f"p={confidence}"
        parts.append(f"pred {self._name(int(result.predicted[i]))} {confidence}")
        if result.classes[i] != result.predicted[i] and result.classes[i] >= 0:
            parts.append(f"map of {self._name(int(result.classes[i]))}")
        return " · ".join(parts)
