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

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_cam.compute import backend_module
from keras_cam.core import scores as _scores
from keras_cam.core.layers import split_model
from keras_cam.core.spatial import float32_channels_last, map_axes, spatial_axes
from keras_cam.diagnostics.metrics import binary_masks

IMAGES = "images"
MASKS = "masks"
PENALTIES = ("rrr", "gradcam")
# λ per penalty when `weight` is not given: the value the decoy benchmark
# (`benchmarks/bench_decoy.py`) found best for each.
DEFAULT_WEIGHTS = {"rrr": 100.0, "gradcam": 1.0}
_EPSILON = 1e-7
# Per spatial rank of the target layer's map: what it is, and the masks' layout.
_MASK_KINDS = {
    1: ("a sequence model", "(N, T)"),
    2: ("an image model", "(N, H, W)"),
    3: ("a volume model", "(N, D, H, W)"),
}


def _size_text(size: tuple[int, ...]) -> str:
    return "×".join(str(length) for length in size)


def _area_matrix(source: int, target: int) -> np.ndarray:
    """(source, target) weights resizing one axis by area: each target cell is the mean
    of the source positions it covers, a position cut by a cell edge counted by the
    share of it that lies inside (32 → 30: cells of 16/15 positions)."""
    edges = np.arange(target + 1) * source / target
    positions = np.arange(source)
    low = np.maximum(positions[:, None], edges[None, :-1])
    high = np.minimum(positions[:, None] + 1, edges[None, 1:])
    return (np.maximum(high - low, 0.0) * target / source).astype("float32")


def _tensor_masks(masks: Any) -> Any:
    """The `binary_masks` rule on a tensor inside the train step, as float32 0/1.

    Values cannot be refused there (the check runs on arrays before `fit`), but
    the threshold is the same, so a mask outside the rule fed through a dataset
    still gives a penalty in its documented range.
    """
    dtype = keras.backend.standardize_dtype(masks.dtype)
    if dtype == "bool":
        return ops.cast(masks, "float32")
    if "int" in dtype:
        return ops.cast(masks > 0, "float32")
    return ops.cast(ops.cast(masks, "float32") >= 0.5, "float32")


def _drop_channel(masks: Any, rank: int) -> Any:
    if len(masks.shape) == rank + 2 and masks.shape[-1] == 1:
        return masks[..., 0]
    return masks


def _check_rank(masks: Any, rank: int) -> None:
    kind, layout = _MASK_KINDS[rank]
    if len(masks.shape) != rank + 1:
        given = ", ".join(["N", *(str(length) for length in masks.shape[1:])])
        raise ValueError(
            f"The target layer's map has {rank} spatial axis(es) ({kind}), so the masks must "
            f"be {layout} with one mask per input; got masks of shape ({given})."
        )


def _cell_share_outside(
    masks: Any, map_size: tuple[int, ...], input_size: tuple[int | None, ...] | None = None
) -> Any:
    """(N, *S) masks -> (N, *s): the share of each map cell outside the object.

    `map_size` is the map's spatial size `s` (1, 2 or 3 axes). The masks are
    at the input size `input_size` (any, when None or unknown) or at the map's;
    they are binarised by the `binary_masks` rule and resized to the map by
    area, so a map that does not divide the input (a `valid` convolution,
    32 → 30) gets each cell's exact share. A trailing channel axis of 1 is
    dropped.
    """
    rank = len(map_size)
    masks = _drop_channel(masks, rank)
    _check_rank(masks, rank)
    masks = _tensor_masks(masks)
    mask_size = tuple(masks.shape[1:])
    known = input_size is not None and None not in input_size and len(input_size) == rank
    if known and mask_size not in (tuple(input_size), tuple(map_size)):
        raise ValueError(
            f"The masks are {_size_text(mask_size)} but the model's input is "
            f"{_size_text(tuple(input_size))} (its target layer's map "
            f"{_size_text(map_size)}); give masks at the input size."
        )
    for source, target in zip(mask_size, map_size, strict=True):
        # Contracting axis 1 each time appends the resized axis at the end: after
        # `rank` steps the axes are back in order.
        masks = ops.tensordot(
            masks, ops.convert_to_tensor(_area_matrix(source, target)), [[1], [0]]
        )
    return 1.0 - masks


def energy_outside_mask(
    activations: Any,
    gradients: Any,
    masks: Any,
    input_size: tuple[int | None, ...] | None = None,
) -> Any:
    """Per-image share of the Grad-CAM map's energy outside the masks, (N,).

    Args:
        activations: (N, *s, C) target-layer activations, channels last, with
            one spatial axis (a sequence model's (N, t, C)), two (N, h, w, C)
            or three (a volume model's (N, d, h, w, C)).
        gradients: class-score gradients with respect to them, same shape.
        masks: (N, *S) object masks (`binary_masks` rule) with the
            activations' spatial axes: (N, T), (N, H, W) or (N, D, H, W), at
            the input size (resized to the map by area) or at the map's.
        input_size: the model's input spatial size, to check the masks'
            against. Defaults to `None` (any size).

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
    inside = 1.0 - _cell_share_outside(masks, tuple(signed.shape[1:]), input_size)
    axes = map_axes(signed)
    # The denominator is the signed map's whole mass, not only its positive part: a map
    # driven to zero or below everywhere then scores 1 (nothing on the object), so the
    # model cannot lower the term by erasing its evidence instead of moving it.
    evidence = ops.sum(ops.abs(signed), axis=axes) + _EPSILON
    return 1.0 - ops.sum(ops.relu(signed) * inside, axis=axes) / evidence


def input_gradient_outside_mask(gradients: Any, masks: Any, scale: Any = 1.0) -> Any:
    """Per-image RRR penalty: the squared input gradient outside the masks, (N,).

    Ross, Hughes and Doshi-Velez (IJCAI 2017): `Σ_{pixels, channels} ((1 − M) ·
    s · ∂(Σ_k log p_k)/∂x)²`. `s` rescales the gradient to a unit of the
    inputs' spread, so the same λ serves images fed in [0, 1] or [0, 255].

    Args:
        gradients: (N, *S, C) gradients of the summed log-probabilities with
            respect to the inputs, channels last.
        masks: (N, *S) object masks at the input size (`binary_masks` rule).
        scale: `s`, a scalar. Defaults to `1.0`.

    Returns:
        The penalty per image, ≥ 0; 0 when no gradient leaves the masks.

    Example:

    >>> g = keras.ops.ones((1, 2, 2, 3))
    >>> m = keras.ops.convert_to_tensor([[[1.0, 0.0], [0.0, 0.0]]])
    >>> float(input_gradient_outside_mask(g, m)[0])
    9.0
    """
    rank = len(gradients.shape) - 2
    masks = _drop_channel(masks, rank)
    _check_rank(masks, rank)
    if tuple(masks.shape[1:]) != tuple(gradients.shape[1:-1]):
        raise ValueError(
            f"The masks are {_size_text(tuple(masks.shape[1:]))} but the inputs are "
            f"{_size_text(tuple(gradients.shape[1:-1]))}; the input-gradient penalty needs "
            f"masks at the input size."
        )
    outside = (1.0 - _tensor_masks(masks))[..., None]
    return ops.sum(ops.square(outside * gradients * scale), axis=tuple(range(1, rank + 2)))


def _class_ids(y: Any, classes: int) -> Any:
    if len(y.shape) >= 2 and y.shape[-1] == classes and classes > 1:  # one-hot
        return ops.cast(ops.argmax(y, axis=-1), "int32")
    return ops.cast(ops.reshape(y, (-1,)), "int32")


def _log_probabilities(logits: Any) -> Any:
    """log p_k of each class from the head's logits (sigmoid: both outcomes of one unit)."""
    logits = ops.cast(logits, "float32")
    if logits.shape[-1] == 1:
        return ops.concatenate([ops.log_sigmoid(logits), ops.log_sigmoid(-logits)], axis=-1)
    return ops.log_softmax(logits, axis=-1)


def _checked_masks(x: Any) -> Any:
    """`x` with its masks checked and binarised on the host, before any training work."""
    if not (isinstance(x, dict) and MASKS in x):
        return x
    masks = x[MASKS]
    if isinstance(masks, np.ndarray) or keras.ops.is_tensor(masks):
        x = {**x, MASKS: binary_masks(masks).astype("float32")}
    return x


class CAMGuidedModel(keras.Model):
    """Trains `model` with a penalty on its explanation outside object masks.

    A thin wrapper: its variables are `model`'s, so after `fit` the wrapped
    model holds the fine-tuned weights (save or use `model` itself;
    `save_weights`/`load_weights` of the wrapper also work). Feed it a dict
    `{"images": x, "masks": m}` with one (H, W) mask per image, at the input
    size (a `Conv1D` sequence model: one (T,) mask per sequence; a `Conv3D`
    volume model: one (D, H, W) mask per volume; the key stays `"images"`).
    Masks follow `keras_cam.diagnostics.metrics.binary_masks` (booleans; integers 0/1 or
    0/255; floats in [0, 1] thresholded at 0.5), checked before training
    when given as arrays. An all-zero mask means "no annotation" and that
    image gets the plain loss only, so masks for a fraction of the training
    set are enough. Plain images (no dict) train and evaluate without the
    penalty. The penalty (before λ) is reported as the metric `cam_guidance`.

    Two penalties:

    - `"rrr"` (the default), "right for the right reasons" (Ross et al.,
      IJCAI 2017): the squared input gradient of the summed log-probabilities
      outside the mask, `input_gradient_outside_mask`. It constrains the
      decision itself, so the model cannot satisfy it by moving a picture:
      on the decoy benchmark it recovers the decoy-free accuracy.
    - `"gradcam"`: the share of the true class's Grad-CAM energy outside the
      mask at `layer` (`energy_outside_mask`), in the units of the callback's
      `energy_in_mask`; with a list of layers, the mean over them. It moves
      the map, but a model can satisfy it and keep its shortcut (Heo et al.,
      NeurIPS 2019): see the README's benchmark.

    The term is added in `compute_loss`, so it runs inside the compiled train
    step of every backend (TensorFlow's `tf.function`, JAX's jitted stateless
    step, PyTorch's autograd) with the user's optimizer, metrics, callbacks
    unchanged (distribution strategies are not tested). Both need a
    second-order gradient (double backprop): `"rrr"` through the whole
    model's input gradient, `"gradcam"` through each target layer's; the
    extra forward passes run in inference mode, so BatchNorm statistics are
    not updated twice. Costs per step: `benchmarks/bench_guidance.py`.
    The penalty is computed whenever masks are fed, also with `weight=0`.

    Args:
        model: a built Keras classifier (functional or Sequential) of images,
            sequences or volumes.
        layer: target layer name or `/`-path, as in `CAMExplainer`, or a list
            of them (`"gradcam"` only). Defaults to `None` (automatic).
        weight: λ, the weight of the penalty against the model's loss, finite
            and >= 0. Defaults to `None`: 100 for `"rrr"`, 1 for `"gradcam"`.
        penalty: `"rrr"` or `"gradcam"`. Defaults to `"rrr"`.
        name: the wrapper's name. Defaults to `None` (`<model>_cam_guided`).

    Example:

    >>> guided = keras_cam.CAMGuidedModel(model)                        # doctest: +SKIP
    >>> guided.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ... # doctest: +SKIP
    >>> masks[~annotated] = False    # only some images have a mask     # doctest: +SKIP
    >>> guided.fit({"images": x, "masks": masks}, y, epochs=5)          # doctest: +SKIP
    >>> model.save("fine_tuned.keras")  # the wrapped model has the weights # doctest: +SKIP
    """

    def __init__(
        self,
        model: keras.Model,
        layer: str | Sequence[str] | None = None,
        weight: float | None = None,
        penalty: str = "rrr",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or f"{model.name}_cam_guided")
        if not model.built:
            raise ValueError(
                "Build the model (call it once or give it an Input) before guiding it."
            )
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}.")
        weight = DEFAULT_WEIGHTS[penalty] if weight is None else weight
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight (λ) must be a finite number >= 0, got {weight!r}.")
        layers = [layer] if layer is None or isinstance(layer, str) else list(layer)
        if not layers:
            raise ValueError("layer= is an empty list; give at least one layer, or None.")
        self.model = model
        self.weight = float(weight)
        self.penalty = penalty
        self._splits = [split_model(model, name) for name in layers]
        self._split = self._splits[0]
        self._compute = backend_module()
        self._guidance = keras.metrics.Mean(name="cam_guidance")
        # Its variables are the built model's: built too, so `load_weights` works on a
        # fresh wrapper before any call.
        self.built = True

    @property
    def layer(self) -> str:
        """`/`-path of the (first) target layer."""
        return self._split.path

    @property
    def layers_guided(self) -> tuple[str, ...]:
        """`/`-paths of every target layer of the `"gradcam"` penalty."""
        return tuple(split.path for split in self._splits)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        images = inputs[IMAGES] if isinstance(inputs, dict) else inputs
        return self.model(images, training=training)

    def _input_size(self) -> tuple[int | None, ...]:
        shape = tuple(self.model.inputs[0].shape)
        return shape[2:] if self._split.channels_first else shape[1:-1]

    def _gradcam_outside(self, split: Any, images: Any, masks: Any, classes: Any) -> Any:
        activations = split.features(images, training=False)
        # The logit, not the probability, as the callback's default score; the head's
        # softmax/sigmoid is skipped while this part of the step is traced.
        with _scores.linear_output(_scores.head_layer(self.model.outputs[0]) or split.output_layer):
            _, gradients = self._compute.differentiable_gradients(
                split.head,
                activations,
                lambda outputs: _scores.class_scores(ops.cast(outputs, "float32"), classes),
            )
        return energy_outside_mask(
            float32_channels_last(activations, split.channels_first),
            float32_channels_last(gradients, split.channels_first),
            masks,
            self._input_size(),
        )

    def _rrr(self, images: Any, masks: Any) -> Any:
        images = ops.cast(images, "float32")
        with _scores.linear_output(self._split.output_layer):
            _, gradients = self._compute.differentiable_gradients(
                self.model, images, _log_probabilities
            )
        # One unit of the inputs' spread, a constant of the batch: λ does not depend on
        # whether the images are fed in [0, 1] or [0, 255].
        scale = ops.stop_gradient(ops.std(images))
        return input_gradient_outside_mask(
            float32_channels_last(gradients, self._split.channels_first), masks, scale
        )

    def guidance_loss(self, images: Any, masks: Any, y: Any) -> tuple[Any, Any]:
        """The penalty's mean over the annotated images, and how many images had a mask."""
        if self.penalty == "rrr":
            per_image = self._rrr(images, masks)
        else:
            classes = _class_ids(y, self.model.outputs[0].shape[-1])
            per_image = ops.mean(
                ops.stack([self._gradcam_outside(s, images, masks, classes) for s in self._splits]),
                axis=0,
            )
        binary = _tensor_masks(masks)
        axes = tuple(range(1, len(masks.shape)))
        annotated = ops.cast(ops.max(binary, axis=axes) > 0, "float32")
        count = ops.sum(annotated)
        return ops.sum(per_image * annotated) / ops.maximum(count, 1.0), count

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

    def _forget_compiled_steps(self) -> None:
        # A step whose first trace failed (TensorFlow) keeps the variables it created
        # and refuses to create them again on its next call: start a fresh one.
        self.train_function = self.test_function = self.predict_function = None

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, the masks checked first (`binary_masks`)."""
        x = _checked_masks(x)
        validation = kwargs.get("validation_data")
        if isinstance(validation, tuple) and validation:
            kwargs["validation_data"] = (_checked_masks(validation[0]), *validation[1:])
        try:
            return super().fit(x, y, *args, **kwargs)
        except Exception:
            self._forget_compiled_steps()
            raise

    def evaluate(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate`, the masks checked first (`binary_masks`)."""
        try:
            return super().evaluate(_checked_masks(x), y, *args, **kwargs)
        except Exception:
            self._forget_compiled_steps()
            raise

    def train_on_batch(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.train_on_batch`, the masks checked first (`binary_masks`)."""
        try:
            return super().train_on_batch(_checked_masks(x), y, *args, **kwargs)
        except Exception:
            self._forget_compiled_steps()
            raise

    def test_on_batch(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.test_on_batch`, the masks checked first (`binary_masks`)."""
        try:
            return super().test_on_batch(_checked_masks(x), y, *args, **kwargs)
        except Exception:
            self._forget_compiled_steps()
            raise
