"""Reading the probe: (images, labels) from arrays or a dataset, and the images as drawn."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from keras_cam.core.explainer import own_inputs
from keras_cam.core.layers import model_input_shape
from keras_cam.core.result import Resolved
from keras_cam.render.cell_display import probe_pictures
from keras_cam.render.event import Probe
from keras_cam.render.overlay import to_rgb_uint8
from keras_cam.targets.tasks import TaskTarget, is_multi_label, labels_to_class_ids
from keras_cam.training.options import ViewOptions


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


def image_shape(model: keras.Model) -> tuple[int | None, ...] | None:
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
            f"preprocessed images, pass view=keras_cam.ViewOptions(display=...) to map them "
            f"back for display (e.g. display=lambda x: (x + 1) * 127.5 for [-1, 1]).",
            UserWarning,
            stacklevel=3,
        )


def display_images(images: np.ndarray, display: Callable[[np.ndarray], Any] | None) -> np.ndarray:
    """The probe as drawn: `display(images)` when given, else the images themselves."""
    if display is None:
        _warn_if_preprocessed(images)
        return to_rgb_uint8(images)
    shown = to_rgb_uint8(_numpy(display(images)))
    if shown.shape[:3] != images.shape[:3]:
        raise ValueError(
            f"display= returned images of shape {shown.shape} for a probe of shape "
            f"{images.shape}; it must return one display image of the same size per "
            f"probe image."
        )
    return shown


def drawn_probe(
    images: np.ndarray,
    labels: np.ndarray | None,
    targets: Any,
    resolved: Resolved,
    masks: np.ndarray | None,
    view: ViewOptions,
    class_names: Sequence[str] | None,
) -> Probe:
    """The probe as rendering draws it, its class names checked against the model."""
    task = targets if isinstance(targets, TaskTarget) else None
    class_ids = None  # a task's labels (masks, values) are shown as they are
    if labels is not None and task is None:
        class_ids = labels_to_class_ids(labels, len(images))
    classes = resolved.num_classes
    if task is None and class_names is not None and len(class_names) < classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model scores "
            f"{classes} classes; give one name per class."
        )
    rank = resolved.spatial_rank  # sequence and volume cells scale each sample alone
    shown = display_images(images, view.display) if rank == 2 else images
    return Probe(
        display=probe_pictures(shown, rank, masks),
        images=images,
        spatial_rank=rank,
        labels=class_ids,
        masks=masks,
        class_names=class_names,
        scores_are_probabilities=resolved.head_activation is not None,
        confidence_is_probability=resolved.confidence_activation is not None,
        task=task,
        task_labels=labels if task is not None else None,
        multi_label=is_multi_label(targets),
    )
