"""Ctrl-C always stops `fit`, even where some code on the way swallows the `KeyboardInterrupt`.

Python raises `KeyboardInterrupt` wherever the main thread happens to run
Python code when the signal is handled, and some of those places lose it:

- Python run inside compiled code (`tf.numpy_function`, `jax.debug.callback`,
  the chunk hooks of Score-CAM and Ablation-CAM) hands it back as the
  framework's own error, which an `except Exception` then takes for a
  failed event;
- a `__del__` method or a garbage-collector callback (TensorFlow's resource
  deleters run after every step) prints "Exception ignored in ..." and goes on.

So the interrupts are counted: a SIGINT handler that raises as Python's
default one does, and also counts; host hooks count the interrupts that
reach them. Code that catches broad errors (the callback's event, a compiled
call) compares the count before and after and raises `KeyboardInterrupt`
itself; the callback also checks at every epoch end, so an interrupt lost
anywhere stops training at the latest at the end of the epoch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

_count = 0


def count() -> int:
    """Interrupts seen so far in this process (by the handler or a host hook)."""
    return _count


def note() -> None:
    """Counts an interrupt that some code caught (a host hook inside compiled code)."""
    global _count
    _count += 1


def _handler(signum: int, frame: Any) -> None:
    note()
    raise KeyboardInterrupt


def watch() -> int:
    """Counts every SIGINT from now on (where Python's default handler is in place).

    A handler the user installed is left alone. Returns the current count.
    """
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)
    return _count


def unwatch() -> None:
    """Puts Python's default SIGINT handler back, where `watch` installed its own."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is _handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def raise_if_interrupted(since: int, error: BaseException | None = None) -> None:
    """Raises `KeyboardInterrupt` (from `error`) if an interrupt came after count `since`."""
    if _count > since:
        raise KeyboardInterrupt from error


def host_hook(callback: Callable[..., Any]) -> Callable[..., Any]:
    """`callback`, counting a `KeyboardInterrupt` raised in it (then raised on, as it was)."""

    def hook(*args: Any) -> Any:
        try:
            return callback(*args)
        except KeyboardInterrupt:
            note()
            raise

    return hook


def interruptible(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, whose errors become `KeyboardInterrupt` when an interrupt came during the call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        before = _count
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise_if_interrupted(before, error)
            raise

    return call
