"""What the tracker sinks (W&B, MLflow) share: the optional import, page keys, tag notes."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from keras_cam.sinks.tags import describe


def import_tracker(module: str, extra: str) -> Any:
    """Imports an optional tracker package, or says which extra installs it.

    Args:
        module: the package's import name, e.g. `"mlflow"`.
        extra: the keras-cam extra that installs it, e.g. `"mlflow"`.

    Raises:
        ImportError: the package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"This sink needs the {module!r} package: pip install keras-cam[{extra}]"
        ) from error


def tags_markdown(tags: list[str]) -> str:
    """A Markdown list of what each tag is: its display name and description."""
    lines = ["# keras-cam tags", ""]
    for tag in tags:
        name, description = describe(tag)
        lines.append(f"- `{tag}` ({name}): {description}".rstrip(": "))
    return "\n".join(lines) + "\n"


def page_keys(tag: str, count: int) -> list[str]:
    """The key of each page of `tag`: the tag itself, or `tag/page_1`, ... for several."""
    return [tag] if count == 1 else [f"{tag}/page_{p + 1}" for p in range(count)]


def is_picture(value: Any) -> bool:
    """Whether a table cell is a picture (uint8 `(H, W, 3)`), which trackers show as an image."""
    return isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of `rows`, in the order they first appear."""
    return list(dict.fromkeys(key for row in rows for key in row))
