"""TensorBoard in a real browser: the default images read well on a default card.

Starts `tensorboard` on 127.0.0.1, opens its time-series dashboard (the one
TensorBoard opens on) in headless Chromium through Selenium, and measures,
from the DOM, the size each image is rendered at. The caption text height
is measured in the PNG itself (rows of dark ink between colour-free rows) and
scaled by the rendered size, so the check holds whatever layout code drew it.
Needs Debian's `chromium` and `chromium-driver`: `make test` installs them.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from conftest import conv_classifier, read_events

import keras_cam

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
IMAGE_TAGS = ("cam/gradcam/grid", "cam/gradcam/timeline", "cam/compare")
METHODS = ("gradcam", "layercam", "xgradcam")
FIRST_IMAGE_CARD = """
const img = document.querySelector('image-card img');
if (!img) return null;
const box = img.getBoundingClientRect();
return {width: box.width, height: box.height, natural: img.naturalWidth,
        fit: getComputedStyle(img).objectFit,
        card: img.closest('card-view').getBoundingClientRect().width};
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_text_height(page: np.ndarray) -> int:
    """Rows of the first band of black-on-white text (a header or a caption line).

    Text rows are grey over the page's right 60 % (the comparison table's
    header shares its line with the colour gradient on the left).
    """
    grey = page.max(axis=-1).astype(int) - page.min(axis=-1) < 12
    inked = (page.min(axis=-1) < 100) & grey
    text_rows = grey[:, int(0.4 * page.shape[1]) :].all(axis=1) & inked.any(axis=1)
    rows = np.flatnonzero(text_rows)
    assert rows.size, "no caption or header text found"
    band = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)[0]
    return len(band)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1500,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_default_images_are_readable_on_tensorboards_default_cards(tmp_path, browser):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    y = np.arange(16) % 3
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(
        (x, y),
        tmp_path,
        method=METHODS,
        class_names=["dog", "pig", "yak"],  # captions with ascenders and descenders
    )
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    pages = {tag: read_events(str(tmp_path))[tag][1] for tag in IMAGE_TAGS}
    # 16 probe images, three methods, laid out for the widest range labels (pages that do
    # not move between steps): two rows of 64-px cells a page (16 px drawn 4x).
    assert len(pages["cam/compare"]) == 8

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240  # a loaded CI machine starts tensorboard slowly
        while True:
            try:
                with urllib.request.urlopen(f"{url}/data/plugin/images/tags", timeout=5) as reply:
                    loaded = reply.read().decode()
                if all(tag in loaded for tag in IMAGE_TAGS):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "tensorboard did not load the run"
            time.sleep(0.5)
        rendered = {}
        for tag in IMAGE_TAGS:
            # One tag per page: TensorBoard loads only the cards in view.
            query = urllib.parse.urlencode({"darkMode": "false", "tagFilter": f"^{tag}$"})
            browser.get(f"{url}/?{query}#timeseries")
            while time.monotonic() < deadline and tag not in rendered:
                time.sleep(0.5)
                card = browser.execute_script(FIRST_IMAGE_CARD)
                if card and card["natural"]:
                    rendered[tag] = card
        assert set(rendered) == set(IMAGE_TAGS), f"cards rendered: {rendered}"
        # The custom-scalars plugin serves the layout: one section per method.
        with urllib.request.urlopen(f"{url}/data/plugin/custom_scalars/layout") as reply:
            layout = json.loads(reply.read())
        sections = {category["title"]: category["chart"] for category in layout["category"]}
        assert set(sections) == {f"keras-cam {name}" for name in METHODS}
        charts = [chart["multiline"]["tag"] for chart in sections["keras-cam layercam"]]
        assert charts == [
            [f"^cam/layercam/{metric}$"] for metric in ("mean_score", "drift", "focus")
        ]
        # Tags carry their descriptions into TensorBoard's card info.
        with urllib.request.urlopen(f"{url}/data/plugin/scalars/tags") as reply:
            scalars = json.loads(reply.read())
        drift = next(iter(scalars.values()))["cam/gradcam/drift"]
        assert drift["displayName"] == "gradcam: attention drift"
        assert "previous event" in drift["description"]
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(
        "RENDERED",
        rendered,
        {t: p[0].shape for t, p in pages.items()},
        {t: len(p) for t, p in pages.items()},
    )
    for tag, card in rendered.items():
        page = pages[tag][0]
        assert card["natural"] == page.shape[1]
        # The image is fitted into its box keeping its aspect (a wide page leaves the
        # box's height partly empty), so the smaller ratio is the scale it is shown at.
        box_aspect = card["width"] / card["height"]
        assert card["fit"] == "contain" or box_aspect == pytest.approx(
            page.shape[1] / page.shape[0], rel=0.02
        ), f"{tag}: drawn distorted ({page.shape}, {card})"
        scale = min(card["width"] / page.shape[1], card["height"] / page.shape[0])
        assert (
            max(page.shape[1] * scale - card["width"], page.shape[0] * scale - card["height"]) > -2
        )
        text_px = first_text_height(page) * scale
        assert text_px >= 11, f"{tag}: captions shown {text_px:.1f} px high ({card})"
        # Shown at least at half its size, and not as a thumbnail when wide.
        assert scale >= 0.5, f"{tag}: shown as a thumbnail ({card})"
        # (The timeline's two-line column headers, epoch over range, make its page a little
        # taller: shown at 0.83 of its width.)
        assert card["width"] >= min(250, 0.8 * page.shape[1]), f"{tag}: {card}"
        assert page.shape[0] <= 2 * page.shape[1]
    compare = pages["cam/compare"][0]
    card = rendered["cam/compare"]
    scale = min(card["width"] / compare.shape[1], card["height"] / compare.shape[0])
    assert 64 * scale >= 64, f"compare cells shown at {64 * scale:.1f} px ({card})"
