"""Which of a model's outputs the explained score reads (`output=`).

A model may return one tensor, a list of tensors or a dict of them. The
explainer's head returns that same structure; `output=` names one part, by
dict key, output layer name or position. With several outputs and no
`output=`, the choice is ambiguous and the error lists the outputs.
"""

from __future__ import annotations

from typing import Any

import keras

OutputSpec = str | int | None


def _structure(model: keras.Model) -> Any:
    if isinstance(model, keras.Sequential) or not hasattr(model, "_nodes_by_depth"):
        return model.outputs[0]
    return model.output


def _named(model: keras.Model) -> list[tuple[Any, Any]]:
    """(key, symbolic tensor) of each output: dict keys, else positions."""
    structure = _structure(model)
    if isinstance(structure, dict):
        return list(structure.items())
    if isinstance(structure, (list, tuple)):
        return list(enumerate(structure))
    return [(0, structure)]


def describe(model: keras.Model) -> str:
    """The outputs as `'key' (shape), ...` for error messages."""
    names = list(getattr(model, "output_names", None) or [])
    parts = []
    for i, (key, tensor) in enumerate(_named(model)):
        label = repr(key) if isinstance(key, str) else f"{i}"
        if not isinstance(key, str) and i < len(names):
            label += f" ({names[i]!r})"
        parts.append(f"{label} {tuple(tensor.shape)}")
    return ", ".join(parts)


def resolve(model: keras.Model, output: OutputSpec, whole: bool = False) -> Any:
    """The key of the chosen output: a dict key or a position; None for the whole structure.

    Args:
        model: the model.
        output: a dict key, an output layer name, a position, or None.
        whole: whether a target that reads the whole structure asks (then
            `output=None` is not ambiguous).

    Raises:
        ValueError: no such output, or several outputs and no `output=`.
    """
    named = _named(model)
    if output is None:
        if len(named) == 1:
            return named[0][0]
        if whole:
            return None
        raise ValueError(
            f"Model {model.name!r} has {len(named)} outputs: {describe(model)}. Pass "
            f"output= (a key, an output layer name or a position) to choose the one "
            f"the target reads."
        )
    keys = [key for key, _ in named]
    if output in keys and not isinstance(output, bool):
        return output
    names = list(getattr(model, "output_names", None) or [])
    if isinstance(output, str) and output in names and len(names) == len(keys):
        return keys[names.index(output)]
    raise ValueError(
        f"output={output!r} is not an output of model {model.name!r}; its outputs are "
        f"{describe(model)}."
    )


def select(outputs: Any, key: Any) -> Any:
    """The chosen part of a (head's) output structure; a lone tensor is returned as it is."""
    if key is None or not isinstance(outputs, (dict, list, tuple)):
        return outputs
    return outputs[key]


def symbolic(model: keras.Model, key: Any) -> Any:
    """The chosen output's symbolic tensor (or the whole structure for `key=None`)."""
    return select(_structure(model), key)


def producing_layer(tensor: Any) -> keras.layers.Layer | None:
    """The layer whose call made the symbolic `tensor`."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def shape(model: keras.Model, key: Any) -> Any:
    """The chosen output's shape, or a structure of shapes for `key=None`."""
    return keras.tree.map_structure(lambda t: tuple(t.shape), symbolic(model, key))
