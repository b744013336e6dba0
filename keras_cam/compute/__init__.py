"""The only backend-specific code: how activations, gradients and outputs are obtained.

Each backend module provides:

- `compile_function(fn, model)`: compiles a function of fixed-shape tensors,
  traced once, that reads `model`'s current weights at every call;
- `is_tracing()`: whether a compiled function's body now runs as its trace
  (the explainer counts traces with it);
- `activations_and_gradients(features, head, x, score_fn, need_gradients)`:
  returns `(activations, gradients or None, outputs)` where gradients are
  d sum(score_fn(outputs)) / d activations, and nothing is differentiated
  with respect to the model's weights;
- `differentiable_gradients(head, activations, score_fn)`: returns
  `(outputs, gradients)` for use inside a training step, with the gradient
  itself differentiable with respect to the weights (CAM guidance);
- `probe_gradients(run, x, score_fn, zeros)`: with `run(x, zeros) ->
  (captured, outputs)` adding each zero tensor to a captured layer output,
  returns `(captured, gradients, outputs)`, the gradients of
  sum(score_fn(outputs)) with respect to each of `zeros`;
- `gradient_and_hvp(fn, point, vector)`: `(∇fn(point), ∇²fn(point) · vector)`
  of a scalar function, by double backprop (ShapleyCAM's Hessian-vector product);
- `probe_gradients_each(run, x, score_fns, zeros)`: as `probe_gradients`,
  with one score function per zero tensor: the i-th gradient is
  d sum(score_fns[i](outputs)) / d zeros[i], from one forward pass and one
  backward pass per score (LeGrad's per-block scores);
- `call_once(fn, model, *args)`: `fn(*args)` run once, the cheapest way
  (eager under TensorFlow and PyTorch, jitted under JAX);
- `map_sequential(fn, count)`: inside a compiled function, stacks `fn(i)`
  (float32) for `i` in `range(count)`, one iteration at a time.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

_SUPPORTED = ("tensorflow", "jax", "torch")


def backend_module() -> ModuleType:
    """Returns the compute module of the active Keras backend."""
    backend = keras.backend.backend()
    if backend not in _SUPPORTED:
        raise NotImplementedError(
            f"keras_cam does not support the {backend!r} Keras backend (supported: "
            f"{', '.join(_SUPPORTED)}). Set KERAS_BACKEND to one of them before importing keras."
        )
    return importlib.import_module(f"keras_cam.compute.{backend}")
