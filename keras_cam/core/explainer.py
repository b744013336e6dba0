"""CAMExplainer and explain(): the target layer and the compiled CAM function, built once."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import keras
import numpy as np
from keras import ops
from keras.src.models.functional import Functional

from keras_cam.compute import backend_module
from keras_cam.core import explainer_cache, smoothing
from keras_cam.core import outputs as _outputs
from keras_cam.core import scores as _scores
from keras_cam.core.attention import attention_reader, find_attention
from keras_cam.core.capture import call_model, token_split
from keras_cam.core.layers import (
    LayerSplit,
    model_input_shape,
    pooled_head,
    spatial_rank,
    split_model,
)
from keras_cam.core.options import ExplainOptions, explain_options
from keras_cam.core.progress import progress_bar, resolve_verbose
from keras_cam.core.result import CAMResult, PreparedBatch, Resolved, with_ranks
from keras_cam.core.scales import OfflineScale, check_offline_normalize, fixed_scale
from keras_cam.core.spatial import float32_channels_last, map_axes, per_channel, resize
from keras_cam.core.tokens import TokenLayout
from keras_cam.methods import CAMMethod, get_method
from keras_cam.methods.base import Forward
from keras_cam.methods.principal import first_component_map
from keras_cam.targets.tasks import (
    PREDICTED,
    Targets,
    TaskTarget,
    callable_scores,
    is_multi_label,
    resolve_class_ids,
    top_k,
)

logger = logging.getLogger("keras_cam")

Preprocess = Callable[[np.ndarray], Any]


# What one input of a model with 1, 2 or 3 spatial axes is called, and its axes.
_INPUT_KINDS = {1: ("sequence", "T"), 2: ("image", "H, W"), 3: ("volume", "D, H, W")}


def _class_output_error(model: keras.Model, shape: tuple[Any, ...]) -> str:
    """Why class targets cannot read an output of `shape`, and which target can."""
    if len(shape) == 4:
        remedy = (
            "a per-pixel (segmentation) output: explain a class over its pixels with "
            "targets=keras_cam.targets.segmentation(class_id) (optionally with region=)"
        )
    elif len(shape) == 3:
        remedy = (
            "per-position scores (a detector's anchors, a sequence labeller): explain them "
            "with targets=keras_cam.targets.detection(...) or a callable returning one "
            "score per image"
        )
    else:
        remedy = (
            "not (N, K) class scores: explain it with targets=keras_cam.targets.output(index) "
            "or a callable returning one score per image"
        )
    return (
        f"Class targets ('predicted', 'label', 'top<k>', 'positive', class indices) read an "
        f"(N, K) output of class scores, but the explained output of model {model.name!r} "
        f"has shape {shape}: {remedy}."
    )


def _display_size(images: np.ndarray, rank: int) -> tuple[int, ...]:
    """The spatial size of display inputs (N, *spatial) or (N, *spatial, C), channels last."""
    kind, axes = _INPUT_KINDS[rank]
    if rank == 2:
        valid = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3, 4))
        expected = "(N, H, W) grayscale or (N, H, W, C) with C in 1, 3, 4"
    else:
        valid = images.ndim in (rank + 1, rank + 2)
        expected = f"(N, {axes}) or (N, {axes}, C)"
    if not valid:
        raise ValueError(
            f"The model takes {kind}s: inputs must be {expected} (channels last, as "
            f"displayed), got shape {images.shape}. For a single {kind} add a batch "
            f"axis: {kind}s[None]."
        )
    if images.shape[0] == 0:
        raise ValueError(f"Got an empty batch of {kind}s.")
    return tuple(int(size) for size in images.shape[1 : rank + 1])


def _image_array(model: keras.Model, images: Any) -> np.ndarray:
    """The images as a real-valued numpy array (from the model's own input structure too)."""
    images = np.asarray(ops.convert_to_numpy(own_inputs(model, images)))
    if np.iscomplexobj(images):
        raise ValueError(
            f"The images are complex ({images.dtype}); a CAM explains real-valued input. "
            f"Pass the real part, the magnitude (np.abs) or both as channels."
        )
    if images.dtype == object or not (
        np.issubdtype(images.dtype, np.number) or images.dtype == bool
    ):
        raise ValueError(
            f"The images must be a numeric array (N, H, W[, C]), got {images.dtype} of shape "
            f"{images.shape}."
        )
    return images


def _matches(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape[1:], expected[1:], strict=True)
    )


def _takes_one_channel(expected: tuple[int | None, ...]) -> bool:
    """Whether the model input has one channel (first or last axis), as grayscale images have.

    Only then is a 3-D array a batch of grayscale images: for an RGB model
    with a dynamic input size, (H, W, 3) is a single image missing its batch axis.
    """
    return 1 in (expected[1], expected[-1])


def _preprocessed(images: np.ndarray, preprocess: Preprocess | None) -> np.ndarray:
    # A copy: keras.applications' preprocess_input edits float arrays in place.
    x = preprocess(images.copy()) if preprocess is not None else images
    return np.asarray(ops.convert_to_numpy(x), dtype="float32")


def _to_model_input(
    images: np.ndarray, x: np.ndarray, preprocessed: bool, expected: tuple[int | None, ...]
) -> np.ndarray:
    """Checks (and for display images, adapts) the model input `x` made from `images`."""
    if not preprocessed and x.ndim == len(expected) - 1 and _takes_one_channel(expected):
        x = x[..., None]  # grayscale (N, H, W) display images
    if (
        not _matches(x.shape, expected)
        and x.ndim == len(expected) > 2
        and _matches((x.shape[0], x.shape[-1], *x.shape[1:-1]), expected)
    ):
        x = np.moveaxis(x, -1, 1)  # channels-first model, channels-last display
    if not _matches(x.shape, expected):
        kind = _INPUT_KINDS.get(len(expected) - 2, ("image",))[0]
        single = images.ndim == len(expected) - 1
        hint = f" For a single {kind} add a batch axis: {kind}s[None]." if single else ""
        raise ValueError(
            f"The model expects input of shape {expected} but the "
            f"{'preprocessed ' if preprocessed else ''}images have shape {x.shape}. "
            f"Resize the images to the model's input size, or pass `preprocess=` "
            f"mapping display images to model input.{hint}"
        )
    return x


_FLAT_MAP_TOLERANCE = 1e-5
"""Largest (max − min) / peak of a map that counts as constant: float32 rounding is ~1e-7."""


_NEGLIGIBLE_MAP = 1e-6
"""Largest map peak, relative to the layer's largest activation, that counts as nothing.

A map is a weighted sum of the layer's activations; a peak a million times
below them means the weights (the score's sensitivity to the layer) vanish:
a saturated softmax, an untrained head, a path the score does not use. What
is left is the activations' own pattern, not the class's.
"""


def _normalise(maps: Any, activation_peak: Any = None) -> Any:
    """Each map scaled to [0, 1]; a flat or negligible map becomes all zero.

    Args:
        maps: (N, *spatial) non-negative maps.
        activation_peak: (N,) the largest |activation| of each image at the
            layer; a map whose peak is at most `_NEGLIGIBLE_MAP` times it is
            negligible. Defaults to `None`: no such check.
    """
    # Everything but one scale-and-shift of the maps works on per-map scalars: under
    # PyTorch each full-size operation is a kernel of its own (and a thread barrier).
    axes = map_axes(maps)
    high = ops.max(maps, axis=axes, keepdims=True)
    low = ops.min(maps, axis=axes, keepdims=True)
    peak = ops.maximum(ops.abs(high), ops.abs(low))
    # Dividing by the peak first keeps max − min from overflowing near float32's limit (a
    # division, not a reciprocal: the reciprocal of a peak near that limit is subnormal).
    divisor = ops.where(peak > 0, peak, 1.0)
    relative_low = low / divisor
    span = high / divisor - relative_low
    # A map constant up to rounding (a few ulps after resizing) has nothing to show: it
    # becomes zero, on every backend, rather than a pattern stretched out of rounding noise.
    # After the division by the peak, the span is relative to the map's largest value.
    flat = span <= _FLAT_MAP_TOLERANCE
    if activation_peak is not None:
        per_map = ops.reshape(activation_peak, (-1, *([1] * len(axes))))
        negligible = peak <= _NEGLIGIBLE_MAP * per_map
        flat = ops.logical_or(flat, negligible)
    inverse_span = ops.where(flat, 0.0, 1.0 / ops.where(flat, 1.0, span))
    return ops.clip((maps / divisor - relative_low) * inverse_span, 0.0, 1.0)


def _looks_like_probabilities(outputs: Any, unswitched_logits: bool) -> Any:
    """Per image: outputs read as logits that are non-negative and sum to 1, like probabilities."""
    if not hasattr(outputs, "shape"):  # a dict or list read by a task target (detection)
        return ops.zeros((keras.tree.flatten(outputs)[0].shape[0],), dtype="bool")
    if not unswitched_logits or outputs.shape[-1] < 2:
        return ops.zeros((outputs.shape[0],), dtype="bool")
    sums_to_one = ops.abs(ops.sum(outputs, axis=-1) - 1.0) < 1e-3
    return ops.logical_and(ops.all(outputs >= 0, axis=-1), sums_to_one)


def _by_rank(result: CAMResult, k: int) -> CAMResult:
    """A rank-major result of k copies of N images -> per-map fields of shape (N, k, ...)."""
    count = len(result.classes) // k

    def per_image(values: np.ndarray) -> np.ndarray:
        return np.swapaxes(values.reshape(k, count, *values.shape[1:]), 0, 1)

    return replace(
        result,
        heatmaps=per_image(result.heatmaps),
        raw=per_image(result.raw),
        classes=per_image(result.classes),
        scores=per_image(result.scores),
        predicted=result.predicted[:count],
        confidence=result.confidence[:count],
    )


def _check_eigen_smooth(methods: Sequence[CAMMethod]) -> None:
    """Refuses `eigen_smooth` for methods whose map is no sum of channel contributions."""
    refused = [method.name for method in methods if not method.has_channel_contributions]
    if refused:
        raise ValueError(
            f"eigen_smooth=True smooths a map made of per-channel contributions at the target "
            f"layer; {', '.join(refused)} build their maps otherwise (other layers, the "
            f"input's gradient or attention). Drop eigen_smooth=True, or explain "
            f"{', '.join(refused)} with a separate explainer."
        )


def _check_graph_model(model: Any) -> None:
    """Raises unless `model` is a functional or Sequential Keras model (a graph to split)."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"keras_cam explains a keras.Model (functional or Sequential), got "
            f"{type(model).__name__}."
        )
    if isinstance(model, (keras.Sequential, Functional)):
        return
    names = ", ".join(repr(layer.name) for layer in model.layers[:6])
    raise TypeError(
        f"Model {model.name!r} is a subclassed keras.Model ({type(model).__name__}): its "
        f"call() is Python code, not a graph of layers, so keras_cam cannot split it at a "
        f"feature map; subclassed models are not supported. Wrap its layers in a functional "
        f"model that repeats the steps of call() (it shares their trained weights): "
        f"`inputs = keras.Input(shape); x = model.conv(inputs); ...; "
        f"wrapped = keras.Model(inputs, model.head(x))`, and explain `wrapped`"
        f"{f' (its layers: {names})' if names else ''}. Wrapping the whole model as one "
        f"layer (keras.Model(inputs, model(inputs))) hides those layers again."
    )


def own_inputs(model: keras.Model | None, images: Any) -> Any:
    """The one input array of `images` given in the model's own input structure.

    A model built on `{"images": keras.Input(...)}` (or `[keras.Input(...)]`)
    is fed a dict (or list) of one array; keras_cam explains models of one
    input, so that array is what is explained. With `model=None` a dict's
    key is not checked.
    """
    names = [getattr(tensor, "name", None) for tensor in getattr(model, "inputs", None) or []]
    if isinstance(images, dict):
        if len(images) != 1:
            raise ValueError(
                f"Got a dict of {len(images)} inputs ({sorted(map(str, images))}); keras_cam "
                f"explains models of one image input: pass that input's array."
            )
        ((key, value),) = images.items()
        try:
            structure = model.input
        except (AttributeError, ValueError):  # a Sequential model not built yet
            structure = None
        keys = list(structure) if isinstance(structure, dict) else names
        if model is not None and keys and key not in keys:
            raise ValueError(
                f"The inputs dict has key {key!r} but model {model.name!r} takes "
                f"{keys}; use the model's own key."
            )
        return value
    if isinstance(images, (list, tuple)) and len(images) == 1 and hasattr(images[0], "shape"):
        return images[0]
    return images


MethodSpec = str | CAMMethod


def resolve_methods(method: MethodSpec | Sequence[MethodSpec]) -> tuple[CAMMethod, ...]:
    if isinstance(method, type) and issubclass(method, CAMMethod):
        raise TypeError(
            f"method={method.__name__} is a method class; pass an instance, "
            f"{method.__name__}(), or its name."
        )
    if method is None or not isinstance(method, (str, CAMMethod, Sequence)):
        raise TypeError(
            f"method must be a method name, a CAMMethod instance or a list of them, got "
            f"{method!r}; see keras_cam.available_methods()."
        )
    specs = [method] if isinstance(method, (str, CAMMethod)) else list(method)
    if not specs:
        raise ValueError("method is an empty list; name at least one CAM method.")
    methods = tuple(m if isinstance(m, CAMMethod) else get_method(m) for m in specs)
    names = [m.name for m in methods]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"Methods {repeated} are listed twice; list each method once.")
    return methods


class CAMExplainer:
    """Computes class activation maps of a Keras model, compiled once.

    The target layer is found and the model is split there when the
    explainer is built; the first call traces one compiled function (forward,
    gradient down to the target layer, every method, ReLU, upsampling,
    normalisation) that every later call with the same batch shape reuses.
    Several methods share that one forward and backward pass. The split
    shares the model's layers, so each call sees the current weights. The
    model runs with `training=False`.

    Args:
        model: a Keras functional or Sequential image classifier (nested
            models such as a frozen `keras.applications` base are fine), or
            a `Conv1D` classifier of sequences (N, T, C) or a `Conv3D`
            classifier of volumes (N, D, H, W, C).
        method: a name from `keras_cam.available_methods()`, a `CAMMethod`
            instance (e.g. `keras_cam.methods.ScoreCAM(max_channels=64)`),
            or a list of them. Defaults to `"gradcam"`.
        options: what is explained and how (layer, score, output, tokens,
            smoothing, batch size), see `keras_cam.ExplainOptions`. Defaults
            to `None`: `ExplainOptions()`.
        **overrides: any `ExplainOptions` field as a keyword (`layer="conv3"`),
            replacing that field of `options`.

    Example:

    >>> explainer = keras_cam.CAMExplainer(model)                # doctest: +SKIP
    >>> result = explainer(images, targets="predicted")          # doctest: +SKIP
    >>> result.heatmaps.shape, result.layer                      # doctest: +SKIP
    ((8, 224, 224), 'resnet50/conv5_block3_out')
    >>> several = keras_cam.CAMExplainer(model, ["gradcam", "layercam"])  # doctest: +SKIP
    >>> several(images)["layercam"].heatmaps.shape               # doctest: +SKIP
    (8, 224, 224)
    """

    def __init__(
        self,
        model: keras.Model,
        method: MethodSpec | Sequence[MethodSpec] = "gradcam",
        options: ExplainOptions | None = None,
        **overrides: Any,
    ) -> None:
        _check_graph_model(model)
        self.options = explain_options(options, **overrides)
        self.model = model
        self.methods = resolve_methods(method)
        self._single = isinstance(method, (str, CAMMethod))
        if self.options.eigen_smooth:
            _check_eigen_smooth(self.methods)
        self.trace_count = 0
        self._compute = backend_module()
        self._split: LayerSplit | None = None
        self._resolved: Resolved | None = None
        self._spatial_rank: int | None = None
        self._compiled: dict[Any, Callable[..., Any]] = {}
        self._probabilities_warned = False
        # Where finished forward passes are reported while a call runs (explain's
        # progress bar); read at run time, so the compiled function never retraces.
        self.on_passes: Callable[[int], None] | None = None
        if model.built:
            self._resolve()

    @property
    def score(self) -> str:
        """`"logit"` or `"probability"` (see `ExplainOptions`)."""
        return self.options.score

    @property
    def aug_smooth(self) -> bool:
        """Whether maps are averaged over augmented copies (see `ExplainOptions`)."""
        return self.options.aug_smooth

    @property
    def eigen_smooth(self) -> bool:
        """Whether maps are the first principal component (see `ExplainOptions`)."""
        return self.options.eigen_smooth

    @property
    def batch_size(self) -> int:
        """Images per pass of the compiled function (see `ExplainOptions`)."""
        return self.options.batch_size

    @property
    def output(self) -> _outputs.OutputSpec:
        """Which output the target reads (see `ExplainOptions`)."""
        return self.options.output

    @property
    def tokens(self) -> TokenLayout | None:
        """How a token layer lies on the image (see `ExplainOptions`)."""
        return self.options.tokens

    @property
    def method(self) -> CAMMethod:
        """The (first) method."""
        return self.methods[0]

    @property
    def layer(self) -> str:
        """`/`-path of the explained layer."""
        return self._resolve().path

    @property
    def num_classes(self) -> int:
        """Classes the model scores; a single-unit sigmoid head scores 2.

        Raises:
            ValueError: the explained output is not (N, K) class scores (a
                segmentation map, per-anchor scores): a class target cannot
                read it, a task target can.
        """
        shape = tuple(_outputs.symbolic(self.model, self._output_key()).shape)
        if len(shape) != 2:
            raise ValueError(_class_output_error(self.model, shape))
        return 2 if shape[-1] == 1 else int(shape[-1])

    @property
    def spatial_rank(self) -> int:
        """Spatial axes of the maps: 1 (sequence model), 2 (image or token model), 3 (volumes)."""
        if self._spatial_rank is None:
            self._spatial_rank = spatial_rank(self.model)
        return self._spatial_rank

    def _output_key(self, whole: bool = False) -> Any:
        return _outputs.resolve(self.model, self.output, whole)

    def __call__(
        self,
        images: Any,
        targets: Targets = "predicted",
        preprocess: Preprocess | None = None,
        labels: Any = None,
        normalize: OfflineScale = "image",
    ) -> CAMResult | dict[str, CAMResult]:
        """Explains a batch.

        Args:
            images: display images, (N, H, W, C) or (N, H, W), uint8 0–255 or
                float. Heatmaps come back at this size. For a 1-D model,
                sequences (N, T, C) or (N, T); for a 3-D model, volumes
                (N, D, H, W, C) or (N, D, H, W).
            targets: `"predicted"`, `"label"` (needs `labels`), `"top<k>"`
                (e.g. `"top3"`: the maps of each image's k highest-scoring
                classes), `"positive"` (multi-label: the map of every label
                of a K-unit sigmoid head), a class index, one class index per
                image, a task target (`keras_cam.targets.tasks.segmentation`,
                `detection`, `output`, `similarity`), or a callable mapping
                the model's outputs (logits with `score="logit"`) to a score
                per image. Defaults to `"predicted"`.
            preprocess: maps `images` to model input (e.g.
                `keras.applications.resnet50.preprocess_input`). Defaults to
                `None`: the images are fed as they are.
            labels: sparse or one-hot labels, for `targets="label"`.
            normalize: which value of `heatmaps` gets the full colour:
                `"image"`, each map scaled from its own minimum to its
                maximum (a near-empty map looks as hot as a strong one);
                `"probe"`, one scale for every map of the call (each method
                its own: their units differ), the raw maps divided by their
                largest value, so a weak map stays dim next to a strong one;
                or a number, the raw value (`CAMResult.raw`'s units) shown at
                full colour, larger values clipped: one scale across calls,
                e.g. the largest raw value over a data set. The callback's
                `"run"` (the running maximum of a training run) has no
                meaning for one call and is refused. Maps with nothing to
                show stay zero on every scale. Defaults to `"image"`, as
                before this option existed.

        Returns:
            A `CAMResult`; a dict from method name to `CAMResult` when the
            explainer was given a list of methods. With `"top<k>"` targets
            the per-map fields gain a rank axis: `heatmaps` (N, k, H, W),
            `raw` (N, k, h, w), `classes` and `scores` (N, k), best first.
            With `"positive"` they gain a label axis of all K labels, the
            maps of labels not predicted positive are zero, and `predicted`
            is the (N, K) mask of positive labels.
        """
        normalize = check_offline_normalize(normalize)
        batch = self.prepare(images, targets, labels, preprocess)
        maps = self._maps(batch)
        if batch.positive_labels:
            results = self._per_label(maps, batch.positive_labels)
        elif batch.ranks:
            results = {name: _by_rank(result, batch.ranks) for name, result in maps.items()}
        else:
            results = maps
        results = {
            name: fixed_scale(result, normalize, self.spatial_rank)
            for name, result in results.items()
        }
        return results[self.method.name] if self._single else results

    def prepare(
        self,
        images: Any,
        targets: Targets = "predicted",
        labels: Any = None,
        preprocess: Preprocess | None = None,
    ) -> PreparedBatch:
        """The batch made ready for `run`: model input, class ids and target values as tensors.

        Preparing once and running many times (as `CAMCallback` does with its
        probe at every event) skips the preprocessing and the checks.

        Args:
            images: display images, as for `__call__`.
            targets: as for `__call__`. `"top<k>"` prepares k copies of the
                batch (copy r explains each image's class of rank r),
                `"positive"` K copies (copy k explains label k). Defaults to
                `"predicted"`.
            labels: sparse or one-hot labels, for `targets="label"`.
            preprocess: maps `images` to model input. Defaults to `None`.

        Returns:
            A `PreparedBatch`.

        Example:

        >>> batch = explainer.prepare(images, "label", labels)       # doctest: +SKIP
        >>> explainer.run(batch)["gradcam"].heatmaps.shape          # doctest: +SKIP
        (8, 224, 224)
        """
        if is_multi_label(targets):
            return self._positive_batch(images, preprocess)
        k = top_k(targets)
        if k is None:
            return self._prepare(images, targets, preprocess, labels)
        batch = self._prepare(images, "predicted", preprocess)
        if k > self.num_classes:
            raise ValueError(
                f"targets='top{k}' asks for more classes than the model scores "
                f"({self.num_classes})."
            )
        return replace(with_ranks(batch, range(k), keep=False), ranks=k)

    def run(self, prepared: PreparedBatch) -> dict[str, CAMResult]:
        """The maps of a prepared batch, one `CAMResult` per method, each image on its own scale.

        Results are flat, one entry per copy in the batch (a `"top<k>"`
        batch's k copies of N images are N·k entries, rank-major), except for
        a `"positive"` batch: there each image's maps are the strongest of
        its positive labels' maps at each pixel (`heatmaps` (N, H, W)), with
        `classes` and `scores` per label (N, K) and `predicted` the (N, K)
        mask of positive labels.

        Args:
            prepared: a batch from `prepare` of this explainer.

        Returns:
            A dict from method name to `CAMResult`.
        """
        results = self._maps(prepared)
        if not prepared.positive_labels:
            return results
        return {
            name: replace(result, heatmaps=result.heatmaps.max(axis=1), raw=result.raw.max(axis=1))
            for name, result in self._per_label(results, prepared.positive_labels).items()
        }

    @property
    def resolved(self) -> Resolved:
        """What the explainer found in the model: layer, layout, head (builds the split once)."""
        if self._resolved is not None:
            return self._resolved
        split = self._resolve()
        try:
            key = self._output_key()
            units = _outputs.symbolic(self.model, key).shape[-1]
            num_classes = None if units is None else (2 if units == 1 else int(units))
        except (ValueError, AttributeError):  # the whole structure, or several outputs
            key, num_classes = None, None
        self._resolved = Resolved(
            path=split.path,
            layer=split.layer,
            head_layers=tuple(split.head_layers),
            spatial_rank=self.spatial_rank,
            channels_first=split.channels_first,
            head_activation=self._activation,
            confidence_activation=self._confidence_activation,
            output=key,
            num_classes=num_classes,
            passes_per_image=self._copies,
        )
        return self._resolved

    def _positive_batch(self, images: Any, preprocess: Preprocess | None) -> PreparedBatch:
        """K copies of the batch, copy k explaining label k."""
        batch = self._prepare(images, "predicted", preprocess)
        labels = self._label_count()
        if self._activation == "softmax":
            # Softmax probabilities compete and sum to 1: at most one exceeds 0.5, so
            # "every positive label" would silently be "the predicted class, if confident".
            raise ValueError(
                f"targets='positive' explains a multi-label head of K independent sigmoid "
                f"units, but the output of model {self.model.name!r} ends in a softmax "
                f"(single-label: its classes compete and sum to 1). Use targets='predicted' "
                f"or 'top<k>' (e.g. 'top3') for the k highest-scoring classes."
            )
        if labels < 2:
            raise ValueError(
                "targets='positive' explains a multi-label head of K sigmoid units; this "
                "output has one unit: use targets='predicted' or a class index."
            )
        count = int(batch.inputs.shape[0])
        return replace(
            batch,
            inputs=ops.concatenate([batch.inputs] * labels),
            class_ids=ops.convert_to_tensor(np.repeat(np.arange(labels, dtype=np.int32), count)),
            positive_labels=labels,
        )

    def _label_count(self) -> int:
        return int(_outputs.symbolic(self.model, self._output_key()).shape[-1])

    def _per_label(self, results: dict[str, CAMResult], labels: int) -> dict[str, CAMResult]:
        """Results of a positive batch -> per-label fields (N, K, ...), negatives zeroed."""
        found = {}
        for name, result in results.items():
            per_label = _by_rank(result, labels)
            # Each copy's score is the label's probability (or its logit without a sigmoid).
            positive = per_label.scores > (0.5 if self._activation is not None else 0.0)
            spatial = (None,) * self.spatial_rank
            found[name] = replace(
                per_label,
                heatmaps=per_label.heatmaps * positive[(..., *spatial)],
                raw=per_label.raw * positive[(..., *spatial)],
                predicted=positive,
            )
        return found

    def _resolve(self) -> LayerSplit:
        if self._split is None:
            if self.aug_smooth and self.spatial_rank != 2:
                raise ValueError(
                    f"aug_smooth flips and zooms 2-D images; model {self.model.name!r} takes "
                    f"{_INPUT_KINDS[self.spatial_rank][0]}s. Drop aug_smooth=True."
                )
            split = token_split(self.model, self.options.layer, self._compute, self.tokens)
            if split is None:
                split = split_model(self.model, self.options.layer)
            for method in self.methods:
                method.prepare(split)
            self._attention = None
            if any(method.uses_attention for method in self.methods):
                # The attention methods' blocks, found once (a probing call), like the split.
                grid = split.capture.grid if split.capture is not None else None
                self._attention = find_attention(self.model, self._compute, self.tokens or grid)
                for method in self.methods:
                    method.prepare_attention(self._attention)
            key = _outputs.resolve(self.model, self.output, whole=True)
            # The head is found through pass-through layers and nested models, so a
            # wrapped classifier is explained on the same logits as the classifier.
            output = None if key is None else _outputs.symbolic(self.model, key)
            output_layer = split.output_layer if key is None else _scores.head_layer(output)
            self._activation = _scores.output_activation(output_layer or split.output_layer)
            self._output_layer = output_layer
            self._outputs_are_logits = self.score == "logit" or self._activation is None
            self._confidence_activation = _scores.confidence_activation(
                output_layer or split.output_layer,
                None if output is None else output.shape[-1],
            )
            self._pooled_head = None if split.capture else pooled_head(self.model, split)
            self._split = split
            logger.info("keras_cam: explaining layer %r of model %r", split.path, self.model.name)
        return self._split

    def model_input(self, images: Any, preprocess: Preprocess | None = None) -> np.ndarray:
        """What the model is fed for these display images: `preprocess`, then checked.

        Grayscale gains a channel axis and channels-last images are transposed
        for a channels-first model when there is no `preprocess`.
        """
        images = _image_array(self.model, images)
        x = _preprocessed(images, preprocess)
        if x.ndim == 0 or len(x) != len(images):
            raise ValueError(
                f"preprocess turned {len(images)} images into a batch of shape {x.shape}; it "
                f"must map each image to one model input and keep the batch size."
            )
        if not self.model.built:
            self.model.build((None, *x.shape[1:]))
        self._resolve()
        return _to_model_input(images, x, preprocess is not None, model_input_shape(self.model))

    def _prepare(
        self, images: Any, targets: Targets, preprocess: Preprocess | None, labels: Any = None
    ) -> PreparedBatch:
        images = _image_array(self.model, images)
        inputs = self.model_input(images, preprocess)  # builds an unbuilt model first
        size = _display_size(images, self.spatial_rank)
        arrays: tuple[Any, ...] = ()
        if isinstance(targets, TaskTarget):
            if any(method.name == "cam" for method in self.methods):
                raise ValueError(
                    f"method='cam' weights channels by a classifier's Dense kernel and cannot "
                    f"explain {targets!r}; use a gradient method such as 'gradcam'."
                )
            key = self._output_key(whole=targets.reads_all_outputs)
            arrays = targets.arrays(len(images), _outputs.shape(self.model, key))
            arrays = tuple(ops.convert_to_tensor(array) for array in arrays)
            class_ids, score_fn = targets.class_ids(len(images)), targets
        elif callable(targets) and not isinstance(targets, str):
            self._output_key()  # an ambiguous output is an error before any work
            class_ids = np.full(len(images), PREDICTED, dtype=np.int32)
            score_fn = targets
        else:
            class_ids = resolve_class_ids(targets, len(images), self.num_classes, labels)
            score_fn = None
        return PreparedBatch(
            inputs=ops.convert_to_tensor(inputs),
            class_ids=ops.convert_to_tensor(class_ids),
            score_fn=score_fn,
            size=size,
            arrays=arrays,
        )

    def _maps(self, batch: PreparedBatch) -> dict[str, CAMResult]:
        task = batch.score_fn if isinstance(batch.score_fn, TaskTarget) else None
        # A task target compiles once per kind and settings; its values are tensors.
        key = (task.static_key() if task else batch.score_fn, batch.size, len(batch.arrays))
        if key not in self._compiled:
            self._compiled[key] = self._compute.compile_function(
                self._cam_function(batch.score_fn, batch.size), self.model
            )
        maps, classes, scores, predicted, confidence, probability_rows = self._run_in_chunks(
            self._compiled[key], batch
        )
        self._warn_if_probabilities_pass_for_logits(probability_rows)
        results = {}
        for method in self.methods:
            raw, heatmaps, finite = maps[method.name]
            if not finite.all():
                raise FloatingPointError(
                    f"The {method.name} map of layer {self.layer!r} is not finite (NaN or "
                    f"inf in the activations, gradients or outputs); check the model's "
                    f"weights and inputs."
                )
            results[method.name] = CAMResult(
                heatmaps=heatmaps.astype(np.float32),
                raw=raw.astype(np.float32),
                classes=classes.astype(np.int64),
                scores=scores.astype(np.float32),
                layer=self.layer,
                method=method.name,
                predicted=predicted if task else predicted.astype(np.int64),
                confidence=confidence.astype(np.float32),
            )
        return results

    def _warn_if_probabilities_pass_for_logits(self, probability_rows: np.ndarray) -> None:
        """Warns once when `score="logit"` differentiates probabilities it cannot see as such.

        The softmax/sigmoid can be switched off only where it is the output
        layer's activation or a `Softmax` layer; one inside a `Lambda` or a
        custom layer is invisible, and the gradients of its probabilities
        vanish as soon as the model is confident.
        """
        if self._probabilities_warned or not probability_rows.all():
            return
        self._probabilities_warned = True
        warnings.warn(
            f"keras_cam: score='logit', but the outputs of model {self.model.name!r} look "
            f"like probabilities (non-negative, each row sums to 1) and its output layer "
            f"{(self._output_layer or self._split.output_layer).name!r} has no "
            f"softmax/sigmoid activation that can be "
            f"switched off (a softmax inside a Lambda or a custom layer?), so the maps "
            f"differentiate probabilities, whose gradients vanish once the model is "
            f"confident. Expose the logits: end the model with a Dense layer with "
            f"activation='softmax' or a keras.layers.Softmax layer (or pass "
            f"score='probability' to say that probabilities are meant).",
            UserWarning,
            stacklevel=4,
        )

    def _run_in_chunks(self, function: Callable[..., Any], batch: PreparedBatch) -> tuple[Any, ...]:
        """Runs the compiled function on chunks of `batch_size` images, as numpy.

        Every chunk has the same shape (the last one repeats its last image),
        so a large probe never retraces; memory is bounded by the chunk.
        """
        count = int(batch.inputs.shape[0])
        size = min(self.batch_size or count, count)
        parts = []
        for start in range(0, count, size):
            tensors = (batch.inputs, batch.class_ids, *batch.arrays)
            if size != count:
                indices = ops.convert_to_tensor(
                    np.minimum(np.arange(start, start + size), count - 1)
                )
                tensors = tuple(ops.take(tensor, indices, axis=0) for tensor in tensors)
            maps, *shared = function(*tensors)
            self._report_passes(size * self._copies)  # the unmasked pass of each item
            numpy = {
                name: [ops.convert_to_numpy(t) for t in values] for name, values in maps.items()
            }
            parts.append((numpy, [ops.convert_to_numpy(t) for t in shared]))

        def joined(pieces):
            if pieces[0].ndim == 0:  # the finite flag of each chunk
                return np.array([bool(piece) for piece in pieces])
            return np.concatenate(pieces)[:count]

        maps = {
            name: [joined([part[0][name][i] for part in parts]) for i in range(3)]
            for name in parts[0][0]
        }
        shared = [joined([part[1][i] for part in parts]) for i in range(len(parts[0][1]))]
        return (maps, *shared)

    @property
    def _copies(self) -> int:
        """Inputs the compiled function runs per image (augmented copies)."""
        return len(smoothing.AUGMENTATIONS) if self.aug_smooth else 1

    def _report_passes(self, passes: int) -> None:
        if self.on_passes is not None:
            self.on_passes(passes)

    def _map_chunks(self, fn: Callable[[Any], Any], count: int, batch_size: int) -> Any:
        size = min(batch_size, count)

        def chunk_done(index: int) -> None:  # on the host, as each chunk finishes
            self._report_passes(min(size, count - index * size))

        def chunk(i):
            # The last chunk repeats the last index: every chunk has one shape.
            indices = ops.minimum(i * size + ops.arange(size, dtype="int32"), count - 1)
            return self._compute.after_chunk(chunk_done, i, ops.cast(fn(indices), "float32"))

        chunks = self._compute.map_sequential(chunk, -(-count // size))
        return ops.reshape(chunks, (-1, *chunks.shape[2:]))[:count]

    def _forward(self, inputs, activations, outputs, classes, score_of, read) -> Forward:
        split = self._split

        def score_inputs(chunk, chunk_classes, own_score=None):
            if split.capture is not None:
                outputs = call_model(self.model, chunk)
            else:
                outputs = split.head(split.features(chunk, training=False), training=False)
            if own_score is not None:
                return own_score(read(outputs), chunk_classes)
            return score_of(outputs, chunk_classes)

        def gradients_at(chunk, chunk_classes, own_score=None):
            def score(outputs):
                if own_score is not None:
                    return own_score(read(outputs), chunk_classes)
                return score_of(outputs, chunk_classes)

            if split.capture is None:
                found = self._compute.activations_and_gradients(
                    split.features, split.head, chunk, score, True
                )
            else:
                found = split.capture.activations_and_gradients(self._compute, chunk, score, True)
            return tuple(float32_channels_last(t, split.channels_first) for t in found[:2])

        def hessian_at(chunk_classes, own_score=None):
            def score(outputs):
                if own_score is not None:
                    return own_score(read(outputs), chunk_classes)
                return score_of(outputs, chunk_classes)

            found = self._hessian_at(inputs, activations, score)
            return tuple(float32_channels_last(t, split.channels_first) for t in found)

        return Forward(
            inputs=inputs,
            input_channels_first=split.channels_first,
            scores=score_of(outputs, classes),
            score_inputs=score_inputs,
            score_ablated=self._ablation_scorer(inputs, activations, score_of),
            map_chunks=self._map_chunks,
            gradients_at=gradients_at,
            hessian_at=hessian_at,
            model=self.model,
            attention=None
            if self._attention is None
            else attention_reader(self._attention, self._compute, score_of),
        )

    def _hessian_at(self, inputs, activations, score) -> tuple[Any, Any]:
        """`(∂S/∂A, ∇²_A S · A)` at the target layer, in its own layout (ShapleyCAM)."""
        split = self._split
        if split.capture is None:
            # The head alone, from the activations already computed, shifted by `delta`.
            def total(delta):
                return ops.sum(score(split.head(activations + delta, training=False)))

            point = ops.zeros_like(activations)
            return self._compute.gradient_and_hvp(total, point, activations)
        capture = split.capture
        captured, _ = capture.run(inputs)

        def shifted(delta):
            return ops.sum(score(capture.run(inputs, lambda output: output + delta)[1]))

        gradients, product = self._compute.gradient_and_hvp(
            shifted, ops.zeros_like(captured), captured
        )
        return capture.to_map(gradients), capture.to_map(product)

    def _ablation_scorer(self, inputs, activations, score_of) -> Callable[[Any, Any, Any], Any]:
        """`(images, channels, classes)` -> scores with those channels zeroed, computed cheaply."""
        split, head, dtype = self._split, self._pooled_head, activations.dtype
        count = activations.shape[1 if split.channels_first else -1]
        if split.capture is not None:

            def rerun_model(images, channels, classes):
                keep = 1.0 - ops.one_hot(channels, count, axis=-1, dtype=dtype)
                outputs = split.capture.ablated_outputs(ops.take(inputs, images, axis=0), keep)
                return score_of(outputs, classes)

            return rerun_model
        if head is None:

            def rerun_head(images, channels, classes):
                keep = 1.0 - ops.one_hot(channels, count, axis=-1, dtype=dtype)
                rank = len(activations.shape) - 2
                if split.channels_first:
                    keep = ops.reshape(keep, (-1, count, *[1] * rank))
                else:
                    keep = per_channel(keep, rank)
                ablated = ops.take(activations, images, axis=0) * keep
                return score_of(split.head(ablated, training=False), classes)

            return rerun_head
        pooled = ops.cast(head.pooling(activations), "float32")
        if head.dense is None:

            def rerun_after_pooling(images, channels, classes):
                keep = 1.0 - ops.one_hot(channels, count)
                ablated = ops.cast(ops.take(pooled, images, axis=0) * keep, dtype)
                return score_of(head.rest(ablated, training=False), classes)

            return rerun_after_pooling
        kernel = ops.cast(head.dense.kernel, "float32")
        dense_outputs = ops.matmul(pooled, kernel)
        if head.dense.use_bias:
            dense_outputs = dense_outputs + ops.cast(head.dense.bias, "float32")

        def rerun_after_dense(images, channels, classes):
            removed = ops.take_along_axis(
                ops.take(pooled, images, axis=0), channels[:, None], axis=1
            )
            ablated = ops.take(dense_outputs, images, axis=0) - removed * ops.take(
                kernel, channels, axis=0
            )
            # Inside linear_output the Dense's softmax is already swapped for a linear one.
            hidden = head.dense.activation(ops.cast(ablated, head.dense.compute_dtype))
            return score_of(head.rest(ops.cast(hidden, dtype), training=False), classes)

        return rerun_after_dense

    def _signed_map(self, method: CAMMethod, activations, gradients, classes, forward) -> Any:
        if not self.eigen_smooth:
            return method.cam(activations, gradients, classes, forward)
        weighted = method.weighted_activations(activations, gradients, classes, forward)
        return first_component_map(weighted, ops.sum(weighted, axis=-1))

    def _cam_function(
        self, score_fn: Callable[[Any], Any] | TaskTarget | None, size: tuple[int, int]
    ) -> Callable[..., tuple[Any, ...]]:
        split, methods = self._resolve(), self.methods
        are_logits, activation = self._outputs_are_logits, self._activation
        confidence_activation = self._confidence_activation
        needs_gradients = any(method.uses_gradients for method in methods)
        needs_forward = any(method.uses_forward for method in methods)
        task = score_fn if isinstance(score_fn, TaskTarget) else None
        key = self._output_key(whole=task is not None and task.reads_all_outputs)

        def read(outputs):
            """The explained output (or structure) of the head's outputs, as float32."""
            selected = _outputs.select(outputs, key)
            return keras.tree.map_structure(lambda t: ops.cast(t, "float32"), selected)

        def first(outputs, count):
            return keras.tree.map_structure(lambda t: t[:count], outputs)

        def cam_function(inputs, class_ids, *arrays):
            # Python runs this body only while tracing: the count is the number of traces.
            if self._compute.is_tracing():
                self.trace_count += 1
            logger.debug("keras_cam: tracing the CAM function (%d)", self.trace_count)
            count = inputs.shape[0]
            x = smoothing.augment(inputs, split.channels_first) if self.aug_smooth else inputs
            copies = x.shape[0] // count

            def classes_of(outputs):
                if task is not None:
                    # A task's per-image values are read by image index, which the
                    # perturbation methods pass along as the item's "class".
                    return ops.tile(ops.arange(count, dtype="int32"), (copies,))
                # Negative ids ask for a class by rank; every augmented copy explains its
                # original's class.
                ranks = ops.maximum(PREDICTED - class_ids, 0)
                ranked = _scores.ranked_classes(outputs[:count], ranks, are_logits)
                return ops.tile(ops.where(class_ids < 0, ranked, class_ids), (copies,))

            def score_of(outputs, classes=None):
                outputs = read(outputs)
                if task is not None:
                    index = classes_of(outputs) if classes is None else classes
                    values = [ops.take(array, index, axis=0) for array in arrays]
                    return task.score(outputs, *values, are_logits=are_logits)
                if score_fn is not None:
                    return callable_scores(
                        score_fn, outputs, keras.tree.flatten(outputs)[0].shape[0]
                    )
                return _scores.class_scores(
                    outputs, classes_of(outputs) if classes is None else classes
                )

            logits = self.score == "logit" and self._output_layer is not None
            with _scores.linear_output(self._output_layer) if logits else nullcontext():
                if split.capture is None:
                    activations, gradients, outputs = self._compute.activations_and_gradients(
                        split.features, split.head, x, score_of, needs_gradients
                    )
                else:
                    activations, gradients, outputs = split.capture.activations_and_gradients(
                        self._compute, x, score_of, needs_gradients
                    )
                outputs = read(outputs)
                item_classes = classes_of(outputs)
                forward = (
                    self._forward(x, activations, outputs, item_classes, score_of, read)
                    if needs_forward
                    else None
                )
                activations = float32_channels_last(activations, split.channels_first)
                gradients = float32_channels_last(gradients, split.channels_first)
                signed = {
                    method.name: self._signed_map(
                        method, activations, gradients, item_classes, forward
                    )
                    for method in methods
                }
            outputs = first(outputs, count)
            if task is not None:
                classes = class_ids
                scores = task.score(outputs, *arrays, are_logits=are_logits)
                predicted = task.prediction(outputs, *arrays, are_logits=are_logits)
                confidence = scores
            else:
                classes = item_classes[:count]
                predicted = _scores.predicted_classes(outputs, are_logits)
                if score_fn is not None:
                    scores = score_of(outputs)
                else:
                    scores = _scores.reported_scores(outputs, classes, activation, are_logits)
                confidence = _scores.reported_scores(
                    outputs, predicted, confidence_activation, are_logits
                )
            activation_peak = ops.max(
                ops.abs(activations), axis=tuple(range(1, len(activations.shape)))
            )
            if self.aug_smooth:  # the strongest of an image's copies
                activation_peak = ops.max(ops.reshape(activation_peak, (-1, count)), axis=0)
            maps = {}
            for name, signed_map in signed.items():
                # ReLU would turn NaN into 0 on some kernels: check before it.
                finite = ops.logical_and(
                    ops.all(ops.isfinite(signed_map)), ops.all(ops.isfinite(scores))
                )
                raw = ops.relu(signed_map)
                upsampled = resize(raw, size)
                if self.aug_smooth:
                    upsampled = smoothing.merge(upsampled, count)
                    raw = resize(upsampled, raw.shape[1:])
                maps[name] = (raw, _normalise(upsampled, activation_peak), finite)
            return (
                maps,
                classes,
                scores,
                predicted,
                confidence,
                _looks_like_probabilities(outputs, self.score == "logit" and activation is None),
            )

        return cam_function


def explain(
    model: keras.Model,
    images: Any,
    *,
    method: MethodSpec | Sequence[MethodSpec] = "gradcam",
    targets: Targets = "predicted",
    preprocess: Preprocess | None = None,
    labels: Any = None,
    normalize: OfflineScale = "image",
    verbose: int | str = "auto",
    options: ExplainOptions | None = None,
    **overrides: Any,
) -> CAMResult | dict[str, CAMResult]:
    """Explains a batch in one call: a `CAMExplainer` of `model`, built once and reused.

    The explainer is kept with the model (and dies with it): calling again
    with the same options reuses its compiled function, so a loop over
    batches traces once. The arguments are those of `CAMExplainer` (`method`,
    `options` and any `ExplainOptions` field as a keyword: `layer=`,
    `score=`, `output=`, `tokens=`, `aug_smooth=`, `eigen_smooth=`,
    `batch_size=`) and of its call (`targets`, `preprocess`, `labels`,
    `normalize`: `"probe"` draws every map of the call on one scale, so a
    weak map looks weak; see `CAMExplainer.__call__`), and `verbose`: as in
    `model.predict`, `0` silent, `1` a
    `keras.utils.Progbar` of the call's forward passes (Score-CAM and
    Ablation-CAM run one per channel and image, and the bar shows the total
    as the call starts), `2` one line at the end; `"auto"` is 1 in a
    terminal or notebook and 0 elsewhere. Defaults to `"auto"`.

    Example:

    >>> model = keras.applications.ResNet50(weights="imagenet")      # doctest: +SKIP
    >>> result = keras_cam.explain(
    ...     model, images, preprocess=keras.applications.resnet50.preprocess_input
    ... )                                                            # doctest: +SKIP
    >>> overlays = keras_cam.overlay(images, result.heatmaps)         # doctest: +SKIP
    >>> same_scale = keras_cam.explain(model, images, normalize="probe")  # doctest: +SKIP
    >>> second = keras_cam.explain(two_headed, images, output="age")  # doctest: +SKIP
    """
    check_offline_normalize(normalize)  # before any work
    options = explain_options(options, **overrides)
    _check_graph_model(model)
    # A callable target compiles its own function: one cache entry per callable.
    own = callable(targets) and not isinstance(targets, TaskTarget)
    key = explainer_cache.options_key(
        method=method, options=options, targets=targets if own else None
    )
    explainer = explainer_cache.cached(model, key, lambda: CAMExplainer(model, method, options))
    images = own_inputs(model, images)
    maps_per_image = top_k(targets) or 1
    count = len(images) * maps_per_image
    with progress_bar(explainer, count, resolve_verbose(verbose)):
        return explainer(
            images, targets=targets, preprocess=preprocess, labels=labels, normalize=normalize
        )
