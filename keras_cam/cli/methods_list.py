"""`keras-cam methods`: every built-in CAM method, its one-line description, paper and cost.

The listing reads the method files with `ast` instead of importing them:
importing `keras_cam.methods` imports Keras and its backend (seconds, and
TensorFlow's start-up lines) only to print a list. The class attributes it
reads (`name`, `description`, `paper`, `cost`) are plain strings; a test
checks the result against `keras_cam.available_methods()` and the classes'
own attributes.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from typing import TextIO

FIELDS = ("name", "description", "paper", "cost")


@dataclass(frozen=True)
class MethodEntry:
    """What `keras-cam methods` shows of one method (its class attributes)."""

    name: str
    description: str
    paper: str = ""
    cost: str = ""


def _class_strings(node: ast.ClassDef) -> dict[str, str]:
    """The class's attributes assigned a plain string (`x = "..."` or `x: str = "..."`)."""
    strings = {}
    for statement in node.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    strings[target.id] = value.value
    return strings


def method_entries(folder: str | None = None) -> dict[str, MethodEntry]:
    """`name -> MethodEntry` of the methods defined in `folder`'s files, sorted by name.

    A method is a class that assigns both `name` and `description`; a
    subclass that inherits `paper` or `cost` gets its base class's (from any
    file of the folder).

    Args:
        folder: the methods package's folder. Defaults to `None`:
            `keras_cam/methods`.

    Example:

    >>> from keras_cam.cli.methods_list import method_entries
    >>> method_entries()["gradcam"].cost
    '1 forward + 1 backward'
    """
    if folder is None:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # keras_cam/
        folder = os.path.join(package, "methods")
    classes: dict[str, tuple[list[str], dict[str, str]]] = {}
    for file_name in sorted(os.listdir(folder)):
        if not file_name.endswith(".py"):
            continue
        with open(os.path.join(folder, file_name), encoding="utf-8") as file:
            tree = ast.parse(file.read())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                bases = [base.id for base in node.bases if isinstance(base, ast.Name)]
                classes[node.name] = (bases, _class_strings(node))

    def inherited(class_name: str, field: str, seen: frozenset[str] = frozenset()) -> str:
        if class_name not in classes or class_name in seen:
            return ""
        bases, strings = classes[class_name]
        if field in strings:
            return strings[field]
        for base in bases:
            value = inherited(base, field, seen | {class_name})
            if value:
                return value
        return ""

    found = {}
    for class_name, (_, strings) in classes.items():
        if "name" in strings and "description" in strings:
            values = {field: inherited(class_name, field) for field in FIELDS}
            found[strings["name"]] = MethodEntry(**values)
    return dict(sorted(found.items()))


def write_methods(out: TextIO) -> None:
    """Writes one line per method (name and description) and an indented paper and cost line.

    Example:

    >>> import sys
    >>> write_methods(sys.stdout)  # doctest: +SKIP
    gradcam  Grad-CAM (Selvaraju et al. 2017): channels weighted by mean gradient.
             paper: Selvaraju et al., ICCV 2017 (arXiv 1610.02391) · cost: 1 forward + 1 backward
    """
    entries = method_entries()
    width = max(map(len, entries))
    for name, entry in entries.items():
        out.write(f"{name:<{width}}  {entry.description}\n")
        details = [f"{field}: {getattr(entry, field)}" for field in ("paper", "cost")]
        out.write(f"{'':<{width}}  {' · '.join(details)}\n")
