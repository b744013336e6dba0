"""Files in the log directory, local or on a remote filesystem (`gs://`, `s3://`, ...).

A local directory goes through `os` and `open`. A URL (`scheme://...`) goes
through `tf.io.gfile`, the filesystem layer `tf.summary` and the
`tensorboard` package write events through where TensorFlow is installed;
`open` would instead create a local folder named `gs:`. Without TensorFlow a
remote log directory is an error when the callback is built, not a local
folder discovered after training.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import IO, Any

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str) -> bool:
    """Whether `path` is a URL such as `gs://bucket/logs` rather than a local path."""
    return bool(_URL.match(path))


def check_log_dir(path: str) -> None:
    """Raises a clear error for a remote `path` where nothing can write to it.

    Raises:
        ValueError: `path` is a URL and TensorFlow (its `tf.io.gfile`) is not
            installed.
    """
    if is_remote(path) and importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            f"log_dir={path!r} is on a remote filesystem, which keras_cam writes through "
            f"tf.io.gfile, but TensorFlow is not installed. Install tensorflow (any backend "
            f"can use it for writing), or log to a local directory and copy it."
        )


def _gfile() -> Any:
    # tensorboard's lazy handle resolves to TensorFlow's own gfile where TensorFlow is
    # installed (check_log_dir guarantees it for URLs), without importing it here.
    from tensorboard.compat import tf

    return tf.io.gfile


def makedirs(path: str) -> None:
    """Creates the directory `path` and its parents, if missing."""
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def size(path: str) -> int | None:
    """The size of the file `path` in bytes, None if it does not exist."""
    if is_remote(path):
        gfile = _gfile()
        return gfile.stat(path).length if gfile.exists(path) else None
    return os.path.getsize(path) if os.path.exists(path) else None


def open_binary(path: str) -> IO[bytes]:
    """`path` opened for writing bytes (an event file), created or truncated."""
    if is_remote(path):
        return _gfile().GFile(path, "wb")
    return open(path, "wb")


def open_text(path: str, mode: str) -> IO[str]:
    """`path` opened as text (`"r"`, `"w"` or `"a"`) without newline translation (for `csv`)."""
    if is_remote(path):
        return _gfile().GFile(path, mode)
    return open(path, mode, newline="", encoding="utf-8")
