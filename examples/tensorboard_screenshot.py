"""Screenshots TensorBoard showing a run's CAM scalars and timeline, with headless Chromium.

    python examples/shortcut_learning.py
    python examples/tensorboard_screenshot.py runs/shortcut docs/shortcut_tensorboard.png \
        --image cam/gradcam/timeline docs/shortcut_timeline.png

Starts a real `tensorboard` server on 127.0.0.1 (a free port), waits until it
has loaded the run, opens its time-series dashboard filtered to the given
tags in Chromium (`apt install chromium`) and saves the PNG. `--image` also
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
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image


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


def take_screenshot(browser: str, page: str, out: Path, size: str, budget_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={budget_ms}",
                "--run-all-compositor-stages-before-draw",
                f"--screenshot={out}",
                page,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def looks_rendered(png: Path) -> bool:
    """Whether the cards show data: chart lines in the run's colour and a colourful image.

    Headless Chromium sometimes captures the page before TensorBoard fills
    its cards; the empty cards are white.
    """
    with Image.open(png) as screenshot:
        pixels = np.asarray(screenshot.convert("RGB"), dtype=np.int16)[
            80:, 280:-230
        ]  # the cards, without header, runs and settings
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    colourful = (spread > 120).mean()
    dark_lines = ((pixels.max(axis=-1) < 110) & (spread > 15)).sum()
    return colourful > 0.002 and dark_lines > 500


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
    parser.add_argument("--size", default="1500,1000", help="window width,height in pixels")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for TensorBoard to serve"
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=5,
        help="most screenshots to take while waiting for the cards to draw",
    )
    parser.add_argument("--image", nargs=2, metavar=("TAG", "OUT"), help="save a tag's last image")
    args = parser.parse_args()

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("Chromium is not installed: apt install chromium")
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
        for attempt in range(1, args.attempts + 1):
            take_screenshot(browser, page, out, args.size, budget_ms=20000 * attempt)
            if looks_rendered(out):
                break
            print(f"attempt {attempt}: the charts had not rendered yet; trying again")
        else:
            sys.exit(f"TensorBoard did not render within {args.attempts} attempts.")
        print(f"saved {out}")
        if args.image:
            save_last_image(url, *args.image)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
