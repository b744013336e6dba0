"""Turning a `targets=` argument into one class id per image.

Class ids travel into the compiled CAM function as a fixed-shape int32
array, never as Python ints (a new Python value would retrace). A negative
id asks the compiled function for a class by rank: `PREDICTED` (-1) is the
model's argmax, `rank_id(1)` (-2) the runner-up, and so on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PREDICTED = -1


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
