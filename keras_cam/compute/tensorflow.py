"""Activations and gradients under the TensorFlow backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from keras_cam.core import interrupts


def is_tracing() -> bool:
    """The explainer's function body runs only while `tf.function` traces it."""
    return True


def compile_function(fn: Callable[..., Any], model: Any = None) -> Callable[..., Any]:
    """Traces `fn` into a graph once per input shape; variables are read at each call.

    One compiled function per explainer, by design. TensorFlow counts traces per
    Python code object, which every explainer's function shares: a script that
    builds several explainers (methods, layers) prints "5 out of the last 6
    calls ... triggered tf.function retracing". Each explainer still traces once.
    """
    # Errors of the traced call become KeyboardInterrupt where one was raised inside
    # (a chunk hook's `tf.numpy_function` hands it back as a TensorFlow error).
    return interrupts.interruptible(tf.function(fn))


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


def differentiable_gradients(
    head: Callable[..., Any], activations: Any, score_fn: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """`(outputs, d sum(score_fn(outputs)) / d activations)`, itself differentiable.

    The inner tape watches only the activations; the training step's outer
    tape records its gradient computation, so the loss built from it
    backpropagates into the weights (double backprop).
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(activations)
        outputs = head(activations, training=False)
        total = tf.reduce_sum(score_fn(outputs))
    return outputs, tape.gradient(total, activations)


def map_sequential(fn: Callable[[Any], Any], count: int) -> Any:
    """Stacks `fn(i)` for `i` in `range(count)`, one iteration at a time.

    One iteration at a time (not the while loop's default 10) keeps the
    memory of a large perturbation batch bounded.
    """
    return tf.map_fn(fn, tf.range(count), parallel_iterations=1, fn_output_signature=tf.float32)


def after_chunk(callback: Callable[[int], None], index: Any, value: Any) -> Any:
    """`value`, once `callback(index)` has run on the host after `value` was computed.

    A stateful `tf.numpy_function` inside the traced loop: it runs at every
    iteration of every call, and the graph is traced once.
    """

    @interrupts.host_hook
    def call(i: Any, _: Any) -> np.ndarray:
        callback(int(i))
        return np.int32(0)

    done = tf.numpy_function(call, [index, value], tf.int32, stateful=True)
    with tf.control_dependencies([done]):
        return tf.identity(value)


def probe_gradients(
    run: Callable[[Any, list[Any]], tuple[list[Any], Any]],
    x: Any,
    score_fn: Callable[[Any], Any],
    zeros: list[Any],
) -> tuple[list[Any], list[Any], Any]:
    """`run(x, zeros)` -> (captured, outputs), and d sum(score) / d each of `zeros`."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(zeros)
        captured, outputs = run(x, zeros)
        total = tf.reduce_sum(score_fn(outputs))
    gradients = tape.gradient(total, zeros, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return captured, gradients, outputs


def gradient_and_hvp(fn: Callable[[Any], Any], point: Any, vector: Any) -> tuple[Any, Any]:
    """`(∇fn(point), ∇²fn(point) · vector)` of a scalar `fn`, by double backprop.

    The outer tape differentiates `⟨∇fn, vector⟩` (the vector held constant),
    which is the Hessian-vector product; nothing reaches the weights.
    """
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(point)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(point)
            total = fn(point)
        gradient = inner.gradient(total, point, unconnected_gradients=zero)
        product = tf.reduce_sum(gradient * tf.stop_gradient(tf.cast(vector, gradient.dtype)))
    return gradient, outer.gradient(product, point, unconnected_gradients=zero)


def probe_gradients_each(
    run: Callable[[Any, list[Any]], tuple[list[Any], Any]],
    x: Any,
    score_fns: list[Callable[[Any], Any]],
    zeros: list[Any],
) -> tuple[list[Any], list[Any], Any]:
    """`run(x, zeros)` -> (captured, outputs), and d sum(score_fns[i]) / d zeros[i] for each i.

    One forward pass on a persistent tape, one backward pass per score.
    """
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch(zeros)
        captured, outputs = run(x, zeros)
        totals = [tf.reduce_sum(score_fn(outputs)) for score_fn in score_fns]
    gradients = [
        tape.gradient(total, zero, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        for total, zero in zip(totals, zeros, strict=True)
    ]
    del tape
    return captured, gradients, outputs


def call_once(fn: Callable[..., Any], model: Any, *args: Any) -> Any:
    """`fn(*args)` run once, eagerly: one eager pass costs less than tracing a graph."""
    return fn(*args)
