"""The contact sheet's HTML: parsed back, not string-matched."""

from __future__ import annotations

from html.parser import HTMLParser

from keras_cam.contact_sheet import SheetRow, contact_sheet_html


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


def test_rows_images_and_sort_keys_round_trip():
    rows = [
        SheetRow(
            file='photos/a "cat" & dog.jpg',
            image="images/00000_a.jpg",
            overlays={"gradcam": "overlays/00000_a_gradcam.png", "gradcam++": "overlays/x++.png"},
            class_id=3,
            name="<cat>",
            probability=0.25,
            rank=1,
        ),
        SheetRow(
            file="b.png",
            image="images/00001_b.jpg",
            overlays={"gradcam": "overlays/b g.png", "gradcam++": "overlays/b.png"},
            class_id=0,
            name="dog",
            probability=0.875,
            rank=2,
        ),
    ]
    page = contact_sheet_html(rows, ["gradcam", "gradcam++"], "model.keras", "2 images")
    sheet = parse_sheet(page)
    assert [row["data-file"] for row in sheet.rows] == ['photos/a "cat" & dog.jpg', "b.png"]
    assert [row["data-name"] for row in sheet.rows] == ["<cat>", "dog"]
    assert [float(row["data-probability"]) for row in sheet.rows] == [0.25, 0.875]
    assert [row["data-class"] for row in sheet.rows] == ["3", "0"]
    # Image first, then one overlay per method, as relative URLs (spaces, + escaped).
    assert sheet.rows[0]["images"] == [
        "images/00000_a.jpg",
        "overlays/00000_a_gradcam.png",
        "overlays/x%2B%2B.png",
    ]
    assert sheet.rows[1]["images"][1] == "overlays/b%20g.png"
    sortable = {h["data-key"] for h in sheet.headers if "sortable" in h.get("class", "")}
    assert {"file", "name", "probability"} <= sortable
    # Inline script only: the page works from file:// with no server or network.
    assert sheet.scripts == 1
    assert sheet.external == []
    assert "<cat>" not in page  # escaped
