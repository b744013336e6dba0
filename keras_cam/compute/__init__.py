"""The only backend-specific code: how activations, gradients and outputs are obtained.

Each backend module provides:

- `compile_function(fn)`: compiles a function of fixed-shape tensors, traced once;
- `activations_and_gradients(features, head, x, score_fn, need_gradients)`:
  returns `(activations, gradients or None, outputs)` where gradients are
  d sum(score_fn(outputs)) / d activations, and nothing is differentiated
  with respect to the model's weights;
- `map_sequential(fn, count)`: inside a compiled function, stacks `fn(i)`
  (float32) for `i` in `range(count)`, one iteration at a time.
"""

from __future__ import annotations

from types import ModuleType

import keras

_SUPPORTED = ("tensorflow",)


def backend_module() -> ModuleType:
    """Returns the compute module of the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_cam.compute import tensorflow

        return tensorflow
    raise NotImplementedError(
        f"keras_cam does not support the {backend!r} Keras backend yet (supported: "
        f"{', '.join(_SUPPORTED)}). Set KERAS_BACKEND=tensorflow before importing keras."
    )
