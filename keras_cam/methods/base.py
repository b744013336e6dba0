"""The contract every CAM method follows.

A method turns the target layer's activations `A` (N, h, w, C), the gradients
`dS/dA` of the explained score `S` and the explained class ids into a map
(N, h, w). It is written only with `keras.ops`, so one file serves every
backend and runs inside the explainer's compiled function. The same file
serves every spatial rank: a 1-D model's activations are (N, t, C) and a 3-D
model's (N, d, h, w, C), so a method reduces over `keras_cam.core.spatial`'s
spatial axes and never names them; `(N, h, w)` below stands for `(N, *spatial)`. ReLU, upsampling,
smoothing and normalisation are shared by the explainer, never repeated in a
method.

A method defines one of:

- `channel_weights` -> (N, 1, 1, C) (a 1 per spatial axis): the map is
  `Σ_c w_c A_c` (Grad-CAM, CAM, ...);
- `weighted_activations` -> (N, h, w, C): the map is their channel sum
  (HiResCAM, Layer-CAM);
- `cam` -> (N, h, w) directly (Eigen-CAM).

`eigen_smooth` replaces the channel sum of `weighted_activations` by their
first principal component, so every method gets it for free.

Perturbation methods (Score-CAM, Ablation-CAM) score extra forward passes
through the `Forward` they receive; the explainer builds it inside the same
compiled function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from keras import ops

if TYPE_CHECKING:
    from keras_cam.core.layers import LayerSplit


@dataclass(frozen=True)
class Forward:
    """Extra forward passes for perturbation methods, inside the compiled function.

    Each `score_*` callable takes a chunk of B items and the class id to score
    for each, and returns the explained score per item, float32 (B,).
    `score_inputs` takes a third, optional argument: `score(outputs,
    classes) -> (B,)`, given the explained outputs as float32, replaces the
    explained score (SESS's softmax scores).

    Attributes:
        inputs: the batch's model input, in the model's layout and dtype.
        input_channels_first: whether `inputs` is (N, C, H, W).
        scores: float32 (N,) the explained score of each unperturbed item.
        score_inputs: `(model input chunk, classes)` -> scores (the whole model).
        score_ablated: `(images, channels, classes)` -> the score of each
            image with one channel of the target layer set to 0 (the layers
            after the target only, and less where the head allows: see
            `keras_cam.core.layers.pooled_head`).
        map_chunks: `map_chunks(fn, count, batch_size)` evaluates
            `fn(indices)` (B, ...) on index chunks of `batch_size` covering
            `range(count)`, one chunk after another (bounded memory, one
            trace), and returns the (count, ...) concatenation, float32. The
            last chunk is padded by repeating the last index.
        gradients_at: `(inputs, classes, score=None)` -> `(activations,
            gradients)` of the target layer for an input of the batch's
            shape, float32 channels-last (Smooth Grad-CAM++'s noisy inputs);
            `score(outputs, classes) -> (B,)`, given the explained outputs
            as float32, replaces the explained score (Finer-CAM's contrast).
        hessian_at: `(classes, score=None)` -> `(gradients, hvp)` at the
            target layer for the batch, float32 channels-last: `∂S/∂A` and
            the Hessian-vector product `∇²_A S · A` (ShapleyCAM); `score` as
            for `gradients_at`.
        model: the explained model, for methods that read layers other than
            the target (FullGrad, guided backpropagation, RefineCAM) through
            `score_inputs`.
        attention: for methods with `uses_attention`, a
            `keras_cam.core.attention.AttentionReader`: the attention
            probabilities of the model's blocks and their gradients.
    """

    inputs: Any
    input_channels_first: bool
    scores: Any
    score_inputs: Callable[[Any, Any], Any]
    score_ablated: Callable[[Any, Any, Any], Any]
    map_chunks: Callable[[Callable[[Any], Any], int, int], Any]
    gradients_at: Callable[..., tuple[Any, Any]] | None = None
    hessian_at: Callable[..., tuple[Any, Any]] | None = None
    model: Any = None
    attention: Any = None


class CAMMethod:
    """Base class of a CAM method.

    Subclasses set `name` (the registry key), `description` (one line for
    `available_methods()`), `paper` (a short citation with its venue or
    arXiv id) and `cost` (what one call costs, in forward and backward
    passes, for `keras-cam methods` and the docs), and override
    `channel_weights`, `weighted_activations` or `cam`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    paper: ClassVar[str] = ""
    cost: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    # Whether the method reads the `Forward` (the model input, extra forward passes).
    uses_forward: ClassVar[bool] = False
    # Whether the method reads the attention probabilities of a transformer's blocks.
    uses_attention: ClassVar[bool] = False
    # Whether its map is a sum of per-channel contributions at the target layer, which
    # `eigen_smooth` replaces by their first principal component.
    has_channel_contributions: ClassVar[bool] = True

    def prepare(self, split: LayerSplit) -> None:
        """Checks the model structure once, when the explainer is built.

        Raises `ValueError` naming the problem when the method cannot explain
        the model (e.g. CAM on a head that is not GAP→Dense).
        """

    def prepare_attention(self, layers: Any) -> None:
        """Checks the model's attention layers once (methods with `uses_attention`).

        `layers` is the model's `keras_cam.core.attention.AttentionLayers`.
        """

    def channel_weights(
        self, activations: Any, gradients: Any, classes: Any, forward: Forward | None = None
    ) -> Any:
        """Returns one weight per channel and image, shape (N, 1, 1, C) (a 1 per spatial axis)."""
        raise NotImplementedError(
            f"{type(self).__name__} defines none of channel_weights, weighted_activations, cam"
        )

    def weighted_activations(
        self, activations: Any, gradients: Any, classes: Any, forward: Forward | None = None
    ) -> Any:
        """Returns the per-channel contributions (N, h, w, C) whose sum is the map."""
        return self.channel_weights(activations, gradients, classes, forward) * activations

    def cam(
        self, activations: Any, gradients: Any, classes: Any, forward: Forward | None = None
    ) -> Any:
        """Returns the map before ReLU, shape (N, h, w)."""
        return ops.sum(self.weighted_activations(activations, gradients, classes, forward), -1)


def safe_divide(numerator: Any, denominator: Any) -> Any:
    """`numerator / denominator`, and 0 where the denominator is 0 (not NaN or inf)."""
    nonzero = denominator != 0
    return ops.where(nonzero, numerator / ops.where(nonzero, denominator, 1.0), 0.0)
