"""SIGTERM and SIGINT as a request to stop gracefully, from the first moment of a command on.

The command line calls `install` for the commands that stop gracefully (`run`, `backfill`)
before it imports anything heavy. A signal that arrives while such a command is still loading,
configuring or connecting is remembered, and `stop_on_signals` hands it to the worker as soon
as there is one. Only before `install` (the interpreter's own start-up, some tens of
milliseconds) does a SIGTERM still terminate the process with status 143.

This module imports nothing but the standard library, so that `install` comes early.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("exporter.run")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACEFUL_COMMANDS = ("run", "backfill")

_original: dict[int, Any] = {}  # the handlers `install` replaced
_requested: str | None = None  # the name of a signal taken before a worker was there


class Stoppable(Protocol):
    def request_stop(self) -> None:
        """Ask for a graceful stop after the period in flight. Never blocks."""
        ...


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _early(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = signal.Signals(signum).name
    _restore(_original)  # a second signal acts as usual


def install() -> None:
    """Remember SIGTERM and SIGINT until `stop_on_signals` takes over. Main thread only."""
    global _requested
    if not _main_thread() or _original:
        return
    _requested = None
    for sig in SIGNALS:
        _original[sig] = signal.getsignal(sig)
        signal.signal(sig, _early)


def uninstall() -> None:
    """Put back the handlers `install` replaced and forget any signal it took. Idempotent."""
    global _requested
    if _original and _main_thread():
        _restore(_original)
    _original.clear()
    _requested = None


@contextmanager
def stop_on_signals(worker: Stoppable) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT ask `worker` to stop gracefully.

    A signal that `install` took before is handed over at once. The first signal requests the
    stop and restores the handlers that were there before `install` (or before this), so a
    second one acts as it normally would (terminate, or KeyboardInterrupt). Outside the main
    thread, a no-op.
    """
    if not _main_thread():
        yield
        return
    previous: dict[int, Any] = {sig: _original.get(sig, signal.getsignal(sig)) for sig in SIGNALS}

    def request(name: str) -> None:
        log.info("stop requested", extra={"signal": name})
        worker.request_stop()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _restore(previous)
        request(signal.Signals(signum).name)

    if _requested is not None:
        request(_requested)
    else:
        for sig in SIGNALS:
            signal.signal(sig, on_signal)
    try:
        yield
    finally:
        _restore(previous)
