"""Localisation, drift, focus and faithfulness metrics: numpy arrays in, numbers out.

Every metric returns the mean over the batch, or one value per image with
`per_image=True`. Maps are read as non-negative evidence: NaN counts as 0
and negative values are clipped to 0. The faithfulness metrics
(`deletion_auc`, `insertion_auc`, `average_drop`, `increase_in_confidence`,
the ROAD scores)
and the shortcut check `background_sensitivity` run the model on perturbed
copies of the images, batched through one
compiled forward function per model, the last batch padded so it never
retraces.

Maps are (N, H, W) for image models, and (N, T) for sequence models or
(N, D, H, W) for volume models: every metric reads the positions of all
spatial axes alike (a "pixel" below is a time step or a voxel there), and
the deletion/insertion curves remove time steps or voxels. Masks and input
arrays follow the maps' shape.

Every mask input of the library (these metrics, the callback's
`probe_masks`, `CAMGuidedModel`'s masks) follows one rule, `binary_masks`:
booleans as they are; integers 0/1 or 0/255 (a PNG mask), non-zero is the
object; floats in [0, 1], thresholded at 0.5. Any other value is refused.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_cam.compute import backend_module
from keras_cam.diagnostics.imputation import noisy_linear_impute

Preprocess = Callable[[np.ndarray], Any]

_FORWARD: weakref.WeakKeyDictionary[keras.Model, Callable[[Any], Any]] = weakref.WeakKeyDictionary()


def _maps(heatmaps: Any, name: str = "heatmaps") -> np.ndarray:
    maps = np.asarray(heatmaps, dtype=np.float64)
    if maps.ndim not in (2, 3, 4) or len(maps) == 0:
        raise ValueError(
            f"{name} must be a non-empty (N, H, W) array ((N, T) for sequences, "
            f"(N, D, H, W) for volumes), got shape {maps.shape}."
        )
    return np.clip(np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)


def _spatial(maps: np.ndarray) -> tuple[int, ...]:
    """The spatial axes of maps (N, *spatial)."""
    return tuple(range(1, maps.ndim))


def binary_masks(masks: Any, name: str = "masks") -> np.ndarray:
    """The object masks as booleans, by the one rule every mask input follows.

    - booleans: as they are;
    - integers: 0/1 or 0/255 (a PNG mask), non-zero is the object;
    - floats: in [0, 1], the object where the value is at least 0.5.

    Floats are thresholded rather than kept soft so that one mask means one
    object everywhere: the pointing game needs a set of pixels, the callback's
    `energy_in_mask` is the share of the map on that set, and the guidance term
    shares its units. A binary mask resized with bilinear interpolation (values
    between 0 and 1 at the edges) keeps its extent; a probability map becomes
    the region where the object is more likely than not. Reading every non-zero
    value as object instead (`astype(bool)`) turns such masks into the whole
    image.

    Args:
        masks: array-like of any shape.
        name: what the masks are called in the error message.
            Defaults to `"masks"`.

    Returns:
        A boolean array of the same shape.

    Raises:
        ValueError: a value outside the rule (integers other than 0/1 or
            0/255, floats outside [0, 1] or NaN, any other dtype).

    Example:

    >>> binary_masks(np.array([[0.2, 0.5, 0.9]])).tolist()
    [[False, True, True]]
    >>> binary_masks(np.array([0, 255], dtype="uint8")).tolist()
    [False, True]
    """
    values = np.asarray(keras.ops.convert_to_numpy(masks) if keras.ops.is_tensor(masks) else masks)
    rule = "booleans, integers 0/1 or 0/255, or floats in [0, 1] (thresholded at 0.5)"
    if values.dtype == bool:
        return values
    if np.issubdtype(values.dtype, np.integer):
        present = set(np.unique(values).tolist())
        if present <= {0, 1} or present <= {0, 255}:
            return values > 0
        shown = sorted(present - {0, 1, 255})[:5] or sorted(present)
        raise ValueError(
            f"{name} must be {rule}; got integers with the values {shown}. Give a label "
            f"map as `labels == object_id`, or scale the masks to 0/1."
        )
    if np.issubdtype(values.dtype, np.floating):
        if values.size and not (
            np.all(np.isfinite(values)) and 0 <= values.min() <= values.max() <= 1
        ):
            low, high = np.nanmin(values), np.nanmax(values)
            fix = "; divide 0/255 masks by 255" if high > 1 else ""
            raise ValueError(
                f"{name} must be {rule}; got floats from {low:g} to {high:g}"
                f"{' with NaN or inf' if not np.all(np.isfinite(values)) else ''}{fix}."
            )
        return values >= 0.5
    raise ValueError(f"{name} must be {rule}; got dtype {values.dtype}.")


def _maps_and_masks(heatmaps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    maps, masks = _maps(heatmaps), binary_masks(masks)
    if maps.shape != masks.shape:
        raise ValueError(
            f"heatmaps and masks must both be (N, H, W) (or (N, T), (N, D, H, W)) of the "
            f"same shape, got "
            f"{maps.shape} and {masks.shape}. Resize the masks to the heatmaps' size "
            f"(the explainer returns heatmaps at the images' size)."
        )
    return maps, masks


def _reduce(values: np.ndarray, per_image: bool) -> float | np.ndarray:
    return values.astype(np.float64) if per_image else float(values.mean())


def pointing_game(
    heatmaps: np.ndarray, masks: np.ndarray, per_image: bool = False
) -> float | np.ndarray:
    """Share of images whose heatmap maximum falls inside the object mask.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
    2016 (without their 15-pixel tolerance). A map whose maximum is shared by
    several pixels counts as a hit when the first of them, in row-major order,
    lies in the mask; an all-zero map therefore points at pixel (0, 0). An
    empty mask is always a miss.

    Args:
        heatmaps: (N, H, W) maps.
        masks: (N, H, W) object masks of the same size (`binary_masks` rule).
        per_image: return the (N,) hits instead of their mean.

    Returns:
        The hit rate in [0, 1].

    Example:

    >>> maps = np.zeros((1, 2, 2)); maps[0, 1, 1] = 1.0
    >>> pointing_game(maps, np.eye(2, dtype=bool)[None])
    1.0
    """
    raw = np.asarray(heatmaps, dtype=np.float64)
    maps, masks = _maps_and_masks(heatmaps, masks)
    flat = np.where(np.isnan(raw), -np.inf, raw).reshape(len(maps), -1)
    peaks = flat.argmax(axis=1)
    return _reduce(masks.reshape(len(masks), -1)[np.arange(len(masks)), peaks], per_image)


def energy_in_mask(
    heatmaps: np.ndarray, masks: np.ndarray, per_image: bool = False
) -> float | np.ndarray:
    """Share of the map's mass that lies inside the object mask.

    The energy-based pointing game of Wang et al., "Score-CAM: Score-Weighted
    Visual Explanations for Convolutional Neural Networks", CVPR Workshops
    2020: `Σ_{mask} L / Σ L`. An all-zero map has no energy anywhere and
    scores 0, as does an empty mask.

    Args:
        heatmaps: (N, H, W) non-negative maps.
        masks: (N, H, W) object masks of the same size (`binary_masks` rule).
        per_image: return the (N,) shares instead of their mean.

    Returns:
        The share in [0, 1].

    Example:

    >>> maps = np.array([[[3.0, 1.0], [0.0, 0.0]]])
    >>> energy_in_mask(maps, np.array([[[True, False], [False, False]]]))
    0.75
    """
    maps, masks = _maps_and_masks(heatmaps, masks)
    total = maps.sum(axis=_spatial(maps))
    inside = (maps * masks).sum(axis=_spatial(maps))
    return _reduce(np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0), per_image)


def drift(previous: np.ndarray, current: np.ndarray, per_image: bool = False) -> float | np.ndarray:
    """How much each image's map changed: 1 − Pearson correlation of the two maps.

    0 means the same pattern (up to scale), 1 uncorrelated, 2 inverted. When
    a map is constant (e.g. all zero) the correlation is undefined: two
    constant maps count as unchanged (0), a constant and a varying map as
    uncorrelated (1).

    Args:
        previous: (N, H, W) maps of an earlier event.
        current: (N, H, W) maps of the same images now.
        per_image: return the (N,) drifts instead of their mean.

    Returns:
        The drift in [0, 2].

    Example:

    >>> before = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    >>> drift(before, 2 * before), round(drift(before, 3 - before), 6)  # same, inverted
    (0.0, 2.0)
    """
    before, after = _maps(previous, "previous"), _maps(current, "current")
    if before.shape != after.shape:
        raise ValueError(f"previous {before.shape} and current {after.shape} maps differ in shape.")
    a = before.reshape(len(before), -1)
    b = after.reshape(len(after), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norms = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    both_constant = ((a == 0).all(axis=1)) & ((b == 0).all(axis=1))
    correlation = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    correlation = np.where(both_constant, 1.0, np.clip(correlation, -1.0, 1.0))
    return _reduce(1.0 - correlation, per_image)


def focus(heatmaps: np.ndarray, per_image: bool = False) -> float | np.ndarray:
    """Normalised entropy of each map: 1 = spread evenly, 0 = all on one pixel.

    The map is read as a distribution `p = L / Σ L` over its H·W pixels;
    `focus = −Σ p log p / log(H·W)`. An all-zero map singles nothing out and
    scores 1, like a constant one.

    Args:
        heatmaps: (N, H, W) non-negative maps, at least 2 pixels each.
        per_image: return the (N,) values instead of their mean.

    Returns:
        The normalised entropy in [0, 1].

    Example:

    >>> spike = np.zeros((1, 4, 4)); spike[0, 2, 1] = 5.0
    >>> focus(spike), focus(np.ones((1, 4, 4)))
    (0.0, 1.0)
    """
    maps = _maps(heatmaps)
    pixels = math.prod(maps.shape[1:])
    if pixels < 2:
        raise ValueError("focus needs maps of at least 2 pixels.")
    flat = maps.reshape(len(maps), -1)
    total = flat.sum(axis=1, keepdims=True)
    p = np.where(total > 0, flat / np.where(total > 0, total, 1.0), 1.0 / pixels)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    return _reduce(np.clip(entropy / np.log(pixels), 0.0, 1.0), per_image)


def _forward(model: keras.Model) -> Callable[[Any], Any]:
    if model not in _FORWARD:
        _FORWARD[model] = backend_module().compile_function(
            lambda x: model(x, training=False), model
        )
    return _FORWARD[model]


def _outputs(
    model: keras.Model,
    count: int,
    make_batch: Callable[[np.ndarray], np.ndarray],
    preprocess: Preprocess | None,
    batch_size: int,
) -> np.ndarray:
    """Model outputs for `count` images built `batch_size` at a time by `make_batch(indices)`.

    Every batch has the same shape (the last one repeats its last item), so
    the compiled forward traces once.
    """
    forward, size = _forward(model), min(batch_size, count)
    outputs = []
    for start in range(0, count, size):
        x = make_batch(np.minimum(np.arange(start, start + size), count - 1))
        x = preprocess(x.copy()) if preprocess is not None else x
        y = forward(ops.convert_to_tensor(np.asarray(ops.convert_to_numpy(x), np.float32)))
        outputs.append(ops.convert_to_numpy(ops.cast(y, "float32")))
    return np.concatenate(outputs)[:count].astype(np.float64)


def _class_outputs(outputs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The output for each item's class; a single sigmoid unit scores class 0 as 1 − p."""
    if outputs.shape[-1] == 1:
        return np.where(classes == 1, outputs[:, 0], 1.0 - outputs[:, 0])
    return outputs[np.arange(len(outputs)), classes]


def _faithfulness_inputs(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any,
    preprocess: Preprocess | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float images (N, *spatial, C), maps (N, *spatial), class ids and the unperturbed scores."""
    images = np.asarray(ops.convert_to_numpy(images), dtype=np.float32)
    maps = _maps(heatmaps)
    if images.ndim == maps.ndim:
        images = images[..., None]  # one channel: grayscale images, mono sequences
    if images.shape[:-1] != maps.shape:
        raise ValueError(
            f"heatmaps {maps.shape} must match the images' (N, H, W) {images.shape[:-1]} "
            f"((N, T) for sequences, (N, D, H, W) for volumes); pass result.heatmaps, "
            f"which the explainer returns at the images' size."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    outputs = _outputs(model, len(images), lambda i: images[i], preprocess, batch_size)
    if classes is None:
        predicted = outputs[:, 0] > 0.5 if outputs.shape[-1] == 1 else outputs.argmax(axis=1)
        classes = predicted
    classes = np.broadcast_to(np.asarray(classes), (len(images),))
    count = max(outputs.shape[-1], 2)
    if not np.issubdtype(classes.dtype, np.integer) or ((classes < 0) | (classes >= count)).any():
        raise ValueError(
            f"classes must be class indices in 0..{count - 1} (one per image or one for "
            f"all), got {np.unique(classes)[:5]}; a negative index is not the last class here."
        )
    classes = classes.astype(np.int64)
    return images, maps, classes, _class_outputs(outputs, classes)


def _blur_along(values: np.ndarray, axis: int, sigma: float) -> np.ndarray:
    """A zero-padded Gaussian blur of `values` along one axis (the kernel of `_blur`)."""
    radius = round(2 * sigma)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    padding = [(radius, radius) if a == axis else (0, 0) for a in range(values.ndim)]
    padded = np.pad(values, padding)
    length = values.shape[axis]
    return sum(
        weight * np.take(padded, np.arange(i, i + length), axis=axis)
        for i, weight in enumerate(kernel / kernel.sum())
    )


def _blur(images: np.ndarray) -> np.ndarray:
    """A Gaussian blur of (N, *spatial, C) inputs, σ = the largest spatial size / 16.

    Images go through `keras.ops.image.gaussian_blur` (zero padding, a
    (2·round(2σ) + 1)-tap kernel). Sequences and volumes get the same
    Gaussian along each axis in turn (it is separable), in numpy: the
    backends disagree on `gaussian_blur` with a kernel that is not square.
    """
    spatial = images.shape[1:-1]
    sigma = max(spatial) / 16
    if len(spatial) == 2:
        kernel = 2 * round(2 * sigma) + 1
        blurred = ops.image.gaussian_blur(
            images, (kernel, kernel), (sigma, sigma), data_format="channels_last"
        )
        return np.asarray(ops.convert_to_numpy(blurred), dtype=np.float32)
    blurred = images.astype(np.float64)
    for axis in range(1, len(spatial) + 1):
        blurred = _blur_along(blurred, axis, sigma)
    return blurred.astype(np.float32)


def _baseline(images: np.ndarray, baseline: str | float) -> np.ndarray:
    if baseline == "blur":
        return _blur(images)
    if baseline == "mean":
        spatial = tuple(range(1, images.ndim - 1))
        return np.broadcast_to(images.mean(axis=spatial, keepdims=True), images.shape)
    if isinstance(baseline, (int, float)):
        return np.full_like(images, float(baseline))
    raise ValueError(f"baseline must be 'blur', 'mean' or a number, got {baseline!r}.")


def _auc_curve(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any,
    steps: int,
    baseline: str | float,
    preprocess: Preprocess | None,
    batch_size: int,
    insert: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The (N, steps + 1) score curves of deletion (or insertion) and their areas (N,)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    images, maps, classes, _ = _faithfulness_inputs(
        model, images, heatmaps, classes, preprocess, batch_size
    )
    background = _baseline(images, baseline)
    count, pixels = len(maps), math.prod(maps.shape[1:])
    # Rank 0 = most salient pixel; ties keep row-major order.
    order = np.argsort(-maps.reshape(count, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(pixels)[None], axis=1)
    rank = rank.reshape(*maps.shape, 1)
    shown = np.round(np.arange(steps + 1) / steps * pixels).astype(np.int64)

    def make_batch(indices):
        image, step = indices // (steps + 1), indices % (steps + 1)
        changed = rank[image] < shown[step].reshape(-1, *([1] * (rank.ndim - 1)))
        if insert:
            return np.where(changed, images[image], background[image])
        return np.where(changed, background[image], images[image])

    outputs = _outputs(model, count * (steps + 1), make_batch, preprocess, batch_size)
    curves = _class_outputs(outputs, np.repeat(classes, steps + 1)).reshape(count, steps + 1)
    areas = (curves[:, 1:] + curves[:, :-1]).sum(axis=1) / (2 * steps)
    return curves, areas


def deletion_auc(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    steps: int = 16,
    baseline: str | float = "mean",
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """Area under the class score while the most salient pixels are removed (lower is better).

    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018. Pixels are replaced by the baseline in
    order of decreasing heatmap value, `1/steps` of them per step; the score
    (the model's output for the class, a probability for a softmax head) is
    read after each step and the area under the curve over [0, 1] is taken
    by the trapezoid rule. A faithful map makes the score collapse early. All
    N·(steps + 1) images go through one compiled forward, in batches.

    Args:
        model: the classifier.
        images: (N, H, W, C) or (N, H, W) images, as `preprocess` expects them.
        heatmaps: (N, H, W) maps at the images' size.
        classes: class per image (or one for all). Defaults to `None`: the
            predicted class.
        steps: number of deletion steps. Defaults to `16`.
        baseline: `"mean"` (each image's mean colour), `"blur"` (a Gaussian
            blur of the image, σ = size/16) or a constant. Defaults to `"mean"`.
        preprocess: maps images to model input. Defaults to `None`.
        batch_size: images per forward pass. Defaults to `64`.
        per_image: return the (N,) areas instead of their mean.

    Returns:
        The area, in the units of the score (in [0, 1] for probabilities).

    Example:

    >>> result = keras_cam.explain(model, images)                         # doctest: +SKIP
    >>> deletion_auc(model, images, result.heatmaps, result.classes)     # doctest: +SKIP
    0.12
    """
    _, areas = _auc_curve(
        model, images, heatmaps, classes, steps, baseline, preprocess, batch_size, insert=False
    )
    return _reduce(areas, per_image)


def insertion_auc(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    steps: int = 16,
    baseline: str | float = "blur",
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """Area under the class score while the most salient pixels are revealed (higher is better).

    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018. The mirror of `deletion_auc`: the image
    starts as the baseline (by default a blurred copy) and its pixels are
    restored in order of decreasing heatmap value. Arguments as for
    `deletion_auc`, except `baseline` defaults to `"blur"`.

    Example:

    >>> insertion_auc(model, images, result.heatmaps, result.classes)    # doctest: +SKIP
    0.81
    """
    _, areas = _auc_curve(
        model, images, heatmaps, classes, steps, baseline, preprocess, batch_size, insert=True
    )
    return _reduce(areas, per_image)


def _masked_scores(model, images, heatmaps, classes, preprocess, batch_size):
    images, maps, classes, full = _faithfulness_inputs(
        model, images, heatmaps, classes, preprocess, batch_size
    )
    peak = maps.max(axis=_spatial(maps), keepdims=True)
    weights = np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0)[..., None]
    masked = (images * weights).astype(np.float32)
    outputs = _outputs(model, len(images), lambda i: masked[i], preprocess, batch_size)
    return full, _class_outputs(outputs, classes)


def average_drop(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """Relative score lost when the image is multiplied by its map (lower is better).

    Chattopadhay et al., "Grad-CAM++", WACV 2018: `max(0, Y − O) / Y`, with
    `Y` the class score of the image and `O` that of the image multiplied
    pixel-wise by its map (scaled to a maximum of 1). Returned as a fraction
    (the paper reports percent). An image whose score `Y` is 0 counts 0.

    Args:
        model, images, heatmaps, classes, preprocess, batch_size, per_image:
            as for `deletion_auc`.

    Example:

    >>> average_drop(model, images, result.heatmaps)                      # doctest: +SKIP
    0.35
    """
    full, masked = _masked_scores(model, images, heatmaps, classes, preprocess, batch_size)
    drop = np.maximum(full - masked, 0.0)
    return _reduce(np.where(full > 0, drop / np.where(full > 0, full, 1.0), 0.0), per_image)


def increase_in_confidence(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """Share of images whose class score rises when the image is multiplied by its map.

    Chattopadhay et al., "Grad-CAM++", WACV 2018 (higher is better). Same
    masked images as `average_drop`; returned as a fraction.

    Example:

    >>> increase_in_confidence(model, images, result.heatmaps)            # doctest: +SKIP
    0.25
    """
    full, masked = _masked_scores(model, images, heatmaps, classes, preprocess, batch_size)
    return _reduce((masked > full).astype(np.float64), per_image)


def swap_backgrounds(images: Any, masks: Any) -> np.ndarray:
    """Each image's object on the next image's background: the inputs of `background_sensitivity`.

    Image `i` keeps its pixels inside its mask `Mᵢ`; outside it they come
    from image `j = (i + 1) mod N`, except where image `j`'s own object lies,
    which is filled with the mean colour of image `j`'s background (so no
    second object enters the picture):

        x'ᵢ = Mᵢ·xᵢ + (1 − Mᵢ)·[(1 − Mⱼ)·xⱼ + Mⱼ·μⱼ]

    `μⱼ` is image `j`'s mean over its background, per channel (its mean
    over all pixels when its mask covers everything). An empty mask swaps the
    whole image.

    Args:
        images: (N, *spatial, C) or (N, *spatial) images, as `preprocess`
            expects them (display images for the callback).
        masks: (N, *spatial) object masks (`binary_masks` rule).

    Returns:
        float32 (N, *spatial, C) images (a channel axis of 1 added to images
        without one).

    Example:

    >>> x = np.array([[[1.0, 2.0]], [[3.0, 4.0]]])          # two 1×2 grey images
    >>> m = np.array([[[True, False]], [[False, True]]])
    >>> swap_backgrounds(x, m)[..., 0].tolist()
    [[[1.0, 3.0]], [[2.0, 4.0]]]
    """
    images = np.asarray(ops.convert_to_numpy(images), dtype=np.float64)
    masks = binary_masks(masks)
    if images.ndim == masks.ndim:
        images = images[..., None]
    if images.shape[:-1] != masks.shape or len(images) == 0:
        raise ValueError(
            f"masks {masks.shape} must match the images' (N, H, W) {images.shape[:-1]} "
            f"((N, T) for sequences, (N, D, H, W) for volumes), one mask per image."
        )
    inside = masks[..., None].astype(np.float64)
    spatial = tuple(range(1, images.ndim - 1))
    background_pixels = (1.0 - inside).sum(axis=spatial, keepdims=True)
    background_mean = np.where(
        background_pixels > 0,
        (images * (1.0 - inside)).sum(axis=spatial, keepdims=True)
        / np.maximum(background_pixels, 1.0),
        images.mean(axis=spatial, keepdims=True),
    )
    # Each image's background with its own object painted over in its background colour.
    backgrounds = (1.0 - inside) * images + inside * background_mean
    partner = np.roll(np.arange(len(images)), -1)
    return (inside * images + (1.0 - inside) * backgrounds[partner]).astype(np.float32)


def background_sensitivity(
    model: keras.Model,
    images: Any,
    masks: Any,
    classes: Any = None,
    *,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """How much the class score moves when the background is swapped (lower is better).

    A shortcut check that looks at the decision, not at a map: each image's
    object is put on another image's background (`swap_backgrounds`: the
    next image's, its object painted over), and the value is `|Y − Y'|`,
    the absolute change of the class score (the model's output for the
    class, a probability for a softmax head). A model that decides from the
    object alone scores about 0; one that reads a stamp, a watermark or a
    texture in the background moves with it. Unlike `energy_in_mask`, a
    model cannot lower it by moving its explanation, so it checks whether a
    guided fine-tuning (`CAMGuidedModel`) removed a shortcut or only its
    picture. Needs at least two images with different backgrounds (with one
    image it is 0).

    Args:
        model: the classifier.
        images: (N, H, W, C) or (N, H, W) images, as `preprocess` expects them.
        masks: (N, H, W) object masks (`binary_masks` rule).
        classes: class per image (or one for all). Defaults to `None`: the
            predicted class of the unchanged image.
        preprocess: maps images to model input. Defaults to `None`.
        batch_size: images per forward pass. Defaults to `64`.
        per_image: return the (N,) changes instead of their mean.

    Returns:
        The change, in the units of the score (in [0, 1] for probabilities).

    Example:

    >>> background_sensitivity(model, probe_images, probe_masks)         # doctest: +SKIP
    0.03
    """
    swapped = swap_backgrounds(images, masks)
    originals = np.asarray(ops.convert_to_numpy(images), dtype=np.float32)
    if originals.ndim == swapped.ndim - 1:
        originals = originals[..., None]
    # `_faithfulness_inputs` checks the batch size and classes and scores the originals;
    # a map of ones stands in for the heatmaps it also checks.
    _, _, classes, scores = _faithfulness_inputs(
        model, originals, np.ones(swapped.shape[:-1]), classes, preprocess, batch_size
    )
    outputs = _outputs(model, len(swapped), lambda i: swapped[i], preprocess, batch_size)
    return _reduce(np.abs(scores - _class_outputs(outputs, classes)), per_image)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, tied values sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, groups, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(groups, weights=ranks) / counts)[groups]


def rank_correlation(
    first: np.ndarray, second: np.ndarray, per_image: bool = False
) -> float | np.ndarray:
    """Spearman rank correlation of two maps of each image (ties share their mean rank).

    The Pearson correlation of the pixels' ranks, as used by Adebayo et al.,
    "Sanity Checks for Saliency Maps", NeurIPS 2018. Constant maps are
    handled as in `drift`: two constant maps correlate 1, a constant and a
    varying map 0.

    Args:
        first: (N, H, W) maps.
        second: (N, H, W) maps of the same images.
        per_image: return the (N,) correlations instead of their mean.

    Returns:
        The correlation in [-1, 1].

    Example:

    >>> rank_correlation(np.array([[[0.0, 1.0], [2.0, 9.0]]]), np.array([[[0.0, 1.0], [3.0, 4.0]]]))
    1.0
    """
    a, b = _maps(first, "first"), _maps(second, "second")
    if a.shape != b.shape:
        raise ValueError(f"first {a.shape} and second {b.shape} maps differ in shape.")
    ranks_a = np.stack([_average_ranks(m) for m in a.reshape(len(a), -1)])
    ranks_b = np.stack([_average_ranks(m) for m in b.reshape(len(b), -1)])
    shape = (len(a), 1, ranks_a.shape[1])
    return _reduce(1.0 - drift(ranks_a.reshape(shape), ranks_b.reshape(shape), True), per_image)


ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""The percentiles ROAD averages over (pytorch-grad-cam's and the paper's)."""


def _road_changes(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any,
    percentiles: Sequence[float],
    noise: float,
    seed: int,
    preprocess: Preprocess | None,
    batch_size: int,
    most_relevant_first: bool,
) -> np.ndarray:
    """(N, P) class score change after imputing each image's pixels at each percentile."""
    percentiles = tuple(percentiles)
    if not percentiles or not all(0 <= p <= 100 for p in percentiles):
        raise ValueError(f"percentiles must be numbers in [0, 100], got {percentiles!r}.")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or noise < 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}.")
    if np.ndim(heatmaps) != 3:
        raise ValueError(
            f"ROAD imputes pixels of (N, H, W) images from their 8 neighbours; got maps of "
            f"shape {np.shape(heatmaps)} (sequences and volumes are not supported)."
        )
    images, maps, classes, scores = _faithfulness_inputs(
        model, images, heatmaps, classes, preprocess, batch_size
    )
    # pytorch-grad-cam keeps the pixels below the p-th percentile of the map (of 1 − map for
    # least relevant first) and imputes the others.
    ranked = maps if most_relevant_first else 1.0 - maps
    count = len(percentiles)

    def make_batch(indices):
        batch = []
        for index in indices:
            image, step = divmod(int(index), count)
            threshold = np.percentile(ranked[image], percentiles[step])
            rng = np.random.default_rng([seed, image, step, int(most_relevant_first)])
            removed = ranked[image] >= threshold
            batch.append(noisy_linear_impute(images[image], removed, noise, rng))
        return np.stack(batch)

    outputs = _outputs(model, len(maps) * count, make_batch, preprocess, batch_size)
    after = _class_outputs(outputs, np.repeat(classes, count)).reshape(len(maps), count)
    return after - scores[:, None]


def road_most_relevant_first(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.01,
    seed: int = 0,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """ROAD, most relevant first: the class score's change when the top pixels are imputed.

    Rong et al., "A Consistent and Efficient Evaluation Strategy for
    Attribution Methods", ICML 2022 (arXiv 2202.00449); pytorch-grad-cam's
    `ROADMostRelevantFirstAverage`. At each percentile `p`, the pixels whose
    map value is at or above the map's p-th percentile (the top 100 − p %)
    are replaced by noisy linear imputation
    (`keras_cam.diagnostics.imputation`); the value is the new class score
    minus the image's own, averaged over the percentiles. Lower (a larger
    drop) is better. The imputation works on the display images, before
    `preprocess`.

    Args:
        model, images, heatmaps, classes, preprocess, batch_size, per_image:
            as for `deletion_auc`; the images must be (N, H, W[, C]).
        percentiles: the percentiles averaged over. Defaults to 10, 20, …, 90.
        noise: the imputation noise's standard deviation, in the images'
            units. Defaults to `0.01` (ROAD's, for images in [0, 1]).
        seed: the noise's seed (the same seed gives the same values).
            Defaults to `0`.

    Example:

    >>> road_most_relevant_first(model, images, result.heatmaps, result.classes)  # doctest: +SKIP
    -0.42
    """
    changes = _road_changes(
        model, images, heatmaps, classes, percentiles, noise, seed, preprocess, batch_size, True
    )
    return _reduce(changes.mean(axis=1), per_image)


def road_least_relevant_first(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.01,
    seed: int = 0,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """ROAD, least relevant first: the class score's change when the bottom pixels are imputed.

    The mirror of `road_most_relevant_first` (pytorch-grad-cam's
    `ROADLeastRelevantFirstAverage`): at each percentile `p` the pixels at or
    below the map's (100 − p)-th percentile (the bottom 100 − p %) are
    imputed. Higher (a smaller drop) is better. Arguments as for
    `road_most_relevant_first`.

    Example:

    >>> road_least_relevant_first(model, images, result.heatmaps)  # doctest: +SKIP
    -0.05
    """
    changes = _road_changes(
        model, images, heatmaps, classes, percentiles, noise, seed, preprocess, batch_size, False
    )
    return _reduce(changes.mean(axis=1), per_image)


def road_combined(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.01,
    seed: int = 0,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """ROAD's combined score: (least relevant first − most relevant first) / 2; higher is better.

    pytorch-grad-cam's `ROADCombined`: a faithful map loses little when its
    unimportant pixels go and much when its important ones go. In the units
    of the score (in [−0.5, 0.5] for probabilities). Arguments as for
    `road_most_relevant_first`; both orders use the same noise seed.

    Example:

    >>> road_combined(model, images, result.heatmaps, result.classes)  # doctest: +SKIP
    0.18
    """
    options = (percentiles, noise, seed, preprocess, batch_size)
    least = _road_changes(model, images, heatmaps, classes, *options, False)
    most = _road_changes(model, images, heatmaps, classes, *options, True)
    return _reduce((least.mean(axis=1) - most.mean(axis=1)) / 2, per_image)


def arcc(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    classes: Any = None,
    *,
    explain: Callable[[np.ndarray], Any],
    percentiles: Sequence[float] = (20, 40, 60, 80),
    noise: float = 0.01,
    seed: int = 0,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
    per_image: bool = False,
) -> float | np.ndarray:
    """ARCC: one score from a map's coherency, its compactness and ROAD (higher is better).

    pytorch-grad-cam's `metrics/arcc.py` (RefineCAM, arXiv 2605.14641). Its
    docstring calls ARCC the *geometric* mean of Complexity, Coherency and
    ROAD; its code, followed here, takes the *harmonic* mean of three values
    in [0, 1]:

        coherency  = (r(explain(X ⊙ L), L) + 1) / 2     (Pearson r; Poppi et al., arXiv 2104.10252)
        simplicity = 1 − mean(|L|)                       (1 − Complexity)
        road       = clip(2 · ROAD_combined(L), 0, 1)    (percentiles 20, 40, 60, 80)
        ARCC = 3 / (1/(coherency + ε) + 1/(simplicity + ε) + 1/(road + ε)),    ε = 1e-8

    so any one of the three near 0 pulls ARCC near 0. `explain` re-runs the
    same method on the images multiplied by their maps (Coherency: a map
    should explain its own evidence alike). ROAD's difference is in the
    units of the score; clipping at 1 after doubling makes it a probability
    difference's scale.

    Args:
        model, images, heatmaps, classes, preprocess, batch_size, per_image:
            as for `deletion_auc`; the images must be (N, H, W[, C]).
        explain: display images (N, H, W, C) -> their heatmaps (N, H, W) in
            [0, 1], for the same classes, by the method that made `heatmaps`.
        percentiles, noise, seed: ROAD's, as for `road_combined`. Defaults
            to 20, 40, 60, 80 (the reference's), `0.01` and `0`.

    Example:

    >>> def again(x):
    ...     return keras_cam.explain(model, x, method="gradcam", targets=classes).heatmaps
    >>> arcc(model, images, result.heatmaps, classes, explain=again)  # doctest: +SKIP
    0.41
    """
    maps = _maps(heatmaps)
    flat = maps.reshape(len(maps), -1)
    complexity = np.abs(flat).mean(axis=1)
    shown = np.asarray(ops.convert_to_numpy(images), np.float32)
    masked = shown * (maps if shown.ndim == maps.ndim else maps[..., None]).astype(np.float32)
    again = _maps(explain(masked), "explain's heatmaps").reshape(len(maps), -1)
    if again.shape != flat.shape:
        raise ValueError(
            f"explain must return one map per image of the heatmaps' size {maps.shape[1:]}, "
            f"got {again.shape}."
        )
    a, b = again - again.mean(axis=1, keepdims=True), flat - flat.mean(axis=1, keepdims=True)
    scale = flat.shape[1] - 1
    pearson = ((a * b).sum(axis=1) / scale) / (
        np.sqrt((a**2).sum(axis=1) / scale) * np.sqrt((b**2).sum(axis=1) / scale) + 1e-8
    )
    coherency = (pearson + 1) / 2
    road = road_combined(
        model,
        images,
        maps,
        classes,
        percentiles=percentiles,
        noise=noise,
        seed=seed,
        preprocess=preprocess,
        batch_size=batch_size,
        per_image=True,
    )
    road = np.clip(2 * road, 0.0, 1.0)
    values = 3 / (1 / (coherency + 1e-8) + 1 / ((1 - complexity) + 1e-8) + 1 / (road + 1e-8))
    return _reduce(values, per_image)
