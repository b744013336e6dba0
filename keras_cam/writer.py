"""Writing TensorBoard events: one small interface, behind which the implementation may change.

The writer is the callback's own, and every write names its step, so nothing
depends on another callback's default writer, step or record gating (the
Keras TensorBoard callback's `update_freq` gates summaries through a global
`record_if` that would otherwise drop these epoch images).
"""

from __future__ import annotations

import io
import os
from typing import Protocol

import numpy as np
from PIL import Image
from tensorboard.plugins.image import metadata as image_metadata


class EventWriter(Protocol):
    """Writes images and scalars for TensorBoard under one log directory."""

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        """Writes uint8 RGB images (N, H, W, 3) as one image summary with N samples."""

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Writes one scalar."""

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        """Writes the distribution of `values` (finite floats)."""

    def flush(self) -> None:
        """Makes everything written so far readable."""

    def close(self) -> None:
        """Flushes and releases the file."""


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) image at low compression.

    Encoding is the dearest part of an event: zlib level 1 is several times
    faster than the default level and barely larger on heatmap overlays.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_summary_tensor(images: np.ndarray) -> list[bytes]:
    """The image plugin's tensor layout: [width, height, png, png, ...]."""
    height, width = images.shape[1:3]
    return [str(width).encode(), str(height).encode(), *(encode_png(im) for im in images)]


_IMAGE_METADATA = image_metadata.create_summary_metadata(
    display_name=None, description=None
).SerializeToString()


class TensorFlowWriter:
    """`EventWriter` over `tf.summary`."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(os.fspath(log_dir))

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        tf = self._tf
        tensor = tf.constant(image_summary_tensor(images), dtype=tf.string)
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.write(tag, tensor, step=step, metadata=_IMAGE_METADATA)

    def scalar(self, tag: str, value: float, step: int) -> None:
        tf = self._tf
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.scalar(tag, float(value), step=step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        tf = self._tf
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.histogram(tag, np.asarray(values, dtype=np.float64), step=step, buckets=20)

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
