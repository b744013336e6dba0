"""The contact sheet's HTML: parsed back, not string-matched."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sheet_html import parse_sheet

from keras_cam.render.contact_sheet import SheetRow, contact_sheet_html


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


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Chromium (apt install chromium)"
)
def test_headers_sort_the_rows_in_a_real_browser(tmp_path):
    rows = [
        SheetRow(f"{name}.png", f"images/{name}.jpg", {"gradcam": "o.png"}, i, name, p, 1)
        for i, (name, p) in enumerate([("b", 0.5), ("c", 0.9), ("a", 0.1)])
    ]
    page = contact_sheet_html(rows, ["gradcam"], "sheet")
    # Click "probability" twice (descending), then "class" once (ascending), from file://.
    clicks = (
        "<script>const q = (k) => document.querySelector(`th[data-key=${k}]`);"
        "q('probability').click(); q('probability').click();"
        "document.title = Array.from(document.querySelectorAll('tbody tr'))"
        ".map((r) => r.dataset.probability).join(' ');"
        "q('name').click();</script></body>"
    )
    (tmp_path / "index.html").write_text(page.replace("</body>", clicks))
    done = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            f"file://{tmp_path / 'index.html'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    sheet = parse_sheet(done.stdout)
    assert [row["data-name"] for row in sheet.rows] == ["a", "b", "c"]
    title = done.stdout.split("<title>")[1].split("</title>")[0]
    assert [float(p) for p in title.split()] == [0.9, 0.5, 0.1]
