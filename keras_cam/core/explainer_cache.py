"""The explainers `explain()` reuses: one per model and set of options, dying with the model.

`explain()` is the one-call API, and people call it in a loop. A fresh
`CAMExplainer` per call would build the sub-models and trace the CAM function
again every time (TensorFlow then prints "triggered tf.function retracing").
So each model keeps its explainers, keyed by the options that change the
compiled function.

The cache is an attribute of the model itself, set past Keras' attribute
tracking so that it is never saved, counted as weights or exported. A
module-level dict would keep every model alive forever (the explainer holds its
model); on the model, the model -> cache -> explainer -> model cycle is
collected with the model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import keras

_ATTRIBUTE = "_keras_cam_explainers"
_PER_MODEL = 8
"""Explainers kept per model, least recently used dropped first (each holds compiled code)."""

T = TypeVar("T")


def options_key(**options: Any) -> Hashable | None:
    """A hashable key of the options, None where one cannot be made (nothing is cached).

    Lists become tuples; method instances, layer objects and callables count
    by identity (a new lambda is a new function to compile).
    """

    def hashable(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(hashable(item) for item in value)
        return value

    key = tuple(sorted((name, hashable(value)) for name, value in options.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def cached(model: keras.Model, key: Hashable | None, build: Callable[[], T]) -> T:
    """The object `build()` made earlier for `model` and `key`, or a new one kept for next time."""
    if key is None:
        return build()
    cache: OrderedDict[Hashable, Any] | None = model.__dict__.get(_ATTRIBUTE)
    if cache is None:
        cache = OrderedDict()
        object.__setattr__(model, _ATTRIBUTE, cache)  # untracked: never saved or exported
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    made = cache[key] = build()
    if len(cache) > _PER_MODEL:
        cache.popitem(last=False)
    return made
