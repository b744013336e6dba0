"""ShapleyCAM."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_cam.core.spatial import spatial_axes
from keras_cam.methods.base import CAMMethod

_TARGETS = ("rest", "score")


def rest_score(logits: Any, classes: Any) -> Any:
    """The Residual Softmax Target-class score `y_c + log softmax(y)_c` (B,) of logits (B, K).

    It is `y_c - CE(y, c)`: the logit minus the cross-entropy of the class
    (pytorch-grad-cam's `ClassifierOutputReST`).
    """
    picked = ops.cast(classes, "int32")[:, None]
    logit = ops.take_along_axis(logits, picked, axis=1)[:, 0]
    log_probability = ops.take_along_axis(ops.log_softmax(logits, axis=-1), picked, axis=1)[:, 0]
    return logit + log_probability


class ShapleyCAM(CAMMethod):
    """ShapleyCAM: channels weighted by the gradient minus half the Hessian-vector product.

    Cai et al., "CAMs as Shapley Value-based Explainers", arXiv 2501.06261,
    2025 (pytorch-grad-cam's `ShapleyCAM`). A second-order
    Taylor expansion of the score `S` around the activations `A` gives each
    location's Shapley value as `∂S/∂A - ½ ∇²S · A`; averaged over the
    locations it weights the channels as in Grad-CAM:

        w_c = 1/(h·w) Σ_ij (∂S/∂A - ½ ∇²_A S · A)_ijc,    L = ReLU(Σ_c w_c A_c)

    The Hessian-vector product is one more backward pass through the
    gradient's own graph (double backprop on every backend). With the
    default `target="rest"`, the paper's Residual Softmax Target-class
    score `S = y_c - CE(y, c) = y_c + log softmax(y)_c` is explained (the
    model's outputs read as logits: the explainer's `score="logit"` swaps a
    final softmax for them); its log-sum-exp gives the Hessian its
    curvature. `target="score"` explains the explainer's own score, as
    pytorch-grad-cam does with its default `ClassifierOutputTarget`: through
    a piecewise-linear head (ReLU, max pooling, Dense) the Hessian is then 0
    and the map is Grad-CAM's. Costs one forward and two backward passes
    through the head after the shared forward pass.

    Args:
        target: `"rest"` (the paper's ReST score) or `"score"` (the
            explained score as it is). Defaults to `"rest"`.

    Example:

    >>> keras_cam.explain(model, images, method="shapleycam")  # doctest: +SKIP
    >>> from keras_cam.methods import ShapleyCAM
    >>> keras_cam.explain(model, images, method=ShapleyCAM(target="score"))  # doctest: +SKIP
    """

    name = "shapleycam"
    description = "ShapleyCAM (Cai et al. 2025): gradient minus half a Hessian-vector product."
    paper = "Cai et al., arXiv 2501.06261, 2025"
    cost = "1 forward + 1 head forward + 2 head backward (double backprop)"
    uses_gradients = False  # its own gradients, of its own score, with the Hessian
    uses_forward = True

    def __init__(self, target: str = "rest") -> None:
        if target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS}, got {target!r}.")
        self.target = target

    def channel_weights(self, activations, gradients, classes, forward=None):
        score = rest_score if self.target == "rest" else None
        gradients, product = forward.hessian_at(classes, score)
        return ops.mean(gradients - 0.5 * product, axis=spatial_axes(gradients), keepdims=True)
