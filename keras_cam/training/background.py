"""One background thread that runs the callback's drawing and writing jobs, in order.

The CAM itself must run on the training thread (it reads the current
weights), but turning maps into pictures, PNG encoding and event writing do
not: they run here while the next epoch trains. The queue is small and
bounded, so a worker that falls behind makes the training thread wait
(back-pressure) instead of holding an unbounded number of events in memory.
A job's error is not raised in the worker: it is kept, with the job's label,
for the training thread to collect (`outcomes`), which warns or raises there.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable

_LIVE: weakref.WeakSet[BackgroundJobs] = weakref.WeakSet()


@atexit.register
def _finish_all() -> None:
    # A fit stopped by KeyboardInterrupt never reaches on_train_end; the
    # interpreter still runs atexit handlers while daemon threads live, so the
    # queued events are written before the process exits.
    for jobs in list(_LIVE):
        jobs.join()


class BackgroundJobs:
    """Runs jobs one at a time, in submission order, on one daemon thread.

    Args:
        capacity: jobs that may wait in the queue; `submit` blocks beyond it.
            Defaults to `2`.
        name: the thread's name (shown in debuggers and thread dumps).
    """

    def __init__(self, capacity: int = 2, name: str = "keras_cam-writer") -> None:
        self.capacity = capacity
        self.name = name
        self._jobs: queue.Queue[tuple[Callable[[], None], str] | None] = queue.Queue(capacity)
        self._outcomes: deque[tuple[str, Exception | None]] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None], label: str) -> None:
        """Queues `job`; waits while the queue is full."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
                _LIVE.add(self)
        self._jobs.put((job, label))

    def outcomes(self) -> list[tuple[str, Exception | None]]:
        """The (label, error or None) of every job finished since the last call, in order."""
        finished = []
        while self._outcomes:
            finished.append(self._outcomes.popleft())
        return finished

    def join(self) -> None:
        """Waits until every submitted job has run, then stops the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        thread.join()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, label = item
            try:
                job()
            except Exception as error:
                self._outcomes.append((label, error))
            else:
                self._outcomes.append((label, None))
