"""The only place where wall-clock time is read; everything else takes a `Clock`."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of time that tests can control."""

    def time(self) -> float:
        """Return the current UTC time as epoch seconds. Never blocks."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for `seconds` (a fake clock advances instead of blocking)."""
        ...


class SystemClock:
    """Real time."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to, or when something sleeps on it."""

    def __init__(self, epoch: float = 0.0) -> None:
        self._now = float(epoch)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        with self._lock:
            self._now += seconds

    def set(self, epoch: float) -> None:
        """Jump to an absolute time (forward or backward)."""
        with self._lock:
            self._now = float(epoch)
