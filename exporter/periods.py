"""Half-open, UTC-aligned periods `[start, end)` in integer epoch seconds."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> int:
    """Parse `90s`, `10m`, `1h`, `1d` (or a number of seconds) into whole seconds."""
    if isinstance(text, int | float):
        if text < 0 or int(text) != text:
            raise ValueError(f"duration must be a whole, non-negative number of seconds: {text!r}")
        return int(text)
    value = text.strip()
    if value.isdigit():
        return int(value)
    if not value:
        raise ValueError("empty duration (expected e.g. 10m, 1h, 1d)")
    total = 0
    rest = value
    while rest:
        m = re.match(r"^(\d+)(ms|s|m|h|d|w)", rest)
        if not m:
            raise ValueError(f"not a duration: {text!r} (expected e.g. 10m, 1h, 1d)")
        if m.group(2) == "ms":
            raise ValueError(f"sub-second durations are not supported: {text!r}")
        total += int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        rest = rest[m.end() :]
    return total


def format_duration(seconds: int) -> str:
    """Inverse of `parse_duration` for whole units: 3600 -> `1h`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_time(text: str) -> int:
    """Parse RFC 3339 / ISO 8601 (naive means UTC) or epoch seconds into epoch seconds."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return int(float(value))
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (expected RFC 3339, e.g. 2026-11-01T00:00:00Z)") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def iso(ts: int | float) -> str:
    """Epoch seconds to `YYYY-MM-DDTHH:MM:SSZ`."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A billing period `[start, end)`, epoch seconds, UTC."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty period [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"[{iso(self.start)}, {iso(self.end)})"


def align_down(ts: int, length: int) -> int:
    """Largest multiple of `length` that is <= ts (UTC-aligned)."""
    return ts - (ts % length)


def period_containing(ts: int, length: int) -> Period:
    """The aligned period of `length` seconds that contains `ts`."""
    start = align_down(ts, length)
    return Period(start, start + length)


def iter_periods(start: int, end: int, length: int) -> Iterator[Period]:
    """Aligned periods fully inside `[start, end)`; `start` is aligned up, `end` down."""
    first = align_down(start, length)
    if first < start:
        first += length
    t = first
    while t + length <= end:
        yield Period(t, t + length)
        t += length


def closed_periods(after: int, now: float, length: int, settle: int) -> Iterator[Period]:
    """Periods starting at or after `after` whose end plus the settle delay has passed `now`."""
    horizon = int(now) - settle
    return iter_periods(after, horizon, length)
