"""SIGTERM and SIGHUP raised as exceptions in the main thread, like Ctrl-C's KeyboardInterrupt, so a sweep that
is told to stop unwinds: it ends its trial processes, records them, releases its locks and removes its
temporary files, instead of vanishing and leaving its children running."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The process got SIGTERM or SIGHUP; `signum` says which (exit status 128 + signum, as shells report)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise Interrupted (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.signal(signum, _raise) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def exit_status(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + the signal's number otherwise."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
