"""CAM-guided fine-tuning: a loss term that keeps the Grad-CAM map on the object.

The model is trained to be right for the right reasons by penalising its
explanation where a person said the evidence is not. Ross, Hughes and
Doshi-Velez ("Right for the Right Reasons: Training Differentiable Models by
Constraining their Explanations", IJCAI 2017) penalise the input gradient
of the log-probabilities in annotated irrelevant regions, `λ Σ (A ⊙ ∂/∂x Σ_k
log p_k)²`; GradMask (Simpson, Dutil, Bengio and Cohen, "GradMask: Reduce
Overfitting by Regularizing Saliency", MIDL 2019) penalises the saliency
outside lesion masks; Rieger, Singh, Murdoch and Yu ("Interpretations are
Useful: Penalizing Explanations to Align Neural Networks with Prior
Knowledge", ICML 2020, CDEP) penalise contextual-decomposition importance
of the masked-out features; Schramowski et al. ("Making deep neural networks
right for the right scientific reasons by interacting with their
explanations", Nature Machine Intelligence 2020) apply the RRR penalty to
Grad-CAM maps. This module does what the last does, with the explanation
the callback monitors and in the same units as its `energy_in_mask`:

    L = CE(y, f(x)) + λ · mean_{annotated i} [1 − Σ_{hw} (1 − M̄ᵢ) · ReLU(Sᵢ) / (Σ_{hw} |Sᵢ| + ε)]

where `Sᵢ = Σ_c α_c A_c` is the signed Grad-CAM map of image i's true
class at the target layer (`α_c` the spatial mean of `∂y_c/∂A_c`, `y_c` the
logit; Grad-CAM is `ReLU(Sᵢ)`), `M̄ᵢ` the share of each map cell outside the
object mask, and the mean runs over the images of the batch that have a
mask. For a map without negative parts the term is the share of its energy
outside the object, `1 − energy_in_mask` at the layer's resolution. Dividing
by the signed map's whole mass matters: with `Σ ReLU(S)` instead, a model
can lower the term by driving its map to zero everywhere (it did, in the
shortcut example), which hides the evidence instead of moving it. The term
is scale-free, so λ weighs it against the cross-entropy directly. The same
term guides a `Conv1D` sequence model or a `Conv3D` volume model: the sums
run over the map's t or d·h·w cells, and the masks are (N, T) or (N, D, H, W).

Because `α_c` is itself a gradient, the loss needs a second-order gradient
(double backprop through the target layer's gradient); `keras_cam.compute`
provides it per backend, inside the compiled train step.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_cam import scores as _scores
from keras_cam.compute import backend_module
from keras_cam.explainer import _float32_channels_last
from keras_cam.layers import split_model
from keras_cam.spatial import map_axes, spatial_axes

IMAGES = "images"
MASKS = "masks"
_EPSILON = 1e-7
# Per spatial rank of the target layer's map: what it is, and the masks' layout.
_MASK_KINDS = {
    1: ("a sequence model", "(N, T)"),
    2: ("an image model", "(N, H, W)"),
    3: ("a volume model", "(N, D, H, W)"),
}


def _size_text(size: tuple[int, ...]) -> str:
    return "×".join(str(length) for length in size)


def _cell_share_outside(masks: Any, map_size: tuple[int, ...]) -> Any:
    """(N, *S) masks -> (N, *s): the share of each map cell outside the object.

    `map_size` is the map's spatial size `s` (1, 2 or 3 axes); each mask axis
    must be a multiple of the map's, and a trailing channel axis of 1 is dropped.
    """
    rank = len(map_size)
    masks = ops.cast(masks, "float32")
    if len(masks.shape) == rank + 2 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    kind, layout = _MASK_KINDS[rank]
    if len(masks.shape) != rank + 1:
        given = ", ".join(["N", *(str(length) for length in masks.shape[1:])])
        raise ValueError(
            f"The target layer's map has {rank} spatial axis(es) ({kind}), so the masks must "
            f"be {layout} with one mask per input; got masks of shape ({given})."
        )
    mask_size = tuple(masks.shape[1:])
    if any(mask % cell for mask, cell in zip(mask_size, map_size, strict=True)):
        raise ValueError(
            f"The masks are {_size_text(mask_size)} but the target layer's map is "
            f"{_size_text(map_size)}; give masks at the input size, a multiple of the map's."
        )
    factors = tuple(mask // cell for mask, cell in zip(mask_size, map_size, strict=True))
    pooled = ops.average_pool(masks[..., None], factors, strides=factors, padding="valid")
    return 1.0 - pooled[..., 0]


def energy_outside_mask(activations: Any, gradients: Any, masks: Any) -> Any:
    """Per-image share of the Grad-CAM map's energy outside the masks, (N,).

    Args:
        activations: (N, *s, C) target-layer activations, channels last, with
            one spatial axis (a sequence model's (N, t, C)), two (N, h, w, C)
            or three (a volume model's (N, d, h, w, C)).
        gradients: class-score gradients with respect to them, same shape.
        masks: (N, *S) object masks (bool or float) with the activations'
            spatial axes: (N, T), (N, H, W) or (N, D, H, W), each a multiple
            of the map's.

    Returns:
        `1 − Σ (1 − M̄) · ReLU(S) / (Σ |S| + ε)` per image, `S` the signed
        Grad-CAM map: in [0, 1], 1 for a map that is zero or negative
        everywhere; equal to `Σ M̄ · C / Σ C` when the map has no negative part.

    Example:

    >>> a = keras.ops.ones((1, 2, 2, 1)); g = keras.ops.ones((1, 2, 2, 1))
    >>> m = keras.ops.convert_to_tensor([[[1.0, 0.0], [0.0, 0.0]]])
    >>> round(float(energy_outside_mask(a, g, m)[0]), 4)
    0.75
    """
    weights = ops.mean(gradients, axis=spatial_axes(gradients), keepdims=True)
    signed = ops.sum(weights * activations, axis=-1)
    inside = 1.0 - _cell_share_outside(masks, tuple(signed.shape[1:]))
    axes = map_axes(signed)
    # The denominator is the signed map's whole mass, not only its positive part: a map
    # driven to zero or below everywhere then scores 1 (nothing on the object), so the
    # model cannot lower the term by erasing its evidence instead of moving it.
    evidence = ops.sum(ops.abs(signed), axis=axes) + _EPSILON
    return 1.0 - ops.sum(ops.relu(signed) * inside, axis=axes) / evidence


def _class_ids(y: Any, classes: int) -> Any:
    if len(y.shape) >= 2 and y.shape[-1] == classes and classes > 1:  # one-hot
        return ops.cast(ops.argmax(y, axis=-1), "int32")
    return ops.cast(ops.reshape(y, (-1,)), "int32")


class CAMGuidedModel(keras.Model):
    """Trains `model` with a penalty on its Grad-CAM energy outside object masks.

    A thin wrapper: its variables are `model`'s, so after `fit` the wrapped
    model holds the fine-tuned weights (save or use `model` itself). Feed it
    a dict `{"images": x, "masks": m}` with one (H, W) mask per image (a
    `Conv1D` sequence model: one (T,) mask per sequence; a `Conv3D` volume
    model: one (D, H, W) mask per volume; the key stays `"images"`); an
    all-zero mask means "no annotation" and that image gets the plain loss
    only, so masks for a fraction of the training set are enough. Plain
    images (no dict) train and evaluate without the penalty. The penalty
    (before λ) is reported as the metric `cam_guidance`.

    The term is added in `compute_loss`, so it runs inside the compiled train
    step of every backend (TensorFlow's `tf.function`, JAX's jitted stateless
    step, PyTorch's autograd) with the user's optimizer, metrics,
    callbacks unchanged (distribution strategies are not tested). Cost per step: one more
    forward pass up to the target layer (in inference mode, so BatchNorm
    statistics are not updated twice) and through the head, the head's
    backward pass kept as a graph, and the backward pass of all that: about
    2× an unguided step on the demo model, CPU (`benchmarks/bench_guidance.py`).
    The penalty is computed whenever masks are fed, also with `weight=0`.

    Args:
        model: a built Keras classifier (functional or Sequential) of images,
            sequences or volumes.
        layer: target layer name or `/`-path, as in `CAMExplainer`.
            Defaults to `None` (automatic).
        weight: λ, the weight of the penalty against the model's loss.
            Defaults to `1.0`.

    Example:

    >>> guided = keras_cam.CAMGuidedModel(model, layer="last_conv", weight=1.0)  # doctest: +SKIP
    >>> guided.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ... # doctest: +SKIP
    >>> masks[~annotated] = False    # only some images have a mask     # doctest: +SKIP
    >>> guided.fit({"images": x, "masks": masks}, y, epochs=5)          # doctest: +SKIP
    >>> model.save("fine_tuned.keras")  # the wrapped model has the weights # doctest: +SKIP
    """

    def __init__(
        self,
        model: keras.Model,
        layer: str | None = None,
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or f"{model.name}_cam_guided")
        if not model.built:
            raise ValueError(
                "Build the model (call it once or give it an Input) before guiding it."
            )
        if weight < 0:
            raise ValueError(f"weight (λ) must be >= 0, got {weight}.")
        self.model = model
        self.weight = float(weight)
        self._split = split_model(model, layer)
        self._compute = backend_module()
        self._guidance = keras.metrics.Mean(name="cam_guidance")

    @property
    def layer(self) -> str:
        """`/`-path of the target layer."""
        return self._split.path

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        images = inputs[IMAGES] if isinstance(inputs, dict) else inputs
        return self.model(images, training=training)

    def guidance_loss(self, images: Any, masks: Any, y: Any) -> tuple[Any, Any]:
        """Mean share of the true class's map energy outside the masks over the
        annotated images, and how many images had a mask."""
        split = self._split
        classes = _class_ids(y, self.model.outputs[0].shape[-1])
        activations = split.features(images, training=False)
        # The logit, not the probability, as the callback's default score; the head's
        # softmax/sigmoid is skipped while this part of the step is traced.
        with _scores.linear_output(_scores.head_layer(self.model.outputs[0]) or split.output_layer):
            _, gradients = self._compute.differentiable_gradients(
                split.head,
                activations,
                lambda outputs: _scores.class_scores(ops.cast(outputs, "float32"), classes),
            )
        outside = energy_outside_mask(
            _float32_channels_last(activations, split.channels_first),
            _float32_channels_last(gradients, split.channels_first),
            masks,
        )
        axes = tuple(range(1, len(masks.shape)))
        annotated = ops.cast(ops.max(ops.cast(masks, "float32"), axis=axes) > 0, "float32")
        count = ops.sum(annotated)
        return ops.sum(outside * annotated) / ops.maximum(count, 1.0), count

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not (isinstance(x, dict) and MASKS in x) or y is None:
            return loss
        penalty, count = self.guidance_loss(x[IMAGES], x[MASKS], y)
        self._guidance.update_state(penalty, sample_weight=ops.minimum(count, 1.0))
        return loss + ops.cast(self.weight * penalty, loss.dtype)
