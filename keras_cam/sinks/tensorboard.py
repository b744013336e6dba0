"""Writing TensorBoard events: one small interface, two implementations.

`TensorFlowWriter` goes through `tf.summary`; `TensorBoardWriter` needs only
the `tensorboard` package (its event-file writer and summary protos, as
`torch.utils.tensorboard` does), so JAX and PyTorch users need no
TensorFlow. Both write the same tensors with the same plugin metadata: the
image plugin's [width, height, png, ...] strings (PNG by Pillow), float32
scalars, and histograms as [left, right, count] rows computed here; each tag
with the display name and description a `describe` function gives it (shown
in TensorBoard's card info), and the custom-scalars layout. Nothing else in
the package knows which one is used.

The writer is the callback's own, and every write names its step, so nothing
depends on another callback's default writer, step or record gating (the
Keras TensorBoard callback's `update_freq` gates summaries through a global
`record_if` that would otherwise drop these epoch images).
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import logging
import os
import shlex
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

import google_crc32c
import keras
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util import tensor_util

from keras_cam.sinks import log_files
from keras_cam.sinks.event import Event, EventWriteError  # noqa: F401 (where writers raise it)
from keras_cam.sinks.tags import describe, scalars_layout

logger = logging.getLogger("keras_cam")

WRITERS = ("auto", "tensorflow", "tensorboard")


class EventWriter(Protocol):
    """Writes images and scalars for TensorBoard under one log directory."""

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        """Writes uint8 RGB images (N, H, W, 3) as one image summary with N samples."""

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Writes one scalar."""

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        """Writes the distribution of `values` (finite floats)."""

    def text(self, tag: str, text: str, step: int) -> None:
        """Writes one Markdown text (TensorBoard's TEXT tab)."""

    def scalars_layout(self, layout: layout_pb2.Layout) -> None:
        """Writes the CUSTOM SCALARS dashboard's layout (once per run)."""

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


def histogram_tensor(values: np.ndarray, buckets: int = 20) -> np.ndarray:
    """The histogram plugin's layout: float64 (buckets, 3) rows of [left, right, count]."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros((0, 3))
    low, high = float(values.min()), float(values.max())
    if low == high:
        return np.array([[low, high, float(values.size)]])
    counts, edges = np.histogram(values, bins=buckets, range=(low, high))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


Describe = Callable[[str], tuple[str, str]]
"""Maps a tag to the (display name, description) TensorBoard shows in its card's info."""

_PLUGINS = {
    "images": image_metadata,
    "scalar": scalar_metadata,
    "histogram": histogram_metadata,
    "text": text_metadata,
}


class _Metadata:
    """The serialised `SummaryMetadata` of each (kind, tag), built once per tag."""

    def __init__(self, describe: Describe | None) -> None:
        self._describe = describe
        self._cache: dict[tuple[str, str], summary_pb2.SummaryMetadata] = {}

    def __call__(self, kind: str, tag: str) -> summary_pb2.SummaryMetadata:
        key = (kind, tag)
        if key not in self._cache:
            name, description = self._describe(tag) if self._describe else (None, None)
            self._cache[key] = _PLUGINS[kind].create_summary_metadata(
                display_name=name, description=description
            )
        return self._cache[key]


class TensorFlowWriter:
    """`EventWriter` over `tf.summary`.

    Args:
        log_dir: the directory of the event files.
        describe: gives each tag's display name and description. Defaults to
            `None`: none.
    """

    def __init__(self, log_dir: str | os.PathLike[str], describe: Describe | None = None) -> None:
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(os.fspath(log_dir))
        self._metadata = _Metadata(describe)

    def _write(self, tag: str, tensor: Any, dtype: Any, metadata, step: int) -> None:
        tf = self._tf
        with self._writer.as_default(), tf.summary.record_if(True):
            try:
                tf.summary.write(
                    tag,
                    tf.constant(tensor, dtype=dtype),
                    step=step,
                    metadata=metadata.SerializeToString(),
                )
                self._writer.flush()
            except Exception:
                # `as_default()` flushes on exit before it restores the thread's previous
                # default writer: a flush failing there (a full disk) would leave this
                # writer the default, and Keras' TensorBoard callback writes its batch
                # scalars to the default writer: to a deleted one once this sink closes,
                # which kills the user's `fit`. A no-op writer for the exit to flush lets
                # it restore the previous one.
                tf.summary.create_noop_writer().as_default().__enter__()
                raise

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        tensor = image_summary_tensor(images)
        self._write(tag, tensor, self._tf.string, self._metadata("images", tag), step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._write(tag, float(value), self._tf.float32, self._metadata("scalar", tag), step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        tensor = histogram_tensor(values)
        self._write(tag, tensor, self._tf.float64, self._metadata("histogram", tag), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._write(tag, text, self._tf.string, self._metadata("text", tag), step)

    def scalars_layout(self, layout: layout_pb2.Layout) -> None:
        metadata = custom_scalar_metadata.create_summary_metadata()
        tag = custom_scalar_metadata.CONFIG_SUMMARY_TAG
        self._write(tag, layout.SerializeToString(), self._tf.string, metadata, 0)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def framed_record(data: bytes) -> bytes:
    """`data` framed as one record of an event file, checksummed in C.

    The record is its length (uint64), the length's masked CRC32C, the data
    and the data's masked CRC32C, little-endian: what the `tensorboard`
    package's `RecordWriter` writes, byte for byte. Its CRC32C is pure Python
    (about 60 ms of the writer thread's CPU for an event's 500 KiB); this one
    is `google-crc32c`'s.

    Example:

    >>> len(framed_record(b"event"))  # 8 + 4 + 5 + 4
    21
    """
    header = struct.pack("<Q", len(data))
    return header + _masked_crc(header) + data + _masked_crc(data)


def _masked_crc(data: bytes) -> bytes:
    """TFRecord's masked CRC32C of `data`, packed as uint32."""
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


class TensorBoardWriter:
    """`EventWriter` over the `tensorboard` package alone: no TensorFlow needed.

    Records are written synchronously, on the caller's thread (the callback's
    background worker), into a file this writer owns: the `tensorboard`
    package's own `EventFileWriter` adds a thread of its own, which prints a
    raw traceback on a full disk, and its `close` leaves the file open when
    the final flush fails. Here a failed write raises to the caller, and
    `close` releases the file whatever the flush does.

    Args:
        log_dir: the directory of the event files.
        describe: gives each tag's display name and description. Defaults to
            `None`: none.
    """

    _uid = itertools.count()

    def __init__(self, log_dir: str | os.PathLike[str], describe: Describe | None = None) -> None:
        name = "events.out.tfevents.%010d.%s.%s.%s.v2" % (  # noqa: UP031 (TensorBoard's own)
            time.time(),
            socket.gethostname(),
            os.getpid(),
            next(self._uid),
        )
        log_dir = os.fspath(log_dir)
        log_files.makedirs(log_dir)
        self._file = log_files.open_binary(os.path.join(log_dir, name))
        self._closed = False  # tf.io.gfile's GFile (remote dirs) has no `closed`
        self._metadata = _Metadata(describe)
        try:
            self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
            self.flush()
        except BaseException:
            self._file.close()
            raise

    def _add(self, event: event_pb2.Event) -> None:
        self._file.write(framed_record(event.SerializeToString()))

    def _write(self, tag: str, tensor: np.ndarray | list[bytes], metadata, step: int) -> None:
        value = summary_pb2.Summary.Value(
            tag=tag, tensor=tensor_util.make_tensor_proto(tensor), metadata=metadata
        )
        self._add(
            event_pb2.Event(
                wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=[value])
            )
        )

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        self._write(tag, image_summary_tensor(images), self._metadata("images", tag), step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._write(tag, np.float32(value), self._metadata("scalar", tag), step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self._write(tag, histogram_tensor(values), self._metadata("histogram", tag), step)

    def text(self, tag: str, text: str, step: int) -> None:
        tensor = np.array(text.encode(), dtype=object)
        self._write(tag, tensor, self._metadata("text", tag), step)

    def scalars_layout(self, layout: layout_pb2.Layout) -> None:
        tensor = np.array(layout.SerializeToString(), dtype=object)
        tag = custom_scalar_metadata.CONFIG_SUMMARY_TAG
        self._write(tag, tensor, custom_scalar_metadata.create_summary_metadata(), 0)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._file.flush()
        finally:  # a full disk fails the flush: the descriptor is released all the same
            self._file.close()


def create_writer(
    log_dir: str | os.PathLike[str], writer: str = "auto", describe: Describe | None = None
) -> EventWriter:
    """Creates `log_dir` if needed and returns a writer for it.

    Args:
        log_dir: the directory of the event files.
        writer: `"tensorflow"` (`tf.summary`), `"tensorboard"` (the
            `tensorboard` package alone) or `"auto"`: TensorFlow under the
            TensorFlow backend, the `tensorboard` package otherwise, so JAX and
            PyTorch runs never import TensorFlow. Defaults to `"auto"`.
        describe: gives each tag's display name and description (summary
            metadata, shown in TensorBoard's card info). Defaults to `None`.

    Returns:
        An `EventWriter`.

    Raises:
        OSError: the directory cannot be created or written.
        ValueError: unknown `writer`, or `"tensorflow"` or a remote `log_dir`
            (`gs://...`) without TensorFlow.
    """
    if writer not in WRITERS:
        raise ValueError(f"writer must be one of {WRITERS}, got {writer!r}.")
    has_tensorflow = importlib.util.find_spec("tensorflow") is not None
    if writer == "tensorflow" and not has_tensorflow:
        raise ValueError(
            "writer='tensorflow' but TensorFlow is not installed; use writer='tensorboard' "
            "(or 'auto'), which needs only the tensorboard package."
        )
    log_dir = os.fspath(log_dir)
    log_files.check_log_dir(log_dir)
    log_files.makedirs(log_dir)
    if not log_files.is_remote(log_dir) and not os.access(log_dir, os.W_OK):
        raise PermissionError(f"Cannot write TensorBoard logs to {log_dir!r}: not writable.")
    if writer == "auto":
        use_tensorflow = has_tensorflow and keras.backend.backend() == "tensorflow"
        writer = "tensorflow" if use_tensorflow else "tensorboard"
    implementation = TensorFlowWriter if writer == "tensorflow" else TensorBoardWriter
    return implementation(log_dir, describe)


class TensorBoardSink:
    """Writes events to TensorBoard event files under `log_dir`.

    Every tag carries the display name and description of
    `keras_cam.sinks.tags.describe` (TensorBoard's card info), and the first
    event with `charts` writes the CUSTOM SCALARS layout, once per sink.
    Each `open` starts a new event file (TensorBoard reads them all, in
    order), so a sink reopened after a write error resumes writing.

    Args:
        log_dir: the directory of the event files (created if needed); a URL
            such as `gs://bucket/logs` is written through `tf.io.gfile` (needs
            TensorFlow installed, on any backend).
        writer: `"tensorflow"` (`tf.summary`), `"tensorboard"` (the
            `tensorboard` package alone: no TensorFlow needed) or `"auto"`
            (TensorFlow's under the TensorFlow backend, else the
            `tensorboard` package's). Defaults to `"auto"`.

    Example:

    >>> sink = keras_cam.TensorBoardSink("runs/cam", writer="tensorboard")  # doctest: +SKIP
    >>> keras_cam.CAMCallback(probe, sinks=[sink])                         # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike[str], writer: str = "auto") -> None:
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {WRITERS}, got {writer!r}.")
        self.log_dir = os.fspath(log_dir)
        log_files.check_log_dir(self.log_dir)
        self.writer = writer
        self._writer: EventWriter | None = None
        self._layout_written = False

    def open(self) -> None:
        self.close()
        self._writer = create_writer(self.log_dir, self.writer, describe)

    def write(self, event: Event) -> None:
        if self._writer is None:
            self.open()
        writer, step = self._writer, event.step
        if event.charts and not self._layout_written:
            methods = list(event.charts)
            metrics = list(dict.fromkeys(m for names in event.charts.values() for m in names))
            writer.scalars_layout(scalars_layout(methods, metrics))
            self._layout_written = True
        # The numbers first: a full disk (the pictures are the largest writes) loses
        # the pictures only.
        for tag, value in event.scalars.items():
            writer.scalar(tag, value, step)
        for tag, text in event.texts.items():
            writer.text(tag, text, step)
        for tag, values in event.histograms.items():
            writer.histogram(tag, values, step)
        for tag, pages in event.images.items():
            writer.images(tag, pages, step)
        writer.flush()

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def runs_root(log_dir: str) -> str:
    """The folder above the CAM folder, where the training curves of the run usually lie.

    TensorBoard finds runs in every subfolder of `--logdir`: the parent of
    `runs/exp1/cam` shows the CAM images next to `runs/exp1/train` and
    `runs/exp1/validation` of Keras' TensorBoard callback.
    """
    if log_files.is_remote(log_dir):
        return log_dir.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.normpath(log_dir)) or "."


def tensorboard_command(log_dir: str, events: int) -> str:
    """The command that shows every image step of a run with `events` events.

    TensorBoard keeps a sample of 10 image steps per tag unless told otherwise.
    """
    # Every image step is kept: TensorBoard's default keeps a sample of 10 per tag.
    return (
        f"tensorboard --logdir {shlex.quote(log_dir)} --samples_per_plugin images={max(events, 10)}"
    )
