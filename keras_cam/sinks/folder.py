"""`FolderSink`: each event's pictures as PNG files, its rows in `results.csv`, an `index.html`.

The folder is shared with its user, so the sink keeps a manifest of what it
created (`.keras-cam/manifest.txt`) and never overwrites or removes anything
else; it holds a lock while open; it records each event whole or not at all
(its files, then its rows and one journal line written together, the files
removed again if that fails), and a later run can resume from the journal.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_cam.sinks.event import Event
from keras_cam.sinks.folder_state import (
    STATE_FOLDER,
    OwnedFolder,
    deferred_interrupt,
    safe_name,
)

logger = logging.getLogger("keras_cam")

MODES = ("new", "overwrite", "resume")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class FolderRecord:
    """One event as the folder sink wrote it (kept in its journal, read back on resume).

    Attributes:
        step: the event's step.
        name: the event's name (e.g. the input file), None without one.
        files: image tag -> the files of its pages, relative to the folder.
        rows: the event's rows as given, with `file_columns` cells replaced by
            the file they name.
        texts: the event's texts (kept in the journal, not written as files).
    """

    step: int
    name: str | None
    files: dict[str, list[str]]
    rows: list[dict[str, Any]]
    texts: dict[str, str]


def text_cell(value: object, float_format: str = ".6g") -> str:
    """A CSV cell: None empty, floats formatted, text that a spreadsheet could run as a
    formula (OWASP: a leading `= + - @`) escaped with a leading `'`."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return format(float(value), float_format)
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in _FORMULA else text


def _literal_folder(pattern: str) -> str | None:
    """The first folder of `pattern` when it is fixed text (`"overlays/{stem}.png"`)."""
    first, slash, _ = pattern.partition("/")
    fields = [field for _, field, _, _ in string.Formatter().parse(first) if field is not None]
    return first if slash and not fields else None


def step_sheet(records: Sequence[FolderRecord]) -> str:
    """The default `index.html`: one row per event, one column per image tag."""
    from keras_cam.render.contact_sheet import step_sheet_html

    return step_sheet_html([(r.step, r.name, r.files) for r in records])


class FolderSink:
    """Writes events into a folder: PNG (or JPEG) files, `results.csv`, `index.html`.

    Each page of an event's image tag becomes one file, named by `pattern`
    from the tag and the event's stem: `step_0003` (the step), or for an event
    with a `name` (an input file) `00003_photo`. With the default pattern
    `CAMCallback(probe, sinks=[FolderSink("cam_pngs")])` writes
    `cam_pngs/cam/gradcam/grid/step_0003.png` per event (a tag with several
    pages: `step_0003_page2.png`, ...). Names are ASCII; a name that is taken
    (by an earlier event or a user's file) gets `_2`, `_3`, ... on its stem.
    The event's `rows` are appended to `results.csv`, and `index.html` (one row
    per event) is written on `close`.

    What it writes is listed in `.keras-cam/manifest.txt`; it never overwrites
    or removes a file it did not create. While open it holds
    `.keras-cam/lock`: a second writer into the same folder is refused.

    Args:
        directory: the folder.
        mode: `"new"` (the folder must be empty or absent), `"overwrite"`
            (first remove what an earlier run of keras-cam wrote there, and
            nothing else) or `"resume"` (continue the run recorded there).
            Defaults to `"new"`.
        pattern: the file of a tag's page, from `{tag}` (its `/`-separated parts
            made ASCII) and `{stem}`; `.png` or `.jpg` (quality 90). A mapping
            gives a pattern per tag, `"*"` for the others. Defaults to
            `"{tag}/{stem}.png"`.
        columns: the columns of `results.csv`, written as its header at once.
            Defaults to the first row's keys.
        formats: column -> format of its float cells (e.g. `".6f"`).
            Defaults to `".6g"` for every column.
        file_columns: columns whose cells hold an image tag of the event; the
            CSV holds the file written for it instead. Defaults to none.
        index: records -> the HTML of `index.html`, written on `close`; None
            writes none. Defaults to one row per event, one column per tag.
        also_writes: further names the owner writes through `write_text`
            (e.g. `"status.json"`): refused, as the sink's own, when a file
            keras-cam did not write holds them. Defaults to none.

    Example:

    >>> keras_cam.CAMCallback(probe, sinks=[keras_cam.FolderSink("cam_pngs")])  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        mode: str = "new",
        pattern: str | Mapping[str, str] = "{tag}/{stem}.png",
        columns: Sequence[str] | None = None,
        formats: Mapping[str, str] | None = None,
        file_columns: Sequence[str] = (),
        index: Callable[[Sequence[FolderRecord]], str] | None = step_sheet,
        also_writes: Sequence[str] = (),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose from {', '.join(MODES)}.")
        self.folder = OwnedFolder(os.fspath(directory))
        self.mode = mode
        self.patterns = {"*": pattern} if isinstance(pattern, str) else dict(pattern)
        if "*" not in self.patterns:
            raise ValueError(f"pattern={pattern!r} names no pattern for the other tags ('*').")
        for each in self.patterns.values():
            if os.path.splitext(each)[1].lower() not in (".png", ".jpg", ".jpeg"):
                raise ValueError(f"pattern {each!r} must end in .png or .jpg.")
        self.columns = list(columns) if columns is not None else None
        self.formats = dict(formats or {})
        self.file_columns = tuple(file_columns)
        self.index = index
        folders = [_literal_folder(each) for each in self.patterns.values()]
        self._folders = list(dict.fromkeys(name for name in folders if name))
        self.outputs = [*self._folders, "results.csv", "index.html", *also_writes]
        """The names in the folder this sink (and its owner) writes."""
        self.records: list[FolderRecord] = []
        self._taken: set[str] = set()
        self._started = False
        self._csv: Any = None
        self._journal: Any = None
        self._csv_end = 0
        self._journal_end = 0

    # -- the folder, for the owner --------------------------------------------------------

    @property
    def directory(self) -> str:
        return self.folder.directory

    def path(self, relative: str) -> str:
        """The path of `relative` inside the folder."""
        return self.folder.path(relative)

    def is_ours(self, relative: str) -> bool:
        """Whether keras-cam wrote `relative` (the manifest lists it)."""
        return self.folder.is_ours(relative)

    def write_text(self, relative: str, text: str) -> None:
        """Writes a whole text file at once and lists it in the manifest."""
        self.folder.write_text(relative, text)

    def remove(self, relative: str) -> None:
        """Removes `relative` if keras-cam wrote it."""
        self.folder.remove(relative)

    def check(self) -> None:
        """Raises a clear error if `mode` cannot write into the folder as it is now.

        Raises:
            ValueError: the folder is a file; it is not empty (mode `"new"`);
                an output name holds a file keras-cam did not write; there is
                no run to resume.
        """
        directory = self.directory
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"{directory} is a file; name a folder.")
        if self.mode == "resume":
            if not self.folder.is_ours(f"{STATE_FOLDER}/journal.jsonl"):
                raise ValueError(f"{directory} holds no keras-cam run to resume.")
            return
        if self.mode == "new" and self.folder.contents():
            raise ValueError(
                f"{directory} is not empty; choose another folder, or mode='overwrite' "
                f"(which removes only the files keras-cam wrote there)."
            )
        foreign = [
            name
            for name in self.outputs
            if os.path.lexists(self.path(name)) and not self.is_ours(name)
        ]
        if foreign:
            raise ValueError(
                f"{directory} holds {', '.join(foreign)}, which keras-cam did not write "
                f"(they are not in {STATE_FOLDER}/manifest.txt) and would write into: "
                f"choose another folder."
            )

    # -- the Sink protocol ----------------------------------------------------------------

    def open(self) -> None:
        """Locks the folder; the first time also checks it, clears or replays it.

        Raises:
            FolderInUseError: another run holds the folder.
            ValueError: see `check`.
        """
        if not self._started:
            self.check()  # before the lock creates anything in a folder it would refuse
        self.folder.lock()
        try:
            if not self._started:
                self.check()  # again, held: another run may have written there meanwhile
                if self.mode == "overwrite":
                    self.folder.clear()
                if self.mode == "resume":
                    self._replay()
                for name in self._folders:  # the patterns' folders, there from the start
                    self.folder.make_folders(name)
            self._open_files()
        except BaseException:
            self.folder.unlock()
            raise
        self._started = True

    def _open_files(self) -> None:
        folder = self.folder
        csv_path, journal_path = folder.path("results.csv"), self._journal_path
        folder.record("results.csv")
        folder.record(f"{STATE_FOLDER}/journal.jsonl")
        fresh = not self._started and self.mode != "resume"
        if fresh or not os.path.isfile(csv_path):
            with open(csv_path, "w", newline="", encoding="utf-8") as file:
                if self.columns is not None:
                    csv.writer(file).writerow(self.columns)
            self._csv_end = os.path.getsize(csv_path)
            line = json.dumps({"csv_end": self._csv_end, "columns": self.columns}) + "\n"
            with open(journal_path, "w", encoding="utf-8") as file:
                file.write(line)
            self._journal_end = len(line.encode("utf-8"))
        else:
            # Drop what an event not recorded whole left (a crash, a full disk).
            for path, end in ((csv_path, self._csv_end), (journal_path, self._journal_end)):
                with open(path, "r+b") as file:
                    file.truncate(end)
        self._csv = open(csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._journal = open(journal_path, "a", encoding="utf-8")  # noqa: SIM115

    @property
    def _journal_path(self) -> str:
        return os.path.join(self.folder.state, "journal.jsonl")

    def _replay(self) -> None:
        """Reads back the events recorded whole; a line cut short by a crash is dropped."""
        with open(self._journal_path, encoding="utf-8") as file:
            lines = file.readlines()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # cut short by a crash: that event is written again
                break
            self._journal_end += len(line.encode("utf-8"))
            self._csv_end = entry.get("csv_end", self._csv_end)
            if "columns" in entry and self.columns is None:
                self.columns = entry["columns"]
            if "rows" in entry:
                if self.columns is None and entry["rows"]:
                    self.columns = list(entry["rows"][0])
                entry.pop("csv_end")
                record = FolderRecord(**entry)
                self.records.append(record)
                self._taken.update(name for files in record.files.values() for name in files)

    def write(self, event: Event) -> None:
        """Writes the event's files, then its rows and journal line together.

        Raises:
            Exception: whatever failed; the files of this event are removed
                again and nothing of it is in `results.csv` or the journal.
        """
        if self._csv is None:
            raise RuntimeError(f"FolderSink({self.directory!r}) is not open: call open() first.")
        images = {tag: np.asarray(pages) for tag, pages in event.images.items() if len(pages)}
        files = self._claim(event, images)
        written: list[str] = []
        record = None
        try:
            for tag, pages in images.items():
                for relative, page in zip(files[tag], pages, strict=True):
                    if "/" in relative:
                        self.folder.make_folders(os.path.dirname(relative))
                    self.folder.record(relative)
                    written.append(relative)
                    _save(page, self.path(relative))
            rows = [
                {
                    key: files[value][0] if self._is_file_cell(key, value, files) else value
                    for key, value in row.items()
                }
                for row in event.rows
            ]
            record = FolderRecord(event.step, event.name, files, rows, dict(event.texts))
            self._commit(record)
        finally:
            # An event is recorded whole or leaves nothing: no picture without its row.
            if not (self.records and self.records[-1] is record):
                for relative in written:
                    with contextlib.suppress(OSError):
                        os.remove(self.path(relative))

    def _is_file_cell(self, column: str, value: object, files: dict[str, list[str]]) -> bool:
        return column in self.file_columns and isinstance(value, str) and value in files

    def _claim(self, event: Event, images: dict[str, np.ndarray]) -> dict[str, list[str]]:
        """Free names for the event's files: the stem, else `stem_2`, `stem_3`, ..."""
        if event.name is None:
            stem = f"step_{event.step:04d}"
        else:
            base = os.path.splitext(os.path.basename(event.name))[0]
            stem = f"{event.step:05d}_{safe_name(base)}"
        for attempt in range(1, 10_000):
            candidate = stem if attempt == 1 else f"{stem}_{attempt}"
            files = {tag: self._names(tag, candidate, len(pages)) for tag, pages in images.items()}
            names = [name for each in files.values() for name in each]
            if len(set(names)) == len(names) and all(
                name not in self._taken and self.folder.free(name) for name in names
            ):
                self._taken.update(names)
                return files
        raise OSError(f"no free file name for {stem} in {self.directory}")

    def _names(self, tag: str, stem: str, pages: int) -> list[str]:
        pattern = self.patterns.get(tag, self.patterns["*"])
        ascii_tag = "/".join(_tag_part(part) for part in tag.split("/"))
        name = pattern.format(tag=ascii_tag, stem=stem)
        if pages == 1:
            return [name]
        root, extension = os.path.splitext(name)
        return [f"{root}_page{page + 1}{extension}" for page in range(pages)]

    def _commit(self, record: FolderRecord) -> None:
        columns = self.columns or (list(record.rows[0]) if record.rows else None)
        text = io.StringIO()
        if columns is not None:
            writer = csv.writer(text)
            if self.columns is None:  # the first rows: their keys are the header
                writer.writerow(columns)
            for row in record.rows:
                unknown = set(row) - set(columns)
                if unknown:
                    raise ValueError(f"a row has columns {sorted(unknown)} not in {columns}")
                writer.writerow(
                    [text_cell(row.get(c), self.formats.get(c, ".6g")) for c in columns]
                )
        rows = text.getvalue()
        # The file is UTF-8 without newline translation: its end is known before writing.
        csv_end = self._csv_end + len(rows.encode("utf-8"))
        entry = {**record.__dict__, "csv_end": csv_end}
        line = json.dumps(entry, default=_plain) + "\n"  # before anything is written
        with deferred_interrupt():
            try:
                self._csv.write(rows)
                self._csv.flush()
                self._journal.write(line)
                self._journal.flush()
            except BaseException:
                self._roll_back()
                raise
            self._csv_end = csv_end
            self._journal_end += len(line.encode("utf-8"))
            self.columns = columns
            self.records.append(record)

    def _roll_back(self) -> None:
        """Half a record is no record: both files back to the end of the last whole one."""
        for file in (self._csv, self._journal):
            with contextlib.suppress(Exception):  # a full disk fails the flush again
                file.close()
        self._csv = self._journal = None
        with contextlib.suppress(OSError):
            self._open_files()  # truncates both; if that fails, the next open() does

    def close(self) -> None:
        """Writes `index.html`, closes the files and releases the folder."""
        try:
            for file in (self._csv, self._journal):
                if file is not None:
                    file.close()
            self._csv = self._journal = None
            if self.index is not None and self._started:
                self.folder.write_text("index.html", self.index(self.records))
        finally:
            self.folder.unlock()


def _tag_part(part: str) -> str:
    """One `/`-part of a tag as an ASCII name part (`gradcam++` stays as it is)."""
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", part)[:60]
    return "_" if safe in ("", ".", "..") else safe


def _plain(value: Any) -> Any:
    """numpy numbers in rows, as JSON numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a CSV cell")


def _save(page: np.ndarray, path: str) -> None:
    from PIL import Image

    if page.dtype != np.uint8 or page.ndim != 3 or page.shape[-1] != 3:
        raise ValueError(f"a page must be uint8 (H, W, 3), not {page.dtype} {page.shape}")
    if path.lower().endswith(".png"):
        Image.fromarray(page).save(path, compress_level=1)
    else:
        Image.fromarray(page).save(path, quality=90)
