"""`CSVSink`: one row per event, method and probe image, to analyse without TensorBoard."""

from __future__ import annotations

import csv
import os

from keras_cam.sinks import log_files
from keras_cam.sinks.event import Event


def csv_file_for(path: str, header: list[str]) -> str:
    """`path`, or `stem_2.csv`, `stem_3.csv`, ...: the first that is new or has this header.

    A log directory reused with other metrics keeps every file valid: rows are
    only ever appended under their own header.
    """
    stem, extension = os.path.splitext(path)
    candidate, number = path, 1
    while log_files.size(candidate):
        with log_files.open_text(candidate, "r") as file:
            if next(csv.reader(file), None) == header:
                return candidate
        number += 1
        candidate = f"{stem}_{number}{extension}"
    return candidate


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class CSVSink:
    """Appends each event's `rows` to a CSV file (local or a `gs://`-style URL).

    The columns are the first row's keys. A file that already holds rows under
    another header (a log directory reused with other metrics) is left as it
    is: the rows go to `stem_2.csv`, `stem_3.csv`, ..., the first file that
    is new or has the same header. Events without rows write nothing.

    Args:
        path: the CSV file, e.g. `"runs/cam/cam_metrics.csv"`.

    Example:

    >>> keras_cam.CAMCallback(probe, sinks=[keras_cam.CSVSink("cam.csv")])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        log_files.check_log_dir(self.path)
        self._files: dict[tuple[str, ...], str] = {}

    def open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            log_files.makedirs(directory)

    def write(self, event: Event) -> None:
        if not event.rows:
            return
        header = list(event.rows[0])
        key = tuple(header)
        if key not in self._files:
            self._files[key] = csv_file_for(self.path, header)
        path = self._files[key]
        new = not log_files.size(path)
        with log_files.open_text(path, "a") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(header)
            for row in event.rows:
                writer.writerow([_cell(row.get(name)) for name in header])

    def close(self) -> None:
        """Nothing to release: each event opens and closes the file."""
