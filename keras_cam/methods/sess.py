"""SESS: a base method over scaled and sliding patches of the image, fused."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from keras import ops

from keras_cam.core.spatial import channels_first, resize
from keras_cam.methods.base import CAMMethod, Forward
from keras_cam.methods.layer_probe import input_size, min_max, to_channels_last
from keras_cam.methods.registry import gradient_method

_POOLS = ("mean", "max")
_BLUR_TAPS, _BLUR_SIGMA = 11, 5.0  # the paper's (and pytorch-grad-cam's) smoothing


class SESS(CAMMethod):
    """SESS: Saliency Enhancing with Scaling and Sliding, around a gradient method.

    Tang et al., "SESS: Saliency Enhancing with Scaling and Sliding", ECCV
    2022, arXiv 2207.01769 (pytorch-grad-cam's `SESS`). The image (H × H) is
    resized so its side is each of the `scales` (default: `num_scales` sizes
    from H up, `round(H · scale_step_ratio)` apart), and an H × H window slides
    over every scaled image with stride `step_size` (windows at the right and
    bottom edges are shifted back inside). For each patch `p`:

        s_p = max(0, softmax(model(p))_class)          (the patch's score)
        w_p = s_p / max_q s_q                           (1 when no patch scores)
        M_p = w_p · n(resize(n(ReLU(base(p)))))         (n: min-max to [0, 1])

    `M_p` is pasted where the patch came from on a zero canvas of its scale,
    which is resized back to H × H; the pasted maps are fused by a mean over
    the patches whose value exceeds `theta` at each pixel (`pool="mean"`) or
    a maximum (`pool="max"`), then blurred by an 11 × 11 Gaussian (σ = 5,
    edges reflected) and min-max scaled. `pre_filter_ratio` drops that
    share of each image's lowest-scoring patches. The map is at the input's
    resolution. Resizing is bilinear at pixel centres without anti-aliasing,
    as the reference's OpenCV `INTER_LINEAR` (the image itself is only ever
    enlarged, where anti-aliasing would change nothing).

    Every image of a batch has the same windows: the patches of a batch run
    through `Forward.map_chunks` in chunks of `batch_size` (one trace,
    bounded memory), once for the scores and once for the base method's
    gradients; only each patch's map at the target layer's resolution is
    kept, and the full-size pasted maps are fused one scale at a time.
    Square 2-D inputs only (the window is the image's side).

    Args:
        base: the method run on each patch, a gradient method's name or
            instance. Defaults to `"gradcam"`.
        scales: the sides the image is resized to, each at least the input's.
            Defaults to `None`: `num_scales` sizes as above.
        num_scales: how many scales by default. Defaults to `12` (the paper's).
        scale_step_ratio: the default scales' step over the input side.
            Defaults to `2 / 7` (the paper's 224, 288, ... for 224).
        step_size: the window's stride in pixels. Defaults to `None`: the
            input side (non-overlapping windows but at the edges).
        pre_filter_ratio: the share of each image's lowest-scoring patches
            left out, in [0, 1). Defaults to `0.0`.
        theta: pixels of a pasted map at or below this take no part in the
            mean, in [0, 1). Defaults to `0.0`.
        pool: `"mean"` or `"max"`. Defaults to `"mean"`.
        smooth: blur the fused map. Defaults to `True`.
        softmax_scores: score patches by the softmax of the explained
            outputs (the paper's); `False` takes the explained score itself,
            clipped at 0 (for outputs where a softmax means nothing).
            Defaults to `True`.
        batch_size: patches per forward pass. Defaults to `32`.

    Example:

    >>> from keras_cam.methods import SESS
    >>> keras_cam.explain(model, images, method=SESS(num_scales=4))  # doctest: +SKIP
    """

    name = "sess"
    description = "SESS (Tang et al. 2022): a base method on scaled sliding patches, fused."
    paper = "Tang et al., ECCV 2022, arXiv 2207.01769"
    cost = "1 forward + patches × (2 forward + 1 backward); 122 patches at the defaults"
    uses_gradients = False  # its own, on every patch
    uses_forward = True
    has_channel_contributions = False

    def __init__(
        self,
        base: str | CAMMethod = "gradcam",
        scales: list[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        softmax_scores: bool = True,
        batch_size: int = 32,
    ) -> None:
        def count(value: Any, least: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= least

        def share(value: Any) -> bool:
            return (
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
            )

        if scales is not None and (not scales or not all(count(s, 1) for s in scales)):
            raise ValueError(f"scales must be a list of positive integers, got {scales!r}.")
        if not count(num_scales, 1):
            raise ValueError(f"num_scales must be an integer >= 1, got {num_scales!r}.")
        if not isinstance(scale_step_ratio, (int, float)) or not scale_step_ratio > 0:
            raise ValueError(f"scale_step_ratio must be a number > 0, got {scale_step_ratio!r}.")
        if step_size is not None and not count(step_size, 1):
            raise ValueError(f"step_size must be an integer >= 1 or None, got {step_size!r}.")
        if not share(pre_filter_ratio):
            raise ValueError(f"pre_filter_ratio must be in [0, 1), got {pre_filter_ratio!r}.")
        if not share(theta):
            raise ValueError(f"theta must be in [0, 1), got {theta!r}.")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}.")
        if not count(batch_size, 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        self.base = gradient_method(base)
        self.scales = None if scales is None else list(scales)
        self.num_scales, self.scale_step_ratio = num_scales, float(scale_step_ratio)
        self.step_size, self.pre_filter_ratio = step_size, float(pre_filter_ratio)
        self.theta, self.pool, self.smooth = float(theta), pool, bool(smooth)
        self.softmax_scores, self.batch_size = bool(softmax_scores), batch_size

    def windows(self, side: int) -> list[tuple[int, int, int]]:
        """The patches of an image of side `side`: (scale, top, left) of each window.

        Example:

        >>> SESS(num_scales=2).windows(7)
        [(7, 0, 0), (9, 0, 0), (9, 0, 2), (9, 2, 0), (9, 2, 2)]
        """
        step = round(side * self.scale_step_ratio)
        scales = self.scales or [side + step * i for i in range(self.num_scales)]
        if min(scales) < side:
            raise ValueError(
                f"SESS's scales must be at least the image side {side}, got {scales}; "
                f"pass larger scales or leave scales=None."
            )
        stride = self.step_size or side
        found = []
        for scale in scales:
            starts = _window_starts(scale, stride, side)
            found += [(scale, top, left) for top in starts for left in starts]
        return found

    def cam(self, activations, gradients, classes, forward: Forward | None = None):
        size = input_size(forward)
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(
                f"SESS slides a square window the size of the image over 2-D images; this "
                f"model's input is {size}. Use square images, or another method."
            )
        side, images = size[0], int(forward.inputs.shape[0])
        windows = self.windows(side)
        # Cropping a patch from a scaled image is linear, `R · X · Cᵀ` with slices of the
        # bilinear resizing matrix, so no scaled image is ever built.
        enlarging = {scale: _resizing(scale, side) for scale, _, _ in windows}
        crop_rows, crop_columns = (
            ops.convert_to_tensor(np.stack(matrices).astype("float32"))
            for matrices in zip(
                *(
                    (enlarging[scale][top : top + side], enlarging[scale][left : left + side])
                    for scale, top, left in windows
                ),
                strict=True,
            )
        )
        pixels = to_channels_last(forward.inputs, forward.input_channels_first)
        classes = ops.cast(classes, "int32")
        items = len(windows) * images

        def patches_of(indices):
            window, image = indices // images, indices % images
            patches = ops.einsum(
                "kah,khwc,kbw->kabc",
                ops.take(crop_rows, window, axis=0),
                ops.take(pixels, image, axis=0),
                ops.take(crop_columns, window, axis=0),
            )
            if forward.input_channels_first:
                patches = channels_first(patches)
            return ops.cast(patches, forward.inputs.dtype), ops.take(classes, image, axis=0)

        def patch_scores(indices):
            patches, patch_classes = patches_of(indices)
            own = self._softmax_score if self.softmax_scores else None
            return ops.relu(forward.score_inputs(patches, patch_classes, own))

        scores = ops.reshape(forward.map_chunks(patch_scores, items, self.batch_size), (-1, images))
        grid: list[tuple[int, int]] = []  # the base method's map size, known once traced

        def patch_maps(indices):
            """Each patch's base map at its own resolution, and the range of its enlargement
            to the window, which sets the second scaling: a row per (patch, image)."""
            patches, patch_classes = patches_of(indices)
            found, grads = forward.gradients_at(patches, patch_classes)
            maps = min_max(ops.relu(self.base.cam(found, grads, patch_classes)), (1, 2))
            grid[:] = [tuple(maps.shape[1:])]
            enlarged = resize(maps, (side, side))
            low, high = ops.min(enlarged, axis=(1, 2)), ops.max(enlarged, axis=(1, 2))
            flat = ops.reshape(maps, (maps.shape[0], -1))
            return ops.concatenate([flat, low[:, None], high[:, None]], axis=1)

        rows = forward.map_chunks(patch_maps, items, self.batch_size)
        rows = ops.reshape(rows, (len(windows), images, -1))
        (height, width) = grid[0]
        maps = ops.reshape(rows[..., :-2], (len(windows), images, height, width))
        low, high = rows[..., -2], rows[..., -1]
        # Each patch's share: its weight over its enlarged map's range (+ min_max's 1e-7).
        shares = self._weights(scores) / (high - low + 1e-7)
        fused = None
        # A scale's pasted maps at a time (at most 25 by default), not all of them: the
        # memory of an image's side² per patch and image is paid for one scale only.
        for first, last in _scale_runs(windows):
            rows_up, columns_up, rows_one, columns_one = (
                ops.convert_to_tensor(np.stack(matrices).astype("float32"))
                for matrices in zip(
                    *(_paste_matrices(side, (height, width), *w) for w in windows[first:last]),
                    strict=True,
                )
            )
            # pasted = share · (P_r U_h m U_wᵀ P_cᵀ - low · P_r 1 1ᵀ P_cᵀ): enlarging the map,
            # shifting it by its minimum and pasting it back are all linear.
            pasted = ops.einsum("kia,knab,kjb->knij", rows_up, maps[first:last], columns_up)
            outside = ops.einsum("ki,kj->kij", rows_one, columns_one)[:, None]
            pasted = (pasted - low[first:last, :, None, None] * outside) * shares[
                first:last, :, None, None
            ]
            fused = self._fuse(fused, pasted)
        fused = fused[0] if self.pool == "max" else _mean_of_shown(*fused)
        if self.smooth:
            blur = ops.convert_to_tensor(_blur_matrix(side).astype("float32"))
            fused = ops.einsum("ia,nab,jb->nij", blur, fused, blur)
        return min_max(fused, (1, 2))

    def _fuse(self, fused: Any, pasted: Any) -> Any:
        """Adds one scale's pasted maps (k, N, H, W) to the running max, or sum and count."""
        if self.pool == "max":
            found = (ops.max(pasted, axis=0),)
            return found if fused is None else (ops.maximum(fused[0], found[0]),)
        shown = pasted > self.theta
        found = (
            ops.sum(ops.where(shown, pasted, 0.0), axis=0),
            ops.sum(ops.cast(shown, "float32"), axis=0),
        )
        return found if fused is None else (fused[0] + found[0], fused[1] + found[1])

    @staticmethod
    def _softmax_score(outputs: Any, classes: Any) -> Any:
        probabilities = ops.softmax(outputs, axis=-1)
        return ops.take_along_axis(probabilities, classes[:, None], axis=1)[:, 0]

    def _weights(self, scores: Any) -> Any:
        """Each patch's weight per image (patches, N): its score over the best kept one's."""
        patches = scores.shape[0]
        dropped = int(patches * self.pre_filter_ratio)
        if dropped:
            ranks = ops.argsort(ops.argsort(scores, axis=0), axis=0)
            kept = ops.cast(ranks >= dropped, "float32")
        else:
            kept = ops.ones_like(scores)
        best = ops.max(scores * kept, axis=0, keepdims=True)
        return ops.where(best > 0, scores / ops.where(best > 0, best, 1.0), 1.0) * kept


def _window_starts(length: int, stride: int, window: int) -> list[int]:
    """The starts of the windows along one side; the last one is shifted back inside."""
    starts = []
    for start in range(0, length, stride):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def _resizing(size_out: int, size_in: int) -> np.ndarray:
    """The (size_out, size_in) matrix of bilinear resizing at pixel centres, clamped."""
    position = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    matrix = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), 1 - (position - low))
    np.add.at(matrix, (rows, high), position - low)
    return matrix


def _paste_matrices(
    side: int, grid: tuple[int, int], scale: int, top: int, left: int
) -> tuple[np.ndarray, ...]:
    """For a patch map of size `grid`: rows and columns that enlarge it to the window and
    paste it on its scale's canvas resized to the image, and the same for a map of ones."""
    down = _resizing(side, scale)
    rows, columns = down[:, top : top + side], down[:, left : left + side]
    return (
        rows @ _resizing(side, grid[0]),
        columns @ _resizing(side, grid[1]),
        rows.sum(axis=1),
        columns.sum(axis=1),
    )


def _scale_runs(windows: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """The (first, last) window index of each scale's run (windows come scale by scale)."""
    runs = itertools.groupby(range(len(windows)), key=lambda index: windows[index][0])
    return [(run[0], run[-1] + 1) for run in (list(indices) for _, indices in runs)]


def _mean_of_shown(total: Any, counts: Any) -> Any:
    """Each pixel's mean over the patches that show it (0 where none does)."""
    return ops.where(counts > 0, total / ops.maximum(counts, 1.0), 0.0)


def _blur_matrix(side: int) -> np.ndarray:
    """The (side, side) matrix of a 1-D Gaussian blur with mirrored edges (`dcb|abcd|cba`)."""
    offsets = np.arange(_BLUR_TAPS) - _BLUR_TAPS // 2
    kernel = np.exp(-(offsets**2) / (2 * _BLUR_SIGMA**2))
    kernel /= kernel.sum()
    matrix = np.zeros((side, side))
    for row in range(side):
        for offset, weight in zip(offsets, kernel, strict=True):
            column = row + offset
            while side > 1 and not 0 <= column < side:  # mirror until inside
                column = -column if column < 0 else 2 * (side - 1) - column
            matrix[row, column if side > 1 else 0] += weight
    return matrix
