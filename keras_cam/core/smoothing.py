"""Augmentation smoothing: explain flipped and zoomed copies, map each back, average.

The copies are horizontal flips of centre crops enlarged to the input size
(zoom factors `SCALES`); zooming in rather than out means no padding value
has to be invented. Each copy's map is mapped back into the original frame,
where it covers the crop's area only, and the maps are averaged over the
copies that cover each pixel (the un-zoomed ones cover all of them).
"""

from __future__ import annotations

from typing import Any

from keras import ops

SCALES = (1.0, 1.125, 1.25)
AUGMENTATIONS = tuple((scale, flip) for scale in SCALES for flip in (False, True))


def _crop_box(height: int, width: int, scale: float) -> tuple[int, int, int, int]:
    crop_h, crop_w = round(height / scale), round(width / scale)
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def augment(inputs: Any, channels_first: bool) -> Any:
    """Stacks the augmented copies of a batch: (len(AUGMENTATIONS)·N, ...), copy-major."""
    images = ops.transpose(inputs, (0, 2, 3, 1)) if channels_first else inputs
    height, width = images.shape[1:3]
    copies = []
    for scale, flip in AUGMENTATIONS:
        top, left, crop_h, crop_w = _crop_box(height, width, scale)
        copy = images
        if scale != 1.0:
            crop = images[:, top : top + crop_h, left : left + crop_w, :]
            copy = ops.image.resize(crop, (height, width), "bilinear", data_format="channels_last")
        copies.append(ops.flip(copy, axis=2) if flip else copy)
    stacked = ops.cast(ops.concatenate(copies, axis=0), inputs.dtype)
    return ops.transpose(stacked, (0, 3, 1, 2)) if channels_first else stacked


def merge(maps: Any, count: int) -> Any:
    """Maps of the augmented copies (copies·N, H, W) -> their average in the original frame."""
    height, width = maps.shape[1:3]
    total = coverage = 0.0
    for index, (scale, flip) in enumerate(AUGMENTATIONS):
        part = maps[index * count : (index + 1) * count]
        if flip:
            part = ops.flip(part, axis=2)
        top, left, crop_h, crop_w = _crop_box(height, width, scale)
        if scale != 1.0:
            part = ops.image.resize(
                part[..., None], (crop_h, crop_w), "bilinear", data_format="channels_last"
            )[..., 0]
        padding = ((0, 0), (top, height - crop_h - top), (left, width - crop_w - left))
        total = total + ops.pad(part, padding)
        coverage = coverage + ops.pad(ops.ones_like(part), padding)
    return total / coverage
