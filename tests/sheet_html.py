"""Parses the contact sheet's HTML back (shared by the render and CLI tests)."""

from __future__ import annotations

from html.parser import HTMLParser


class SheetParser(HTMLParser):
    """Collects the sheet's rows (their data attributes and image sources) and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.headers: list[dict] = []
        self.scripts = 0
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-order" in attrs:
            self.rows.append({**attrs, "images": []})
        elif tag == "img" and self.rows:
            self.rows[-1]["images"].append(attrs["src"])
        elif tag == "th":
            self.headers.append(attrs)
        elif tag == "script":
            self.scripts += 1
        if tag in ("link", "script") and ("href" in attrs or "src" in attrs):
            self.external.append(attrs.get("href") or attrs.get("src"))


def parse_sheet(page: str) -> SheetParser:
    parser = SheetParser()
    parser.feed(page)
    return parser
