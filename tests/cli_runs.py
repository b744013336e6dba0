"""Running the `keras-cam` command as a user does, and reading its results back."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from conftest import checkout_env


def command() -> list[str]:
    """The installed `keras-cam` script next to this Python, else the module it runs."""
    script = Path(sys.executable).parent / "keras-cam"
    return [str(script)] if script.exists() else [sys.executable, "-m", "keras_cam.cli.command"]


def keras_cam_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command(), *args],
        cwd=cwd,
        env=checkout_env(TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as file:
        return list(csv.DictReader(file))
