"""What the explainer exchanges: a batch made ready (`PreparedBatch`) and its maps (`CAMResult`).

Plain data with no model in it, so diagnostics, rendering and sinks read
results without importing the explainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from keras import ops

from keras_cam.targets.tasks import rank_id

if TYPE_CHECKING:
    from keras_cam.targets.tasks import TaskTarget


@dataclass(frozen=True)
class CAMResult:
    """The maps of one batch.

    Attributes:
        heatmaps: float32 (N, H, W) in [0, 1], resized to the images' size
            (a 1-D model's: (N, T) at the sequences' length; a 3-D model's:
            (N, D, H, W) at the volumes' size), each scaled from its own
            minimum to its maximum. A map with nothing to show is all zero:
            nothing positive, constant up to rounding, or negligible (its
            peak below a millionth of the layer's largest activation, e.g.
            under a saturated softmax).
        raw: float32 (N, h, w) at the target layer's resolution, after ReLU,
            not normalised ((N, t) or (N, d, h, w) for 1-D or 3-D models).
        classes: int (N,) the explained class per image (the predicted class
            when `targets` is a callable; a task target's class or output
            index, -1 where it has none).
        scores: float (N,) the model's output for that class: a probability
            when the head ends in softmax/sigmoid, else the raw output. With a
            callable or task target, the differentiated score.
        layer: `/`-path of the explained layer, e.g. `"resnet50/conv5_block3_out"`.
        method: name of the CAM method.
        predicted: int (N,) the model's predicted class per image. With a
            task target, the task's prediction (see `TaskTarget.prediction`:
            a label map, a value, a box); with `targets="positive"`, bool
            (N, K), the labels predicted positive.
        confidence: float (N,) the probability of the predicted class: the
            head's own softmax/sigmoid, or softmax over a linear head's logits
            (sigmoid for a single unit); the raw output only when the output
            layer is neither (e.g. a custom layer); with a task target, the
            score.
    """

    heatmaps: np.ndarray
    raw: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    layer: str
    method: str
    predicted: np.ndarray
    confidence: np.ndarray

    def take(self, start: int, stop: int) -> CAMResult:
        """The part of the result that belongs to images `start:stop` of the batch."""
        return replace(
            self,
            heatmaps=self.heatmaps[start:stop],
            raw=self.raw[start:stop],
            classes=self.classes[start:stop],
            scores=self.scores[start:stop],
            predicted=self.predicted[start:stop],
            confidence=self.confidence[start:stop],
        )


@dataclass(frozen=True)
class PreparedBatch:
    """A batch made ready by `CAMExplainer.prepare`, for `CAMExplainer.run`.

    Attributes:
        inputs: the model input, a tensor (N, ...).
        class_ids: int32 (N,) the class each map explains; negative ids stand
            for a class by rank (see `targets.tasks.rank_id`).
        score_fn: the callable or task target that scores the outputs, or
            `None` for class targets.
        size: the spatial size the maps are resized to (the display images').
        arrays: a task target's per-image tensors (masks, boxes, values).
        ranks: k for a `"top<k>"` batch of k rank-major copies, else 0.
        positive_labels: K for a `"positive"` batch of K label-major copies
            (copy k explains label k), else 0.
    """

    inputs: Any
    class_ids: Any
    score_fn: Callable[[Any], Any] | TaskTarget | None
    size: tuple[int, ...]
    arrays: tuple[Any, ...] = ()
    ranks: int = 0
    positive_labels: int = 0


@dataclass(frozen=True)
class Resolved:
    """What a `CAMExplainer` found in its model (`CAMExplainer.resolved`).

    Attributes:
        path: `/`-path of the explained layer, e.g. `"resnet50/conv5_block3_out"`.
        layer: the explained layer itself.
        head_layers: the layers after it, in execution order, nested models
            flattened.
        spatial_rank: spatial axes of the maps: 1 (sequences), 2 (images,
            tokens), 3 (volumes).
        channels_first: whether the layer's activations are (N, C, ...).
        head_activation: `"softmax"` or `"sigmoid"` where the explained
            output ends in one (reported scores are then probabilities), else
            `None` (logits).
        confidence_activation: what turns the output into the reported
            confidence (the head's own, or softmax/sigmoid over a linear
            head), `None` where neither applies.
        output: the key (dict key or position) of the explained output;
            `None` where the target reads the whole structure or there are
            several outputs and no `output=`.
        num_classes: classes the explained output scores (a single sigmoid
            unit scores 2); `None` where `output` is `None`.
        passes_per_image: inputs the compiled function runs per image (6 with
            `aug_smooth`, else 1).
    """

    path: str
    layer: Any
    head_layers: tuple[Any, ...]
    spatial_rank: int
    channels_first: bool
    head_activation: str | None
    confidence_activation: str | None
    output: Any
    num_classes: int | None
    passes_per_image: int


def with_ranks(batch: PreparedBatch, ranks: range, keep: bool = True) -> PreparedBatch:
    """The batch followed (or, with `keep=False`, replaced) by one copy per class rank.

    Copy `r` explains each image's class of rank `r` (0 = predicted), so the
    whole top-k view runs through the same compiled function as the batch.
    """
    count = int(batch.inputs.shape[0])
    inputs = [batch.inputs] if keep else []
    ids = [batch.class_ids] if keep else []
    for rank in ranks:
        inputs.append(batch.inputs)
        ids.append(ops.convert_to_tensor(np.full(count, rank_id(rank), dtype=np.int32)))
    return replace(batch, inputs=ops.concatenate(inputs), class_ids=ops.concatenate(ids))
