"""Finer-CAM."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_cam.methods.base import CAMMethod
from keras_cam.methods.registry import gradient_method

_WEIGHTINGS = ("softmax", "mean")


class FinerCAM(CAMMethod):
    """Finer-CAM: a gradient method's map of the explained class minus its most similar classes.

    Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details
    for Visual Explanation", CVPR 2025, arXiv 2501.11309 (pytorch-grad-cam's
    `FinerCAM`). The explained class `m` is compared with the `T` classes
    whose logits are closest to its own, `d_1..d_T`, and the base method
    (Grad-CAM by default) is run on the gradients of the contrastive score
    instead of `y_m`. With the default `weighting="softmax"` (pytorch-grad-cam's
    `FinerWeightedTarget`), each comparison is weighted by its probability
    `p = softmax(y)`, the weights themselves differentiated:

        S = Σ_t p_{d_t} (y_m - α y_{d_t}) / (Σ_t p_{d_t} + 1e-9)

    With `weighting="mean"` it is TorchCAM 0.5.0's `FinerCAM` objective,
    whose `gamma` (default 0.6) is this `alpha` on the plain mean:

        S = y_m - α · 1/T Σ_t y_{d_t}

    The comparison classes are chosen per image from the logits (not
    differentiated); `α = 0` with the softmax weighting is the base method
    on `y_m`. The model's outputs are read as logits (the explainer's
    `score="logit"` swaps a final softmax for them). Costs one more forward
    and backward pass.

    Args:
        alpha: the comparison strength `α`. Defaults to `1.0`
            (pytorch-grad-cam's; TorchCAM's `gamma` defaults to 0.6).
        comparisons: `T`, capped at the number of other classes. Defaults
            to `3` (both references).
        base: the gradient method run on the contrastive gradients, a
            registry name or instance. Defaults to `"gradcam"`.
        weighting: `"softmax"` (pytorch-grad-cam) or `"mean"` (TorchCAM).
            Defaults to `"softmax"`.

    Example:

    >>> from keras_cam.methods import FinerCAM
    >>> keras_cam.explain(model, images, method=FinerCAM(base="layercam"))  # doctest: +SKIP
    """

    name = "finercam"
    description = "Finer-CAM (Zhang et al. 2025): the class minus its most similar classes."
    paper = "Zhang et al., CVPR 2025 (arXiv 2501.11309)"
    cost = "2 forward + 1 backward (its own gradients, of the contrastive score)"
    uses_gradients = False  # its own gradients, of the contrastive score
    uses_forward = True

    def __init__(
        self,
        alpha: float = 1.0,
        comparisons: int = 3,
        base: str | CAMMethod = "gradcam",
        weighting: str = "softmax",
    ) -> None:

        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}.")
        if isinstance(comparisons, bool) or not isinstance(comparisons, int) or comparisons < 1:
            raise ValueError(f"comparisons must be an integer >= 1, got {comparisons!r}.")
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}.")
        self.base = gradient_method(base)
        self.alpha, self.comparisons, self.weighting = float(alpha), comparisons, weighting

    def contrastive_score(self, logits: Any, classes: Any) -> Any:
        """The contrastive score (B,) of logits (B, K) for the explained `classes` (B,)."""
        count = logits.shape[-1]
        if count < 2:
            raise ValueError(
                f"Finer-CAM compares the explained class with others, but the model has "
                f"{count} output; use another method."
            )
        main = ops.take_along_axis(logits, ops.cast(classes, "int32")[:, None], axis=1)
        distance = ops.abs(ops.stop_gradient(logits) - ops.stop_gradient(main))
        distance = ops.where(ops.one_hot(classes, count) > 0, float("inf"), distance)
        _, nearest = ops.top_k(-distance, min(self.comparisons, count - 1))
        compared = ops.take_along_axis(logits, nearest, axis=1)
        if self.weighting == "mean":
            return main[:, 0] - self.alpha * ops.mean(compared, axis=1)
        weights = ops.take_along_axis(ops.softmax(logits, axis=-1), nearest, axis=1)
        numerator = ops.sum(weights * (main - self.alpha * compared), axis=1)
        return numerator / (ops.sum(weights, axis=1) + 1e-9)

    def _gradients(self, classes, forward):
        _, gradients = forward.gradients_at(forward.inputs, classes, self.contrastive_score)
        return gradients

    def weighted_activations(self, activations, gradients, classes, forward=None):
        gradients = self._gradients(classes, forward)
        return self.base.weighted_activations(activations, gradients, classes, forward)

    def cam(self, activations, gradients, classes, forward=None):
        return self.base.cam(activations, self._gradients(classes, forward), classes, forward)
