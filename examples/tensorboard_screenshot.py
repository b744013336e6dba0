"""Screenshots TensorBoard showing a run's CAM scalars and timeline, with headless Chromium.

    python examples/shortcut_learning.py
    python examples/tensorboard_screenshot.py runs/shortcut docs/shortcut_tensorboard.png \
        --image cam/gradcam/timeline docs/shortcut_timeline.png

Starts a real `tensorboard` server on 127.0.0.1 (a free port), waits until it
has loaded the run, opens its time-series dashboard filtered to the given
tags in headless Chromium through Selenium (`apt install chromium
chromium-driver`; `make browser`), waits until every card has drawn, shows
the curves whole with the settings pane closed, and saves the PNG. `--image` also
saves the last image of one tag at full size, as the server sends it.
Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_tags(url: str, tags: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/data/plugins_listing", timeout=5) as reply:
                listing = reply.read().decode()
            with urllib.request.urlopen(f"{url}/data/plugin/timeseries/tags", timeout=5) as reply:
                loaded = reply.read().decode()
            if "images" in listing and all(tag in loaded for tag in tags):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"TensorBoard at {url} did not load the tags {tags} in {timeout} s.")


# TensorBoard's settings as a user would set them for a run of a few epochs, put
# where TensorBoard keeps them (the browser's local storage) before it loads:
# whole, unsmoothed curves (the defaults, "ignore outliers" and smoothing 0.6,
# crop and bend a line of six points), no step selector or data table under the
# charts, the settings pane closed.
SETTINGS = {
    "ignoreOutliers": False,
    "scalarSmoothing": 0,
    "stepSelectorEnabled": False,
    "timeSeriesSettingsPaneOpened": False,
}

# Ready when every card in view has drawn: each image card's image has loaded
# and each scalar card has its line paths (TensorBoard loads cards lazily and
# fills them after the page itself has loaded, so a fixed delay is not enough).
CARDS_DRAWN = """
const images = [...document.querySelectorAll('image-card img')];
const charts = [...document.querySelectorAll('scalar-card')];
return {
  cards: images.length + charts.length,
  images: images.length && images.every(img => img.complete && img.naturalWidth > 0),
  charts: charts.every(card => card.querySelectorAll('svg path').length > 2),
};
"""


def take_screenshot(page: str, out: Path, size: str, cards: int, timeout: float) -> None:
    """Opens `page` in headless Chromium (Selenium), waits for `cards` drawn cards, saves it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        sys.exit("Chromium and its driver are not installed: apt install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--hide-scrollbars",
        f"--window-size={size}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    width, height = (int(side) for side in size.split(","))
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    try:
        # The screenshot is the page itself, `size` exactly (the window's own bars excluded).
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        origin = page.split("/?")[0]
        driver.get(f"{origin}/data/plugins_listing")  # the dashboard's origin, not the app
        driver.execute_script(
            "localStorage.setItem('_tb_global_settings', arguments[0]);", json.dumps(SETTINGS)
        )
        driver.get(page)
        deadline, state = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            state = driver.execute_script(CARDS_DRAWN)
            if state["cards"] >= cards and state["images"] and state["charts"]:
                break
            time.sleep(0.5)
        else:
            sys.exit(f"TensorBoard did not draw its {cards} cards in {timeout} s: {state}")
        time.sleep(1)  # the last chart's axes settle
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def save_last_image(url: str, tag: str, out: str) -> None:
    """Fetches the tag's last image through the server's image plugin, as the browser would."""
    query = urllib.parse.urlencode({"tag": tag, "run": tag_run(url, tag), "sample": 0})
    with urllib.request.urlopen(f"{url}/data/plugin/images/images?{query}", timeout=10) as reply:
        last = json.loads(reply.read())[-1]
    with urllib.request.urlopen(
        f"{url}/data/plugin/images/individualImage?{last['query']}", timeout=10
    ) as reply:
        Path(out).write_bytes(reply.read())
    print(f"saved {out} (step {last['step']})")


def tag_run(url: str, tag: str) -> str:
    with urllib.request.urlopen(f"{url}/data/plugin/images/tags", timeout=10) as reply:
        runs = json.loads(reply.read())
    return next(run for run, tags in runs.items() if tag in tags)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("log_dir", help="the TensorBoard log directory to open")
    parser.add_argument("out", help="the screenshot PNG to write")
    parser.add_argument(
        "--tags",
        nargs="+",
        default=["cam/gradcam/energy_in_mask", "cam/gradcam/drift", "cam/gradcam/timeline"],
        help="the tags to filter the dashboard to",
    )
    parser.add_argument(
        "--size", default="1100,860", help="page width,height in pixels (two cards a row)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for TensorBoard to serve the run, then to draw it",
    )
    parser.add_argument(
        "--cards",
        type=int,
        default=4,
        help="cards to wait for (each sample of an image tag is a card of its own)",
    )
    parser.add_argument("--image", nargs=2, metavar=("TAG", "OUT"), help="save a tag's last image")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            args.log_dir,
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
        wait_for_tags(url, args.tags, args.timeout)
        pattern = "|".join(tag.replace("/", "\\/") for tag in args.tags)
        # forceSVG: headless Chromium has no WebGL for TensorBoard's default line charts.
        query = urllib.parse.urlencode(
            {"darkMode": "false", "forceSVG": "true", "tagFilter": pattern}
        )
        page = f"{url}/?{query}#timeseries"
        out = Path(args.out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        take_screenshot(page, out, args.size, args.cards, args.timeout)
        print(f"saved {out}")
        if args.image:
            save_last_image(url, *args.image)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
