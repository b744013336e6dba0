"""Griffe extension: docstring examples written as bare doctests become code blocks.

The library's docstrings put `>>>` examples flush under `Example:` (so that they read well
in `help()` and run as doctests). Markdown would run those lines together into a paragraph
(and read `[a, b]` on the next line as a link); this wraps each run of doctest lines, up to
the next blank line, in a ```pycon fence and drops `# doctest:` flags.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_FLAG = re.compile(r"\s*# doctest:.*$")


def fence_doctests(text: str) -> str:
    """Wraps each run of column-0 doctest lines (prompt, continuation, output) in a fence."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if not inside and line.startswith(">>>"):
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(_FLAG.sub("", line) if inside else line)
    if inside:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the bare doctests of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
