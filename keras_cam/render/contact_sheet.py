"""The contact sheet: one self-contained HTML page, image | overlay per method, sortable.

It opens from disk (`file://`) with no server: images are referenced by
relative paths and the sorting is a few lines of inline JavaScript.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class SheetRow:
    """One row of the sheet: an input image and the overlays of one explained class.

    Attributes:
        file: the image's path as given on the command line.
        image: path of the input thumbnail, relative to the sheet.
        overlays: method name -> overlay path, relative to the sheet.
        class_id: the explained class.
        name: the class name (the id as text without class names).
        probability: the model's probability for that class.
        rank: 1 for the predicted class, k for the k-th best (`--targets topK`).
    """

    file: str
    image: str
    overlays: dict[str, str]
    class_id: int
    name: str
    probability: float
    rank: int


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
p.summary { margin: 0 0 .8em; color: #555; }
table { border-collapse: collapse; }
th { position: sticky; top: 0; background: #f3f3f3; padding: .4em .6em; text-align: left;
     border-bottom: 1px solid #ccc; white-space: nowrap; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable:hover { background: #e4e4e4; }
th[aria-sort=ascending]::after { content: " ▲"; }
th[aria-sort=descending]::after { content: " ▼"; }
td { padding: .3em .6em; border-bottom: 1px solid #eee; vertical-align: middle; }
td img { width: var(--thumb); height: auto; display: block; image-rendering: auto; }
td.file { min-width: 8em; max-width: 16em; overflow-wrap: anywhere; font-size: .85em;
          color: #555; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.notice { margin: 0 0 .8em; padding: .5em .8em; background: #fff3cd; border: 1px solid #e0c36c; }
div.scale { display: flex; align-items: center; gap: .5em; margin: 0 0 .8em; font-size: .85em;
            color: #555; }
div.scale span.bar { display: inline-block; width: 16em; height: 1em; border: 1px solid #999; }
details.skipped { margin: 1em 0; }
details.skipped li { overflow-wrap: anywhere; font-size: .9em; }
"""

# Sorts the rows by the clicked column's data value (numbers as numbers); a second click
# reverses the order.
_SCRIPT = """
document.querySelectorAll("th.sortable").forEach((header) => {
  header.addEventListener("click", () => {
    const key = header.dataset.key, numeric = header.dataset.numeric === "1";
    const descending = header.getAttribute("aria-sort") === "ascending";
    document.querySelectorAll("th.sortable").forEach((h) => h.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    const body = document.querySelector("tbody");
    const rows = Array.from(body.rows);
    const value = (row) => numeric ? parseFloat(row.dataset[key]) : row.dataset[key];
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      const order = x < y ? -1 : x > y ? 1 : Number(a.dataset.order) - Number(b.dataset.order);
      return descending ? -order : order;
    });
    rows.forEach((row) => body.appendChild(row));
  });
});
"""

_COLUMNS = (
    ("order", "#", True),
    ("file", "file", False),
    ("name", "class", False),
    ("probability", "probability", True),
)
# A regression head has no class: the explained output value takes their place.
_REGRESSION_COLUMNS = (_COLUMNS[0], _COLUMNS[1], ("probability", "value", True))


def _url(path: str) -> str:
    return html.escape(quote(path.replace("\\", "/")), quote=True)


def _row(
    index: int, row: SheetRow, methods: Sequence[str], shown: str, regression: bool = False
) -> str:
    attributes = (
        f'data-order="{index}" data-file="{html.escape(row.file, quote=True)}" '
        f'data-name="{html.escape(row.name, quote=True)}" data-class="{row.class_id}" '
        f'data-probability="{row.probability:.6f}" data-rank="{row.rank}"'
    )
    name = html.escape(row.name)
    label = name if row.rank == 1 else f"#{row.rank} {name}"
    alt = html.escape(row.file, quote=True)
    cells = [
        f'<td class="num">{index + 1}</td>',
        f'<td class="file" title="{alt}">{html.escape(shown)}</td>',
        f'<td title="class {row.class_id}">{label}</td>',
        f'<td class="num">{row.probability:.3f}</td>',
        f'<td><img src="{_url(row.image)}" alt="{alt}" loading="lazy"></td>',
    ]
    if regression:
        cells[2:4] = [f'<td class="num" title="{name}">{row.probability:.4g}</td>']
    for method in methods:
        source = _url(row.overlays[method])
        cells.append(f'<td><img src="{source}" alt="{method}: {alt}" loading="lazy"></td>')
    return f"<tr {attributes}>{''.join(cells)}</tr>"


def _colour_scale(colors: Sequence[str]) -> str:
    if not colors:
        return ""
    stops = ", ".join(html.escape(color, quote=True) for color in colors)
    return (
        '<div class="scale">heatmap colour scale: <span>0 (low)</span>'
        f'<span class="bar" style="background: linear-gradient(to right, {stops})"></span>'
        "<span>1 (highest in each map)</span></div>\n"
    )


def _skipped_list(skipped: Sequence[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    items = "".join(
        f"<li><code>{html.escape(path)}</code>: {html.escape(why)}</li>" for path, why in skipped
    )
    return (
        f'<details class="skipped" open><summary>{len(skipped)} not explained '
        f"(also in skipped.txt)</summary>\n<ul>{items}</ul></details>\n"
    )


def contact_sheet_html(
    rows: Sequence[SheetRow],
    methods: Sequence[str],
    title: str,
    summary: str = "",
    thumbnail: int = 160,
    regression: bool = False,
    skipped: Sequence[tuple[str, str]] = (),
    colors: Sequence[str] = (),
    notice: str = "",
) -> str:
    """The page: a table of rows sortable by file, class and probability.

    Args:
        rows: the rows, in command-line order.
        methods: the method names, one overlay column each.
        title: the page title (e.g. the model file).
        summary: one line of text under the title. Defaults to `""`.
        thumbnail: displayed width of every picture in CSS pixels. Defaults to `160`.
        regression: rows explain an output value (`probability` holds it), not a
            class: one "value" column replaces class and probability. Defaults to
            `False`.
        skipped: `(file, reason)` for every input not explained, listed under the
            table. Defaults to none.
        colors: CSS colours from the lowest to the highest heatmap value, shown as a
            colour scale above the table. Defaults to none (no scale).
        notice: a highlighted line above the summary (e.g. that the run was
            interrupted). Defaults to `""` (none).

    Returns:
        The HTML document as a string.
    """
    headers = [
        f'<th class="sortable" data-key="{key}" data-numeric="{int(numeric)}">{label}</th>'
        for key, label, numeric in (_REGRESSION_COLUMNS if regression else _COLUMNS)
    ]
    headers.append("<th>image</th>")
    headers.extend(f"<th>{html.escape(method)}</th>" for method in methods)
    # Files are shown relative to the folder they share (the full path is the tooltip).
    folders = [os.path.dirname(os.path.abspath(row.file)) for row in rows]
    common = os.path.commonpath(folders) if folders else ""
    body = "\n".join(
        _row(index, row, methods, os.path.relpath(os.path.abspath(row.file), common), regression)
        for index, row in enumerate(rows)
    )
    banner = f'<p class="notice"><strong>{html.escape(notice)}</strong></p>\n' if notice else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>:root {{ --thumb: {int(thumbnail)}px; }}{_STYLE}</style>\n"
        "</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"{banner}"
        f'<p class="summary">{html.escape(summary)}</p>\n'
        f"{_colour_scale(colors)}"
        f"<table>\n<thead><tr>{''.join(headers)}</tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>\n"
        f"{_skipped_list(skipped)}"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def step_sheet_html(
    events: Sequence[tuple[int, str | None, dict[str, list[str]]]], title: str = "keras-cam"
) -> str:
    """A page of one row per event (a step of training) and one column per image tag.

    Args:
        events: `(step, name or None, tag -> files relative to the page)`, in order.
        title: the page title. Defaults to `"keras-cam"`.

    Returns:
        The HTML document as a string.

    Example:

    >>> page = step_sheet_html([(0, None, {"cam/gradcam/grid": ["grid/step_0000.png"]})])
    """
    tags = list(dict.fromkeys(tag for _, _, files in events for tag in files))
    headers = "".join(f"<th>{html.escape(tag)}</th>" for tag in ["step", *tags])
    body = []
    for step, name, files in events:
        label = html.escape(f"{step}" if name is None else f"{step}: {name}")
        cells = [f'<td class="num">{label}</td>']
        for tag in tags:
            pictures = "".join(
                f'<img src="{_url(path)}" alt="{html.escape(tag, quote=True)}" loading="lazy">'
                for path in files.get(tag, ())
            )
            cells.append(f"<td>{pictures}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    rows = "\n".join(body)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>:root {{ --thumb: 320px; }}{_STYLE}</style>\n"
        "</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<table>\n<thead><tr>{headers}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
        "</body>\n</html>\n"
    )
