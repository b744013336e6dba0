"""Activations and gradients under the PyTorch backend.

PyTorch runs eagerly: the "compiled" function is the function itself, run
under `torch.no_grad()` with the model in eval mode (restored afterwards).
The one backward pass is `torch.autograd.grad` of the score with respect to
the target layer's activations, so no weight's `.grad` is touched.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import keras
import torch

_REPLAYING = contextvars.ContextVar("keras_cam_replaying", default=False)


def is_tracing() -> bool:
    """True during a compiled function's first call, which stands for its trace."""
    return not _REPLAYING.get()


def compile_function(fn: Callable[..., Any], model: keras.Model) -> Callable[..., Any]:
    """`fn` run without autograd and with `model` in eval mode; its first call counts as trace."""
    calls = 0

    def call(*args):
        nonlocal calls
        token = _REPLAYING.set(calls > 0)
        calls += 1
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return fn(*args)
        finally:
            model.train(was_training)
            _REPLAYING.reset(token)

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
    activations = activations.detach().requires_grad_(True)
    with torch.enable_grad():
        outputs = head(activations, training=False)
        total = score_fn(outputs).sum()
        (gradients,) = torch.autograd.grad(total, activations)
    outputs = keras.tree.map_structure(lambda tensor: tensor.detach(), outputs)
    return activations.detach(), gradients, outputs


def differentiable_gradients(
    head: Callable[..., Any], activations: Any, score_fn: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """`(outputs, d sum(score_fn(outputs)) / d activations)`, itself differentiable.

    `create_graph=True` keeps the gradient's own graph, so the loss built from
    it backpropagates into the weights (double backprop); `.grad` is untouched.
    """
    # Evaluation runs under no_grad, and a frozen backbone gives activations without
    # a graph: the gradient is still wanted in both cases.
    with torch.enable_grad():
        if not activations.requires_grad:
            activations = activations.detach().requires_grad_(True)
        outputs = head(activations, training=False)
        total = score_fn(outputs).sum()
        (gradients,) = torch.autograd.grad(total, activations, create_graph=True)
    return outputs, gradients


def map_sequential(fn: Callable[[Any], Any], count: int) -> Any:
    """Stacks `fn(i)` for `i` in `range(count)`, one at a time."""
    return torch.stack([fn(i) for i in range(count)])


def after_chunk(callback: Callable[[int], None], index: Any, value: Any) -> Any:
    """`value`, after `callback(index)`: PyTorch runs eagerly, the chunk is done."""
    callback(int(index))
    return value


def probe_gradients(
    run: Callable[[Any, list[Any]], tuple[list[Any], Any]],
    x: Any,
    score_fn: Callable[[Any], Any],
    zeros: list[Any],
) -> tuple[list[Any], list[Any], Any]:
    """`run(x, zeros)` -> (captured, outputs), and d sum(score) / d each of `zeros`.

    The whole forward pass records the graph, but only the zeros are
    differentiated: no weight's `.grad` is touched.
    """
    zeros = [zero.detach().requires_grad_(True) for zero in zeros]
    with torch.enable_grad():
        captured, outputs = run(x, zeros)
        total = score_fn(outputs).sum()
        gradients = torch.autograd.grad(total, zeros, allow_unused=True)
    gradients = [
        torch.zeros_like(zero) if gradient is None else gradient
        for zero, gradient in zip(zeros, gradients, strict=True)
    ]
    outputs = keras.tree.map_structure(lambda tensor: tensor.detach(), outputs)
    return [c.detach() for c in captured], gradients, outputs


def gradient_and_hvp(fn: Callable[[Any], Any], point: Any, vector: Any) -> tuple[Any, Any]:
    """`(∇fn(point), ∇²fn(point) · vector)` of a scalar `fn`, by double backprop.

    `create_graph=True` keeps the gradient's graph for the second
    `torch.autograd.grad`; a gradient that does not depend on `point` (a
    piecewise-linear head) has a zero Hessian. No weight's `.grad` is touched.
    """
    point = point.detach().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(fn(point), point, create_graph=True)
        product = None
        if gradient.requires_grad:
            (product,) = torch.autograd.grad(
                gradient, point, grad_outputs=vector.detach().to(gradient.dtype), allow_unused=True
            )
    if product is None:
        product = torch.zeros_like(point)
    return gradient.detach(), product.detach()


def probe_gradients_each(
    run: Callable[[Any, list[Any]], tuple[list[Any], Any]],
    x: Any,
    score_fns: list[Callable[[Any], Any]],
    zeros: list[Any],
) -> tuple[list[Any], list[Any], Any]:
    """`run(x, zeros)` -> (captured, outputs), and d sum(score_fns[i]) / d zeros[i] for each i.

    One forward pass; the graph is kept for one backward pass per score.
    """
    zeros = [zero.detach().requires_grad_(True) for zero in zeros]
    gradients = []
    with torch.enable_grad():
        captured, outputs = run(x, zeros)
        for i, (score_fn, zero) in enumerate(zip(score_fns, zeros, strict=True)):
            total = score_fn(outputs).sum()
            (gradient,) = torch.autograd.grad(
                total, zero, retain_graph=i < len(zeros) - 1, allow_unused=True
            )
            gradients.append(torch.zeros_like(zero) if gradient is None else gradient)
    captured = [c.detach() for c in captured]
    return captured, gradients, keras.tree.map_structure(lambda t: t.detach(), outputs)


def call_once(fn: Callable[..., Any], model: keras.Model, *args: Any) -> Any:
    """`fn(*args)` run once, with `model` in eval mode."""
    return compile_function(fn, model)(*args)
