"""Writing TensorBoard events: one small interface, behind which the implementation may change.

The writer is the callback's own, and every write names its step, so nothing
depends on another callback's default writer, step or record gating (the
Keras TensorBoard callback's `update_freq` gates summaries through a global
`record_if` that would otherwise drop these epoch images).
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np


class EventWriter(Protocol):
    """Writes images and scalars for TensorBoard under one log directory."""

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        """Writes uint8 RGB images (N, H, W, 3) as one image summary with N samples."""

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Writes one scalar."""

    def flush(self) -> None:
        """Makes everything written so far readable."""

    def close(self) -> None:
        """Flushes and releases the file."""


class TensorFlowWriter:
    """`EventWriter` over `tf.summary`."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(os.fspath(log_dir))

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        tf = self._tf
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.image(tag, images, step=step, max_outputs=len(images))

    def scalar(self, tag: str, value: float, step: int) -> None:
        tf = self._tf
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.scalar(tag, float(value), step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def create_writer(log_dir: str | os.PathLike[str]) -> EventWriter:
    """Creates `log_dir` if needed and returns a writer for it.

    Raises:
        OSError: the directory cannot be created or written.
    """
    log_dir = os.fspath(log_dir)
    os.makedirs(log_dir, exist_ok=True)
    if not os.access(log_dir, os.W_OK):
        raise PermissionError(f"Cannot write TensorBoard logs to {log_dir!r}: not writable.")
    return TensorFlowWriter(log_dir)
