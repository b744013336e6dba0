"""Activations and gradients under the TensorFlow backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def compile_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Traces `fn` into a graph once per input signature."""
    return tf.function(fn, reduce_retracing=True)


def activations_and_gradients(
    features: Callable[..., Any],
    head: Callable[..., Any],
    x: Any,
    score_fn: Callable[[Any], Any],
    need_gradients: bool,
) -> tuple[Any, Any, Any]:
    if not need_gradients:
        activations = features(x, training=False)
        return activations, None, head(activations, training=False)
    # Only the activations are watched: the backward pass stops at the target
    # layer and never reaches the weights.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        activations = features(x, training=False)
        tape.watch(activations)
        outputs = head(activations, training=False)
        total = tf.reduce_sum(score_fn(outputs))
    return activations, tape.gradient(total, activations), outputs
