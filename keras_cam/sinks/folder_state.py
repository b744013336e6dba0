"""A folder the program shares with its user: what it created there (the manifest), and its lock.

Every file and folder the folder sink creates is appended to
`.keras-cam/manifest.txt` as it is created, so that a later run can remove
exactly those (after an interrupted or killed run too) and never a file the
user put there. A lock file held with `flock` keeps a second writer out; the
operating system releases it when the holder ends, even killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

STATE_FOLDER = ".keras-cam"
"""The folder's own state: manifest.txt, journal.jsonl (for resuming), lock."""


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock (another run is writing there)."""


def safe_name(text: str, limit: int = 40) -> str:
    """A file-name part from any text: ASCII letters, digits, `- _ .`, at most `limit` long.

    Example:

    >>> safe_name("b\\udcffc d")
    'b_c_d'
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return safe[:limit] or "image"


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Holds a Ctrl-C until the block ends, so that a record is written whole or not at all."""
    pending: list[Any] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *args: pending.append(args))
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


def _lock(file: Any) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


class OwnedFolder:
    """A folder and the record of what this program wrote there.

    Args:
        directory: the folder (created when first written to).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.state = os.path.join(directory, STATE_FOLDER)
        self.manifest_path = os.path.join(self.state, "manifest.txt")
        self.ours = self._read_manifest()
        self._lock_file: Any = None

    def _read_manifest(self) -> set[str]:
        try:
            with open(self.manifest_path, encoding="utf-8") as file:
                return {line.rstrip("\n") for line in file if line.strip()}
        except OSError:
            return set()

    def path(self, relative: str) -> str:
        """The path of `relative` (`/`-separated) inside the folder."""
        return os.path.join(self.directory, relative)

    def is_ours(self, relative: str) -> bool:
        """Whether the manifest lists `relative` as written by this program."""
        return relative in self.ours

    def free(self, relative: str) -> bool:
        """Whether `relative` may be written: it is ours, or nothing is there."""
        return self.is_ours(relative) or not os.path.lexists(self.path(relative))

    def contents(self) -> list[str]:
        """What the folder holds besides the state folder."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(name for name in os.listdir(self.directory) if name != STATE_FOLDER)

    def lock(self) -> None:
        """Holds the folder for this process until `unlock` (or the process ends).

        Raises:
            FolderInUseError: another process holds it.
        """
        if self._lock_file is not None:
            return
        os.makedirs(self.state, exist_ok=True)
        self._lock_file = open(os.path.join(self.state, "lock"), "a+")  # noqa: SIM115
        try:
            _lock(self._lock_file)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise FolderInUseError(
                f"Another keras-cam run is writing into {self.directory}; wait for it to "
                f"finish or choose another folder."
            ) from None
        self.ours = self._read_manifest()  # as the previous holder left it

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    def record(self, relative: str) -> None:
        """Lists `relative` in the manifest (before it is created: a crash leaves it listed)."""
        if relative not in self.ours:
            self.ours.add(relative)
            with open(self.manifest_path, "a", encoding="utf-8") as file:
                file.write(relative + "\n")

    def make_folders(self, relative: str) -> None:
        """Creates the folder `relative` and its missing parents, recording each one."""
        parts = relative.split("/")
        for end in range(1, len(parts) + 1):
            folder = "/".join(parts[:end])
            if not os.path.isdir(self.path(folder)):
                self.record(folder)
                os.mkdir(self.path(folder))

    def clear(self) -> None:
        """Removes the files the manifest lists, then its folders if they are empty."""
        listed = sorted(self.ours, key=lambda name: -name.count("/"))
        for relative in listed:
            path = self.path(relative)
            if os.path.islink(path) or os.path.isfile(path):
                os.remove(path)
        for relative in listed:
            with contextlib.suppress(OSError):  # not empty: it holds the user's files
                os.rmdir(self.path(relative))
        self.ours = {name for name in self.ours if os.path.lexists(self.path(name))}
        with open(self.manifest_path, "w", encoding="utf-8") as file:
            file.writelines(f"{name}\n" for name in sorted(self.ours))

    def remove(self, relative: str) -> None:
        """Removes the file `relative` if this program wrote it (a user's file stays)."""
        path = self.path(relative)
        if self.is_ours(relative) and os.path.isfile(path):
            os.remove(path)

    def write_text(self, relative: str, text: str) -> None:
        """Writes a whole file at once (a temporary file, then renamed over it).

        Raises:
            FileExistsError: a file this program did not write is there.
        """
        if not self.free(relative):
            raise FileExistsError(
                f"{self.path(relative)} was not written by keras-cam (it is not in "
                f"{STATE_FOLDER}/manifest.txt): it is left as it is."
            )
        os.makedirs(self.state, exist_ok=True)
        temporary = os.path.join(self.state, relative.replace("/", "_") + ".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
        self.record(relative)
        os.replace(temporary, self.path(relative))
