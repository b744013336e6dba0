"""MkDocs hook: the Methods page's table and sections, generated from the method registry.

`docs/methods.md` holds two markers. `<!-- methods-table -->` becomes one row per
registered method (name, description, paper, cost: the class attributes `paper` and
`cost`, empty where a method does not set them); `<!-- methods-reference -->` becomes
one section per method with its class docstring (the paper and the formula) and a link
to its API entry. A method registered in `keras_cam.methods` appears without editing
the page.
"""

from __future__ import annotations

import inspect
import re


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _methods() -> list[tuple[str, type]]:
    from keras_cam import methods

    return [(name, type(methods.get_method(name))) for name in methods.available_methods()]


def _table(found: list[tuple[str, type]]) -> str:
    # `paper` and `cost` are optional class attributes: a column only once a method has one.
    extra = [key for key in ("paper", "cost") if any(getattr(c, key, "") for _, c in found)]
    rows = [
        "| method | description | " + " | ".join(extra) + (" |" if extra else ""),
        "| --- | --- | " + " | ".join("---" for _ in extra) + (" |" if extra else ""),
    ]
    for name, cls in found:
        cells = [_cell(getattr(cls, key, "")) for key in extra]
        rows.append(
            f'| [`"{name}"`](#{cls.__name__.lower()}) '
            f"| {_cell(getattr(cls, 'description', ''))} | "
            + " | ".join(cells)
            + (" |" if cells else "")
        )
    return "\n".join(rows)


def _sections(found: list[tuple[str, type]]) -> str:
    parts = []
    for name, cls in found:
        doc = inspect.getdoc(cls) or ""
        # Args and Example belong to the API entry; the page keeps the paper and the formula.
        doc = re.split(r"^(?:Args|Example|Examples|Returns|Raises):$", doc, flags=re.M)[0]
        summary, _, body = doc.partition("\n")
        parts.append(
            f'### {cls.__name__} {{ #{cls.__name__.lower()} }}\n\n`method="{name}"` · '
            f"[API](reference/methods.md#keras_cam.methods.{cls.__name__})\n\n"
            f"**{summary.strip()}**\n\n{body.strip()}\n"
        )
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- methods-table -->" not in markdown and "<!-- methods-reference -->" not in markdown:
        return markdown
    found = _methods()
    markdown = markdown.replace("<!-- methods-table -->", _table(found))
    return markdown.replace("<!-- methods-reference -->", _sections(found))
