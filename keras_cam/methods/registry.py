"""The registry of CAM methods: short name -> method class (filled by `keras_cam.methods`)."""

from __future__ import annotations

from keras_cam.methods.base import CAMMethod

_REGISTRY: dict[str, type[CAMMethod]] = {}


def register(method: type[CAMMethod]) -> type[CAMMethod]:
    """Adds a method class to the registry under its `name`."""
    if method.name in _REGISTRY and _REGISTRY[method.name] is not method:
        raise ValueError(f"a CAM method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def available_methods() -> dict[str, str]:
    """Lists the CAM methods by name, with a one-line description.

    Example:

    >>> import keras_cam
    >>> "gradcam" in keras_cam.available_methods()
    True
    """
    return {name: method.description for name, method in sorted(_REGISTRY.items())}


def registered_methods() -> dict[str, type[CAMMethod]]:
    """The registered method classes by name, sorted (their `paper` and `cost` too).

    Example:

    >>> from keras_cam.methods.registry import registered_methods
    >>> registered_methods()["gradcam"].cost
    '1 forward + 1 backward'
    """
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> CAMMethod:
    """Returns a fresh instance of the method registered as `name`."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        listing = ", ".join(repr(n) for n in sorted(_REGISTRY))
        raise ValueError(f"Unknown CAM method {name!r}. Available methods: {listing}.")
    return _REGISTRY[key]()


def gradient_method(base: str | CAMMethod) -> CAMMethod:
    """The method a composite method builds on (Finer-CAM, Guided Grad-CAM, RefineCAM).

    Raises:
        ValueError: `base` is not a method that reads only the target layer's
            activations and gradients.
    """
    method = get_method(base) if isinstance(base, str) else base
    if not isinstance(method, CAMMethod) or not (method.uses_gradients and not method.uses_forward):
        raise ValueError(
            f"base must be a gradient method such as 'gradcam', 'gradcam++' or "
            f"'layercam', got {base!r}."
        )
    return method
