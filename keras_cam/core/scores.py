"""What is differentiated and reported: the class score read off the model's output.

With `score="logit"` the gradient is taken of the pre-softmax/pre-sigmoid
value: probability gradients vanish once the model is confident, which is
exactly the state late in training. The user's model is not modified: the
output layer's activation is switched to linear only while the explainer's
function is traced, so the compiled graph reads logits and the user's model
is left exactly as it was.

The head's activation is looked for where users put it: on the output layer,
in an `Activation`/`Softmax` layer after a linear `Dense`, before layers that
only move values around (`Reshape`, `Flatten`, `Dropout`, ...), and inside a
nested model (a classifier wrapped in an outer `Model` for fine-tuning), so
that a wrapped classifier gives the same logit maps as the classifier itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

SCORES = ("logit", "probability")

# Layers that pass each value through unchanged at inference: a softmax/sigmoid
# before them is still the head's.
_PASS_THROUGH = (
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Identity,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
)


def _keeps_class_axis(before: Any, after: Any) -> bool:
    """Whether a reshape keeps the class axis: same last axis, other axes of size 1.

    A softmax over the last axis of `before` is then a softmax over the last
    axis of `after`; a reshape that regroups the values is not looked through.
    """

    def per_sample(tensor: Any) -> tuple:
        return tuple(tensor.shape[1:])

    shape_before, shape_after = per_sample(before), per_sample(after)
    if not shape_before or not shape_after or shape_before[-1] != shape_after[-1]:
        return False
    return all(size == 1 for size in (*shape_before[:-1], *shape_after[:-1]))


def _is_pass_through(layer: Any) -> bool:
    if isinstance(layer, _PASS_THROUGH):
        return True
    return type(layer) is keras.layers.Activation and layer.activation is keras.activations.linear


def head_layer(output: Any) -> keras.layers.Layer | None:
    """The layer that makes a model's (symbolic) `output` what it is: its head.

    Followed back through pass-through layers (`Reshape` and `Flatten` that
    keep the class axis, `Dropout`, `Identity`, a linear `Activation`) and
    into nested models, so that `Dense(softmax)` then `Reshape`, or a
    classifier wrapped in an outer `Model`, are found to end in a softmax.

    Args:
        output: a symbolic output tensor of a functional or Sequential model.

    Returns:
        The layer, or None when the tensor has no Keras history (an input).
    """
    tensor, found = output, None
    seen: set[int] = set()
    while id(tensor) not in seen:
        seen.add(id(tensor))
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return found
        layer = history.operation
        if isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            tensor = layer.outputs[history.tensor_index]
            continue
        found = layer
        if not _is_pass_through(layer):
            return layer
        nodes = getattr(layer, "_inbound_nodes", None) or ()
        if history.node_index >= len(nodes):
            return layer
        inputs = nodes[history.node_index].input_tensors
        if len(inputs) != 1 or not _keeps_class_axis(inputs[0], tensor):
            return layer
        tensor = inputs[0]
    return found


def output_activation(layer: keras.layers.Layer) -> str | None:
    """`"softmax"`, `"sigmoid"`, or None for a layer whose output is already a logit."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name if name in ("softmax", "sigmoid") else None


@contextlib.contextmanager
def linear_output(layer: keras.layers.Layer) -> Iterator[None]:
    """Makes `layer` skip its softmax/sigmoid for the duration of the block."""
    if output_activation(layer) is None:
        yield
        return
    if isinstance(layer, keras.layers.Softmax):
        layer.call = lambda inputs, mask=None: inputs
        try:
            yield
        finally:
            del layer.call
        return
    saved = layer.activation
    layer.activation = keras.activations.linear
    try:
        yield
    finally:
        layer.activation = saved


def confidence_activation(layer: keras.layers.Layer, units: int | None) -> str | None:
    """How the head's output becomes a probability: its own softmax/sigmoid, or, for a
    linear head (a `Dense(k)` trained `from_logits=True`), softmax over its k logits
    (sigmoid for one unit). None when the head layer is neither.

    Args:
        layer: the head layer (`head_layer`).
        units: the size of the output's last axis; None reads the layer's output.
    """
    own = output_activation(layer)
    if own is not None:
        return own
    if getattr(layer, "activation", None) is not keras.activations.linear:
        return None
    if units is None:
        units = layer.output.shape[-1]
    return "sigmoid" if units == 1 else "softmax"


def predicted_classes(outputs: Any, outputs_are_logits: bool) -> Any:
    """Argmax class per image; for a single-unit head, 1 when the unit fires."""
    if outputs.shape[-1] == 1:
        threshold = 0.0 if outputs_are_logits else 0.5
        return ops.cast(outputs[:, 0] > threshold, "int32")
    return ops.cast(ops.argmax(outputs, axis=-1), "int32")


def ranked_classes(outputs: Any, ranks: Any, outputs_are_logits: bool) -> Any:
    """The class of rank `ranks[i]` for each image: 0 the predicted class, 1 the runner-up, ..."""
    predicted = predicted_classes(outputs, outputs_are_logits)
    if outputs.shape[-1] == 1:
        return ops.where(ranks == 0, predicted, 1 - predicted)
    order = ops.cast(ops.top_k(outputs, outputs.shape[-1], sorted=True)[1], "int32")
    ranks = ops.minimum(ranks, outputs.shape[-1] - 1)
    runner_up = ops.take_along_axis(order, ranks[:, None], axis=-1)[:, 0]
    return ops.where(ranks == 0, predicted, runner_up)


def class_scores(outputs: Any, classes: Any) -> Any:
    """The output for each image's class (N,); a single unit scores class 0 as its negation."""
    if outputs.shape[-1] == 1:
        return ops.where(classes == 1, outputs[:, 0], -outputs[:, 0])
    return ops.take_along_axis(outputs, classes[:, None], axis=-1)[:, 0]


def reported_scores(outputs: Any, classes: Any, activation: str | None, are_logits: bool) -> Any:
    """The model's output for each image's class, as a probability where the head has one."""
    if activation is None or not are_logits:
        probabilities = outputs
    elif activation == "softmax":
        probabilities = ops.softmax(outputs, axis=-1)
    else:
        probabilities = ops.sigmoid(outputs)
    if outputs.shape[-1] == 1 and activation is not None:
        p = probabilities[:, 0]
        return ops.where(classes == 1, p, 1.0 - p)
    return class_scores(probabilities, classes)
