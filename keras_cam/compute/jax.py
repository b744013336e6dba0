"""Activations and gradients under the JAX backend.

A jitted function that closed over the model would keep the weights it saw
when traced. The compiled function therefore takes the current values of the
model's variables as an argument and reads them through a
`keras.StatelessScope`, so one compilation serves a whole training run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras

from keras_cam.core import interrupts


def is_tracing() -> bool:
    """The explainer's function body runs only while JAX traces it."""
    return True


def compile_function(fn: Callable[..., Any], model: keras.Model) -> Callable[..., Any]:
    """`jax.jit` of `fn`, with the model's variables passed in at every call."""
    variables = list(model.variables)

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn(*args)

    jitted = jax.jit(stateless)

    @interrupts.interruptible  # a host hook's KeyboardInterrupt comes back as a JAX error
    def call(*args):
        return jitted([variable.value for variable in variables], *args)

    return call


def activations_and_gradients(
    features: Callable[..., Any],
    head: Callable[..., Any],
    x: Any,
    score_fn: Callable[[Any], Any],
    need_gradients: bool,
) -> tuple[Any, Any, Any]:
    activations = features(x, training=False)
    if not need_gradients:
        return activations, None, head(activations, training=False)

    def total(a):
        outputs = head(a, training=False)
        return jnp.sum(score_fn(outputs)), outputs

    # The variables are constants here: the gradient is taken with respect to the
    # activations only.
    (_, outputs), gradients = jax.value_and_grad(total, has_aux=True)(activations)
    return activations, gradients, outputs


def differentiable_gradients(
    head: Callable[..., Any], activations: Any, score_fn: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """`(outputs, d sum(score_fn(outputs)) / d activations)`, itself differentiable.

    Inside the trainer's `jax.grad` the variables are tracers of the outer
    transformation; the inner `jax.grad` closes over them, so the outer one
    differentiates through it (double backprop).
    """

    def total(a):
        outputs = head(a, training=False)
        return jnp.sum(score_fn(outputs)), outputs

    (_, outputs), gradients = jax.value_and_grad(total, has_aux=True)(activations)
    return outputs, gradients


def map_sequential(fn: Callable[[Any], Any], count: int) -> Any:
    """Stacks `fn(i)` for `i` in `range(count)`, one iteration at a time (`lax.map`)."""
    return jax.lax.map(fn, jnp.arange(count))


def after_chunk(callback: Callable[[int], None], index: Any, value: Any) -> Any:
    """`value`, with `callback(index)` run on the host once `value` is computed.

    `jax.debug.callback` inside the jitted loop: it runs at every iteration of
    every call without retracing; passing `value` makes it wait for the chunk.
    """
    jax.debug.callback(interrupts.host_hook(lambda i, _: callback(int(i))), index, value)
    return value


def probe_gradients(
    run: Callable[[Any, list[Any]], tuple[list[Any], Any]],
    x: Any,
    score_fn: Callable[[Any], Any],
    zeros: list[Any],
) -> tuple[list[Any], list[Any], Any]:
    """`run(x, zeros)` -> (captured, outputs), and d sum(score) / d each of `zeros`."""

    def total(zeros):
        captured, outputs = run(x, zeros)
        return jnp.sum(score_fn(outputs)), (captured, outputs)

    (_, (captured, outputs)), gradients = jax.value_and_grad(total, has_aux=True)(zeros)
    return captured, gradients, outputs


def gradient_and_hvp(fn: Callable[[Any], Any], point: Any, vector: Any) -> tuple[Any, Any]:
    """`(∇fn(point), ∇²fn(point) · vector)` of a scalar `fn`: `jvp` of `grad`."""
    return jax.jvp(jax.grad(fn), (point,), (jnp.asarray(vector, point.dtype),))


def probe_gradients_each(
    run: Callable[[Any, list[Any]], tuple[list[Any], Any]],
    x: Any,
    score_fns: list[Callable[[Any], Any]],
    zeros: list[Any],
) -> tuple[list[Any], list[Any], Any]:
    """`run(x, zeros)` -> (captured, outputs), and d sum(score_fns[i]) / d zeros[i] for each i.

    One `jax.vjp` (one forward pass), pulled back once per score.
    """

    def totals(zeros):
        captured, outputs = run(x, zeros)
        return [jnp.sum(score_fn(outputs)) for score_fn in score_fns], (captured, outputs)

    sums, pull_back, (captured, outputs) = jax.vjp(totals, zeros, has_aux=True)
    gradients = []
    for i in range(len(score_fns)):
        seeds = [jnp.ones_like(s) if j == i else jnp.zeros_like(s) for j, s in enumerate(sums)]
        (each,) = pull_back(seeds)
        gradients.append(each[i])
    return captured, gradients, outputs


def call_once(fn: Callable[..., Any], model: keras.Model, *args: Any) -> Any:
    """`fn(*args)` run once, jitted: eager JAX dispatches (and compiles) op by op."""
    return compile_function(fn, model)(*args)
