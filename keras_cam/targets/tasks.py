"""Turning a `targets=` argument into one class id per image.

Class ids travel into the compiled CAM function as a fixed-shape int32
array, never as Python ints (a new Python value would retrace). A negative
id asks the compiled function for a class by rank: `PREDICTED` (-1) is the
model's argmax, `rank_id(1)` (-2) the runner-up, and so on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from keras import ops

PREDICTED = -1


@dataclass(frozen=True)
class Marks:
    """What a task target marks on one image's pictures, as data (`render` draws it).

    Attributes:
        outline: a boolean mask (any size, scaled nearest to the image) whose
            boundary is drawn on the image, e.g. the predicted segment.
            Defaults to `None`.
        box: `(x0, y0, x1, y1)` in pixels, drawn on the overlay, e.g. the
            explained detection. Defaults to `None`.
    """

    outline: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None


def rank_id(rank: int) -> int:
    """The class id that stands for the class of `rank` (0 = predicted) in the compiled function."""
    return PREDICTED - rank


def top_k(targets: Any) -> int | None:
    """k for `targets="top<k>"` (e.g. `"top3"`), None for any other targets."""
    if not (isinstance(targets, str) and targets.startswith("top")):
        return None
    if not targets[3:].isdigit() or int(targets[3:]) < 1:
        raise ValueError(
            f"targets={targets!r}: write top-k targets as 'top' and a count >= 1, e.g. 'top3'."
        )
    return int(targets[3:])


Targets = str | int | Sequence[int] | np.ndarray | Callable[[Any], Any]
"""What can be explained: `"predicted"`, `"label"`, `"top<k>"` (the k
highest-scoring classes), a class id, one id per image, or a callable
mapping the model's outputs (N, K) to a score per image."""


def labels_to_class_ids(labels: Any, num_images: int) -> np.ndarray:
    """Sparse or one-hot labels -> int class ids (N,)."""
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(
            f"Labels must be class indices or one-hot rows, got {labels.dtype} values such "
            f"as {labels.ravel()[:3]}; map names to indices first."
        )
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    labels = labels.reshape(labels.shape[0], -1)[:, 0] if labels.ndim > 1 else labels
    if labels.shape[0] != num_images:
        raise ValueError(
            f"Got {labels.shape[0]} labels for {num_images} images; pass one label per image."
        )
    if np.issubdtype(labels.dtype, np.floating) and not np.all(labels == np.round(labels)):
        raise ValueError(
            f"Labels must be whole class indices, got fractional values such as "
            f"{labels[labels != np.round(labels)][:3]}; pass sparse or one-hot labels "
            f"(soft labels have no single class to explain)."
        )
    return labels.astype(np.int32)


def resolve_class_ids(
    targets: Targets, num_images: int, num_classes: int, labels: Any = None
) -> np.ndarray:
    """Returns int32 class ids (N,), `PREDICTED` where the model's argmax is wanted.

    Args:
        targets: `"predicted"`, `"label"`, an int, or a sequence of ints.
        num_images: batch size N.
        num_classes: number of classes the model scores (2 for a single-unit
            sigmoid head).
        labels: the images' labels, needed for `"label"`.

    Raises:
        ValueError: `"label"` without labels, wrong length, or a class id out
            of range.
    """
    if isinstance(targets, str):
        if targets == "predicted":
            return np.full(num_images, PREDICTED, dtype=np.int32)
        if targets == "label":
            if labels is None:
                raise ValueError(
                    "targets='label' needs labels: pass the probe as (images, labels), "
                    "or use targets='predicted'."
                )
            ids = labels_to_class_ids(labels, num_images)
        else:
            raise ValueError(
                f"Unknown targets {targets!r}: use 'predicted', 'label', 'top<k>' (e.g. "
                f"'top3'), a class index, a list of class indices, or a callable."
            )
    elif isinstance(targets, (bool, np.bool_)):
        raise ValueError(
            f"targets={targets!r} is a bool, not a class index; use 'predicted', 'label', "
            f"or an integer class index."
        )
    elif isinstance(targets, (int, np.integer)):
        ids = np.full(num_images, int(targets), dtype=np.int32)
    elif np.ndim(targets) == 0:
        raise ValueError(
            f"targets={targets!r} ({type(targets).__name__}) is not a class index: use "
            f"'predicted', 'label', 'top<k>', an integer class index (e.g. "
            f"targets={_whole(targets)}), one integer class index per image, or a callable."
        )
    else:
        ids = np.asarray(targets)
        if ids.ndim != 1 or ids.shape[0] != num_images or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"targets as a sequence must hold one integer class index per image "
                f"({num_images}), got shape {ids.shape} of {ids.dtype}."
            )
        ids = ids.astype(np.int32)
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.size:
        raise ValueError(
            f"Class index {int(bad[0])} is out of range: the model scores {num_classes} "
            f"classes (0..{num_classes - 1})."
        )
    return ids


def _whole(value: Any) -> str:
    """An example integer near `value` for error messages."""
    try:
        return str(max(int(value), 0))
    except (TypeError, ValueError, OverflowError):
        return "0"


def _class_ids_of(values: Any, name: str) -> np.ndarray:
    """Integer class ids >= 0 from ints or integer arrays; floats and bools are refused."""
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name} must be integer class indices, got {values!r} ({array.dtype}); "
            f"a fractional or boolean class would be truncated to another class."
        )
    if array.size and array.min() < 0:
        raise ValueError(
            f"{name} must be class indices >= 0, got {int(array.min())}; negative indices "
            f"are not counted from the end."
        )
    return array.astype(np.int32)


MULTI_LABEL = "positive"
"""`targets=MULTI_LABEL` explains every label a multi-label (sigmoid) model predicts positive."""


def callable_scores(score_fn: Callable[[Any], Any], outputs: Any, count: int) -> Any:
    """`score_fn(outputs)` as float32, checked to hold one score per image (shape (N,)).

    The sum of the scores is differentiated, so an (N, K) or scalar result
    would run and quietly explain the wrong thing; the (static) shape is
    checked while the function is traced, before any map is made.
    """
    scores = score_fn(outputs)
    shape = tuple(getattr(scores, "shape", ()))
    if len(shape) != 1 or shape[0] not in (count, None):
        raise ValueError(
            f"A callable target must return one score per image, shape ({count},), but it "
            f"returned shape {shape} for {count} images; select one output per image, "
            f"e.g. targets=lambda outputs: outputs[:, k]."
        )
    return ops.cast(scores, "float32")


def is_multi_label(targets: Any) -> bool:
    """Whether `targets` asks for every positive label of a multi-label head."""
    return isinstance(targets, str) and targets == MULTI_LABEL


def _per_image(values: Any, num_images: int, trailing: int, name: str, dtype: str) -> np.ndarray:
    """One value for all images, or one per image, as an (N, ...) array with `trailing` axes."""
    array = np.asarray(ops.convert_to_numpy(values), dtype=dtype)
    if array.ndim == trailing:
        array = np.broadcast_to(array, (num_images, *array.shape))
    if array.ndim != trailing + 1 or array.shape[0] != num_images:
        raise ValueError(
            f"{name} must be one value of {trailing} axes for every image or one per image "
            f"({num_images}), got shape {array.shape}."
        )
    return np.ascontiguousarray(array)


def _nearest(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) masks resampled to `size` by nearest neighbour."""
    rows = (np.arange(size[0]) * masks.shape[1] // size[0]).astype(int)
    cols = (np.arange(size[1]) * masks.shape[2] // size[1]).astype(int)
    return masks[:, rows][:, :, cols]


class TaskTarget:
    """What to explain in a model that is not a single-label classifier.

    A task target maps the model's output to one score per image with
    `keras.ops` only, so the same object runs on every backend inside the
    compiled CAM function. Per-image values (a class id, a region, a box, a
    reference embedding) travel into that function as fixed-shape tensors
    (`arrays`), so explaining a new value never retraces; `static_key` holds
    the settings that do shape the trace.

    Subclasses set `task` and implement `arrays`, `score` and `prediction`.
    """

    task: str = "task"
    reads_all_outputs: bool = False
    """Whether the score reads the model's whole output structure (a detector's
    boxes and class logits) rather than one output."""

    def arrays(self, num_images: int, output_shape: Any) -> tuple[np.ndarray, ...]:
        """Per-image inputs of `score`, each with the images on axis 0."""
        return ()

    def score(self, outputs: Any, *arrays: Any, are_logits: bool = True) -> Any:
        """The differentiated score of each image, (N,), from float32 `outputs`."""
        raise NotImplementedError

    def prediction(self, outputs: Any, *arrays: Any, are_logits: bool = True) -> Any:
        """What the model predicts for the task, per image (for captions)."""
        return self.score(outputs, *arrays, are_logits=are_logits)

    def class_ids(self, num_images: int) -> np.ndarray:
        """The class (or output index) reported in `CAMResult.classes`."""
        return np.full(num_images, -1, dtype=np.int32)

    def static_key(self) -> tuple[Any, ...]:
        """The settings baked into the compiled function (not the per-image values)."""
        return (type(self),)

    def region_masks(self, num_images: int, size: tuple[int, int]) -> np.ndarray | None:
        """(N, H, W) masks of the explained region at display `size` (localisation metrics)."""
        return None

    @property
    def has_region(self) -> bool:
        """Whether `region_masks` gives masks (for the localisation metrics)."""
        return False

    def caption(self, prediction: Any, score: float, label: Any, name: str) -> str:
        """A short caption of one image: its prediction for this task (and label, if any)."""
        return f"{self!r} {score:.2f}"

    def marks(self, index: int, prediction: Any) -> Marks:
        """What the callback's grid marks on image `index` given its `prediction`: nothing."""
        return Marks()


class SegmentationTarget(TaskTarget):
    """Semantic segmentation: the class's logits summed over a region.

        S = Σ_{(y, x) ∈ R} z_c(y, x)

    where z (N, h, w, K) is the model's output (logits with `score="logit"`)
    and R is `region` (one mask per image, or one for all), or, without a
    region, the pixels the model predicts as c (argmax over K; for a
    single-unit head, the pixels where the unit fires). The mask itself is
    not differentiated. This is the usual semantic-segmentation Grad-CAM
    target (pytorch-grad-cam's `SemanticSegmentationTarget`).
    """

    task = "segmentation"

    def __init__(self, class_id: int, region: Any = None) -> None:
        if not isinstance(class_id, (int, np.integer)) or class_id < 0:
            raise ValueError(f"segmentation: class_id must be an integer >= 0, got {class_id!r}.")
        self.class_id = int(class_id)
        self.region = None if region is None else np.asarray(ops.convert_to_numpy(region))

    def __repr__(self) -> str:
        region = "" if self.region is None else f", region=<{self.region.shape} mask>"
        return f"segmentation({self.class_id}{region})"

    def static_key(self) -> tuple[Any, ...]:
        return (type(self), self.region is None)

    def class_ids(self, num_images: int) -> np.ndarray:
        return np.full(num_images, self.class_id, dtype=np.int32)

    def _regions(self, num_images: int) -> np.ndarray:
        region = self.region
        # (H, W, 1) is one mask with a channel axis, never N masks of width 1: read by
        # its shape alone, so the batch size cannot change what it means.
        if region.ndim in (3, 4) and region.shape[-1] == 1:
            region = region[..., 0]
        elif region.ndim == 4:
            region = None
        if region is None or region.ndim not in (2, 3):
            raise ValueError(
                f"segmentation region must be one mask (H, W) or (H, W, 1) for every image, "
                f"or one per image (N, H, W) or (N, H, W, 1), got shape {self.region.shape}."
            )
        if region.ndim == 3 and region.shape[0] != num_images:
            raise ValueError(
                f"segmentation region of shape {self.region.shape} reads as one mask per "
                f"image (N, H, W), but there are {num_images} images; pass {num_images} "
                f"masks, or one (H, W) mask for all."
            )
        return _per_image(region, num_images, 2, "segmentation region", "float32") > 0

    def arrays(self, num_images: int, output_shape: Any) -> tuple[np.ndarray, ...]:
        if len(output_shape) != 4:
            raise ValueError(
                f"segmentation() reads a (N, h, w, K) output, but the explained output has "
                f"shape {tuple(output_shape)}; pick a segmentation output with output=."
            )
        classes = max(int(output_shape[-1]), 2)
        if self.class_id >= classes:
            raise ValueError(
                f"segmentation({self.class_id}): the output scores {classes} classes "
                f"(0..{classes - 1})."
            )
        class_ids = self.class_ids(num_images)
        if self.region is None:
            return (class_ids,)
        region = _nearest(self._regions(num_images), tuple(output_shape[1:3]))
        return class_ids, region.astype("float32")

    def region_masks(self, num_images: int, size: tuple[int, int]) -> np.ndarray | None:
        if self.region is None:
            return None
        return _nearest(self._regions(num_images), size)

    @property
    def has_region(self) -> bool:
        return self.region is not None

    def marks(self, index: int, prediction: Any) -> Marks:
        """The outline of the pixels predicted as the class, on the image."""
        return Marks(outline=np.asarray(prediction) == self.class_id)

    def _class_mask(self, outputs: Any, class_ids: Any, are_logits: bool) -> Any:
        if outputs.shape[-1] == 1:
            fires = outputs[..., 0] > (0.0 if are_logits else 0.5)
            return ops.where(class_ids[:, None, None] == 1, fires, ops.logical_not(fires))
        return ops.argmax(outputs, axis=-1) == class_ids[:, None, None]

    def score(self, outputs: Any, class_ids: Any, region: Any = None, are_logits: bool = True):
        class_ids = ops.cast(class_ids, "int32")
        if outputs.shape[-1] == 1:
            logits = ops.where(class_ids[:, None, None] == 1, outputs[..., 0], -outputs[..., 0])
        else:
            index = ops.broadcast_to(class_ids[:, None, None, None], (*outputs.shape[:3], 1))
            logits = ops.take_along_axis(outputs, index, axis=-1)[..., 0]
        if region is None:
            region = ops.cast(self._class_mask(outputs, class_ids, are_logits), "float32")
        return ops.sum(logits * ops.stop_gradient(region), axis=(1, 2))

    def prediction(self, outputs: Any, *arrays: Any, are_logits: bool = True) -> Any:
        """The predicted label map (N, h, w)."""
        if outputs.shape[-1] == 1:
            return ops.cast(outputs[..., 0] > (0.0 if are_logits else 0.5), "int32")
        return ops.cast(ops.argmax(outputs, axis=-1), "int32")

    def caption(self, prediction: Any, score: float, label: Any, name: str) -> str:
        parts = [f"{name} · {int(np.mean(prediction == self.class_id) * 100)}% of pixels"]
        if label is not None:
            parts.append(f"mIoU {mean_iou(prediction, label):.2f}")
        return " · ".join(parts)


def mean_iou(prediction: np.ndarray, label: np.ndarray) -> float:
    """Mean IoU over the classes present in the label or the prediction of one image.

    The prediction is resampled (nearest) to the label's size; a label with a
    trailing channel axis of 1 is squeezed, a one-hot label is argmaxed.
    """
    label = np.asarray(label)
    if label.ndim == 3:
        label = label[..., 0] if label.shape[-1] == 1 else label.argmax(-1)
    label = np.rint(label).astype(int)
    prediction = _nearest(np.asarray(prediction)[None], label.shape)[0]
    ious = []
    for c in np.union1d(np.unique(label), np.unique(prediction)):
        union = np.sum((label == c) | (prediction == c))
        ious.append(np.sum((label == c) & (prediction == c)) / union)
    return float(np.mean(ious))


class OutputTarget(TaskTarget):
    """Regression: one output unit, or its negation.

        S = sign · y_index

    `sign=+1` shows what increases the output (an age, a count, a quality
    score), `sign=-1` what decreases it. The output is flattened per image,
    so `index` counts over all its units.
    """

    task = "regression"

    def __init__(self, index: int = 0, sign: int = 1) -> None:
        if sign not in (1, -1):
            raise ValueError(f"output: sign must be +1 or -1, got {sign!r}.")
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"output: index must be an integer >= 0, got {index!r}.")
        self.index, self.sign = int(index), int(sign)

    def __repr__(self) -> str:
        return f"output({self.index}{', sign=-1' if self.sign < 0 else ''})"

    def class_ids(self, num_images: int) -> np.ndarray:
        return np.full(num_images, self.index, dtype=np.int32)

    def arrays(self, num_images: int, output_shape: Any) -> tuple[np.ndarray, ...]:
        units = int(np.prod(output_shape[1:]))
        if self.index >= units:
            raise ValueError(f"output({self.index}): the output has {units} units per image.")
        return self.class_ids(num_images), np.full(num_images, self.sign, dtype="float32")

    def prediction(self, outputs: Any, index: Any, sign: Any, are_logits: bool = True) -> Any:
        """The output value (N,)."""
        flat = ops.reshape(outputs, (outputs.shape[0], -1))
        return ops.take_along_axis(flat, ops.cast(index, "int32")[:, None], axis=1)[:, 0]

    def score(self, outputs: Any, index: Any, sign: Any, are_logits: bool = True) -> Any:
        return sign * self.prediction(outputs, index, sign)

    def caption(self, prediction: Any, score: float, label: Any, name: str) -> str:
        text = f"pred {float(prediction):.3g}"
        if label is not None:
            text += f" · true {float(np.ravel(label)[self.index]):.3g}"
        return text


class SimilarityTarget(TaskTarget):
    """Embeddings: cosine similarity with a reference embedding.

        S = <e, r> / (|e| |r|)

    where e is the model's output (flattened per image) and r the reference,
    one per image or one for all. Shows what makes the image look like the
    reference (metric learning, retrieval, face verification).
    """

    task = "similarity"

    def __init__(self, reference: Any) -> None:
        self.reference = np.asarray(ops.convert_to_numpy(reference), dtype="float32")

    def __repr__(self) -> str:
        return f"similarity(<{self.reference.shape} reference>)"

    def arrays(self, num_images: int, output_shape: Any) -> tuple[np.ndarray, ...]:
        units = int(np.prod(output_shape[1:]))
        reference = _per_image(self.reference, num_images, 1, "similarity reference", "float32")
        if reference.shape[1] != units:
            raise ValueError(
                f"similarity: the reference has {reference.shape[1]} values but the "
                f"embedding has {units}."
            )
        return (reference,)

    def score(self, outputs: Any, reference: Any, are_logits: bool = True) -> Any:
        flat = ops.reshape(outputs, (outputs.shape[0], -1))
        dot = ops.sum(flat * reference, axis=1)
        norms = ops.sqrt(ops.sum(flat * flat, axis=1) * ops.sum(reference * reference, axis=1))
        return dot / ops.maximum(norms, 1e-12)

    def caption(self, prediction: Any, score: float, label: Any, name: str) -> str:
        return f"cos {score:.2f}"


def decode_center_deltas(anchors: Any, deltas: Any, variance: Any) -> Any:
    """Boxes (…, 4) xyxy from anchors (A, 4) xyxy and center_xywh deltas (…, A, 4).

        x = x_a + d_x v_0 w_a,  y = y_a + d_y v_1 h_a,  w = w_a e^{d_w v_2},  h = h_a e^{d_h v_3}

    The encoding of RetinaNet and of KerasHub's `RetinaNetObjectDetector`.
    """
    size = anchors[:, 2:] - anchors[:, :2]
    center = anchors[:, :2] + size / 2
    deltas = deltas * variance
    center = center + deltas[..., :2] * size
    size = size * ops.exp(deltas[..., 2:])
    return ops.concatenate([center - size / 2, center + size / 2], axis=-1)


def box_iou(boxes: Any, box: Any) -> Any:
    """IoU of boxes (N, A, 4) with one box per image (N, 4), xyxy."""
    low = ops.maximum(boxes[..., :2], box[:, None, :2])
    high = ops.minimum(boxes[..., 2:], box[:, None, 2:])
    overlap = ops.prod(ops.maximum(high - low, 0.0), axis=-1)
    area = ops.prod(boxes[..., 2:] - boxes[..., :2], axis=-1)
    area_box = ops.prod(box[:, 2:] - box[:, :2], axis=-1)[:, None]
    return overlap / ops.maximum(area + area_box - overlap, 1e-12)


class DetectionTarget(TaskTarget):
    """Object detection: the class logits of the anchors that found the box.

        S = Σ_a [IoU(b̂_a, B) ≥ iou] · z_{a, c}

    for an anchor-based detector's raw outputs: `outputs[boxes_key]`
    (N, A, 4) box deltas in RetinaNet's center_xywh encoding, decoded
    against `anchors` (A, 4) xyxy into boxes b̂_a, and `outputs[scores_key]`
    (N, A, K) class logits z. B is the explained box (xyxy, in the anchors'
    pixel frame) and c its class, one for all images or one per image. The
    selection of anchors is not differentiated; only the selected logits
    are. An image where no decoded box overlaps B enough scores 0 (a zero
    map). KerasHub 0.32's `RetinaNetObjectDetector` returns exactly such a
    dict (`"bbox_regression"`, `"cls_logits"`); its anchors are
    `ops.concatenate(list(model.anchor_generator(images).values()))`.
    """

    task = "detection"
    reads_all_outputs = True

    def __init__(
        self,
        boxes: Any,
        class_ids: Any,
        anchors: Any,
        iou: float = 0.5,
        box_variance: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        boxes_key: str | int = "bbox_regression",
        scores_key: str | int = "cls_logits",
    ) -> None:
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"detection: iou must lie in (0, 1], got {iou}.")
        self.boxes = np.asarray(ops.convert_to_numpy(boxes), dtype="float32")
        if self.boxes.ndim not in (1, 2) or self.boxes.shape[-1] != 4:
            raise ValueError(
                f"detection: boxes must be one box (4,) or one per image (N, 4), each "
                f"[x0, y0, x1, y1] in the anchors' pixel frame, got shape {self.boxes.shape}."
            )
        if not np.all(np.isfinite(self.boxes)) or np.any(self.boxes[..., 2:] < self.boxes[..., :2]):
            raise ValueError(
                f"detection: boxes must be finite [x0, y0, x1, y1] with x0 <= x1 and "
                f"y0 <= y1, got {self.boxes.tolist()}."
            )
        self.classes = _class_ids_of(ops.convert_to_numpy(class_ids), "detection class_ids")
        if self.classes.ndim > 1:
            raise ValueError(
                f"detection: class_ids must be one class or one per image (N,), got shape "
                f"{self.classes.shape}."
            )
        self.anchors = np.asarray(ops.convert_to_numpy(anchors), dtype="float32")
        if self.anchors.ndim != 2 or self.anchors.shape[1] != 4:
            raise ValueError(f"detection: anchors must be (A, 4) xyxy, got {self.anchors.shape}.")
        self.iou = float(iou)
        self.box_variance = tuple(float(v) for v in box_variance)
        self.keys = (boxes_key, scores_key)

    def __repr__(self) -> str:
        return f"detection(<{self.boxes.shape} boxes>, iou={self.iou})"

    def static_key(self) -> tuple[Any, ...]:
        # The anchors are constants of the trace, fixed per model: keyed by content.
        anchors = hashlib.sha1(self.anchors.tobytes()).hexdigest()
        return (type(self), anchors, self.anchors.shape, self.iou, self.box_variance, self.keys)

    def class_ids(self, num_images: int) -> np.ndarray:
        return _per_image(self.classes, num_images, 0, "detection class_ids", "int32")

    def _boxes(self, num_images: int) -> np.ndarray:
        return _per_image(self.boxes, num_images, 1, "detection boxes", "float32")

    def arrays(self, num_images: int, output_shape: Any) -> tuple[np.ndarray, ...]:
        try:
            deltas, logits = (tuple(output_shape[key]) for key in self.keys)
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(
                f"detection reads outputs {self.keys} of the model, which has outputs "
                f"{output_shape}; set boxes_key= and scores_key=."
            ) from error
        anchors = self.anchors.shape[0]
        if deltas[1:] != (anchors, 4) or len(logits) != 3 or logits[1] != anchors:
            raise ValueError(
                f"detection: {anchors} anchors were given but the outputs have shapes "
                f"{deltas} and {logits}; pass the model's (A, 4) anchors in the order of "
                f"its anchor axis."
            )
        classes = self.class_ids(num_images)
        if logits[2] is not None and classes.size and classes.max() >= logits[2]:
            raise ValueError(
                f"detection: class_ids {int(classes.max())} is out of range: output "
                f"{self.keys[1]!r} scores {logits[2]} classes (0..{logits[2] - 1})."
            )
        return self._boxes(num_images), classes

    def _matches(self, outputs: Any, boxes: Any) -> tuple[Any, Any]:
        decoded = decode_center_deltas(
            ops.convert_to_tensor(self.anchors), outputs[self.keys[0]], ops.array(self.box_variance)
        )
        return decoded, ops.stop_gradient(ops.cast(box_iou(decoded, boxes) >= self.iou, "float32"))

    def _logits(self, outputs: Any, class_ids: Any) -> Any:
        logits = outputs[self.keys[1]]
        index = ops.broadcast_to(
            ops.cast(class_ids, "int32")[:, None, None], (*logits.shape[:2], 1)
        )
        return ops.take_along_axis(logits, index, axis=-1)[..., 0]

    def score(self, outputs: Any, boxes: Any, class_ids: Any, are_logits: bool = True) -> Any:
        _, matched = self._matches(outputs, boxes)
        return ops.sum(matched * self._logits(outputs, class_ids), axis=1)

    def prediction(self, outputs: Any, boxes: Any, class_ids: Any, are_logits: bool = True):
        """(N, 5): the best matching decoded box (xyxy) and its class probability.

        Where no anchor matches, the probability is 0 (and the box meaningless).
        """
        decoded, matched = self._matches(outputs, boxes)
        logits = self._logits(outputs, class_ids)
        best = ops.argmax(ops.where(matched > 0, logits, -1e30), axis=1)
        box = ops.take_along_axis(
            decoded, ops.broadcast_to(best[:, None, None], (best.shape[0], 1, 4)), axis=1
        )[:, 0]
        logit = ops.take_along_axis(logits, best[:, None], axis=1)
        probability = ops.sigmoid(logit) if are_logits else logit
        probability = ops.where(ops.max(matched, axis=1, keepdims=True) > 0, probability, 0.0)
        return ops.concatenate([box, probability], axis=1)

    def region_masks(self, num_images: int, size: tuple[int, int]) -> np.ndarray | None:
        boxes = self._boxes(num_images)
        rows, cols = np.arange(size[0])[:, None] + 0.5, np.arange(size[1])[None, :] + 0.5
        return np.stack(
            [(cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1) for x0, y0, x1, y1 in boxes]
        )

    has_region = True

    def marks(self, index: int, prediction: Any) -> Marks:
        """The explained box, on the overlay."""
        box = self.boxes if self.boxes.ndim == 1 else self.boxes[index]
        return Marks(box=tuple(float(v) for v in box))

    def caption(self, prediction: Any, score: float, label: Any, name: str) -> str:
        x0, y0, x1, y1, probability = (float(v) for v in prediction)
        return f"{name} box ({x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f}) p={probability:.2f}"


def segmentation(class_id: int, region: Any = None) -> SegmentationTarget:
    """Explains a segmentation class: its logits summed over a region (see `SegmentationTarget`).

    Args:
        class_id: the class.
        region: one mask for all images, (H, W) or (H, W, 1), or one per
            image, (N, H, W) or (N, H, W, 1) (any size: resampled to the output's);
            `None` sums over the pixels predicted as `class_id`. Defaults to `None`.

    Example:

    >>> result = keras_cam.explain(segmenter, images, targets=segmentation(1))  # doctest: +SKIP
    """
    return SegmentationTarget(class_id, region)


def output(index: int = 0, sign: int = 1) -> OutputTarget:
    """Explains a regression output (see `OutputTarget`).

    Args:
        index: the output unit. Defaults to `0`.
        sign: `+1` (what increases it) or `-1` (what decreases it). Defaults to `1`.

    Example:

    >>> result = keras_cam.explain(age_model, faces, targets=output())  # doctest: +SKIP
    """
    return OutputTarget(index, sign)


def similarity(reference: Any) -> SimilarityTarget:
    """Explains an embedding's cosine similarity to `reference` (see `SimilarityTarget`).

    Args:
        reference: (D,) one embedding for all images, or (N, D) one per image.

    Example:

    >>> anchor = embedder.predict(reference_image[None])[0]               # doctest: +SKIP
    >>> result = keras_cam.explain(embedder, images, targets=similarity(anchor))  # doctest: +SKIP
    """
    return SimilarityTarget(reference)


def detection(
    boxes: Any,
    class_ids: Any,
    anchors: Any,
    iou: float = 0.5,
    box_variance: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    boxes_key: str | int = "bbox_regression",
    scores_key: str | int = "cls_logits",
) -> DetectionTarget:
    """Explains a detection: the class logits of the anchors that found the box.

    See `DetectionTarget` for the formula.

    Args:
        boxes: the explained box, (4,) xyxy for all images or (N, 4) one per image.
        class_ids: its class, an integer in 0..K-1 (K: the classes of
            `scores_key`, checked before tracing) or one per image.
        anchors: (A, 4) xyxy, in the order of the model's anchor axis.
        iou: the least IoU of a decoded anchor box with `boxes`. Defaults to `0.5`.
        box_variance: the deltas' scale (KerasHub's label encoder's
            `box_variance`). Defaults to `(1.0, 1.0, 1.0, 1.0)`.
        boxes_key: the output holding the (N, A, 4) deltas. Defaults to `"bbox_regression"`.
        scores_key: the output holding the (N, A, K) class logits. Defaults to `"cls_logits"`.

    Example:

    >>> anchors = ops.concatenate(list(detector.anchor_generator(images).values()))
    ... # doctest: +SKIP
    >>> target = detection([8, 8, 40, 40], class_ids=2, anchors=anchors)          # doctest: +SKIP
    >>> result = keras_cam.explain(detector, images, targets=target, layer="...")   # doctest: +SKIP
    """
    return DetectionTarget(boxes, class_ids, anchors, iou, box_variance, boxes_key, scores_key)
