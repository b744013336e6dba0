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


def map_sequential(fn: Callable[[Any], Any], count: int) -> Any:
    """Stacks `fn(i)` for `i` in `range(count)`, one at a time."""
    return torch.stack([fn(i) for i in range(count)])
