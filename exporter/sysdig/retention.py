"""Sysdig's retention: at which resolution a period can still be measured.

Sysdig rolls its data up: it keeps 10 s samples for a few hours, 1-minute ones for a week, and
so on, per tenant (Sysdig can change a tenant's windows). This module is the one model of that,
used by every part of the exporter that picks a resolution: the live worker and the report
(through `SysdigSource.step_for`) and the backfill plan. docs/sysdig.md, "Retention".

- The windows come from Sysdig's `GET /api/history/timelines/` (`SysdigClient.timelines`), read
  on first use and again once older than `refresh` seconds on the injected clock. `check-sysdig`
  reads them with `parse_timelines` too.
- When that call is refused or fails (404, 5xx after retries, a malformed body), the documented
  July 2020 table (`DOCUMENTED`) is used and a warning says so. A rejected token (401/403) is
  raised: it is not a reason to guess.
- A period is measured at the finest resolution whose window still holds its start, never finer
  than `periods.resolution`. A period beyond every window is a `RetentionError`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from exporter.clock import Clock
from exporter.errors import (
    RetentionError,
    SourceAuthError,
    SourceError,
    SourceQueryError,
    SourceUnavailable,
)
from exporter.periods import Period, format_duration

log = logging.getLogger("exporter.retention")

HOUR = 3600
DAY = 86400
REFRESH = DAY
# After a failed read the documented table is used; ask again sooner than a full `refresh`.
RETRY_FAILED = HOUR

Origin = Literal["timelines", "documented", "disabled"]


@dataclass(frozen=True, slots=True)
class Tier:
    """Sysdig keeps data at `step` seconds for `window` seconds back from now (None: forever)."""

    step: int
    window: int | None

    def holds(self, start: float, now: float) -> bool:
        """Whether data stamped `start` is still kept at this tier at time `now`."""
        return self.window is None or now - start <= self.window


# Sysdig's data retention page, "As of July 2020" (Essentials and Enterprise alike): 10 s for
# 4 hours, 1 minute for 1 week, 10 minutes for 2 weeks, 1 hour for 2 months, 1 day for 15 months.
DOCUMENTED: tuple[Tier, ...] = (
    Tier(10, 4 * HOUR),
    Tier(60, 7 * DAY),
    Tier(600, 14 * DAY),
    Tier(3600, 60 * DAY),
    Tier(86400, 450 * DAY),
)


def parse_timelines(body: Any, now: float) -> tuple[Tier, ...]:
    """Tiers from a timelines body, finest first; `now` (epoch seconds) stands for a missing `to`.

    The body is `{"agents": [{"from": µs | null, "to": µs | null, "sampling": µs}, ...]}`; a
    tier's window is `to - from` (`from` null: kept forever). Raises `SourceQueryError` for any
    other shape.
    """
    agents = body.get("agents") if isinstance(body, dict) else None
    if not isinstance(agents, list) or not agents:
        raise SourceQueryError("Sysdig retention timelines: malformed response: no 'agents' list")
    tiers: list[Tier] = []
    for a in agents:
        if not isinstance(a, dict):
            raise SourceQueryError(f"Sysdig retention timelines: malformed entry {str(a)[:80]}")
        sampling, since, until = a.get("sampling"), a.get("from"), a.get("to")
        if (not isinstance(sampling, int) or isinstance(sampling, bool) or sampling < 1_000_000
                or sampling % 1_000_000 or not _int_or_none(since) or not _int_or_none(until)):
            raise SourceQueryError(f"Sysdig retention timelines: malformed entry {str(a)[:80]}")
        window: int | None = None
        if since is not None:
            end: int = until if until is not None else int(now * 1_000_000)
            if end <= since:
                raise SourceQueryError(
                    f"Sysdig retention timelines: malformed entry {str(a)[:80]} (from >= to)")
            window = (end - since) // 1_000_000
        tiers.append(Tier(sampling // 1_000_000, window))
    return tuple(sorted(tiers, key=lambda t: t.step))


def _int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


class RetentionModel(Protocol):
    """Chooses the step a period is measured at."""

    def step_for(self, period: Period) -> int:
        """The step (seconds) to measure `period` at.

        Raises `RetentionError` when Sysdig keeps none of it, `SourceAuthError` when Sysdig
        rejects the token while being asked.
        """
        ...


class TimelinesReader(Protocol):
    """Reads Sysdig's retention timelines."""

    def timelines(self) -> Any:
        """The body of `GET /api/history/timelines/`, or None when Sysdig has no such endpoint
        (HTTP 404). Raises `SourceUnavailable`, `SourceAuthError`, `SourceQueryError`.

        `SysdigClient.timelines` is the real one.
        """
        ...


class Retention:
    """The retention model: Sysdig's tiers, and the step each period is measured at.

    `reader` is asked for the timelines (None: there is no Sysdig to ask, the documented table
    is used as is). With `enabled` False (`sysdig.retention_tiers: false`) Sysdig is never
    asked and every period is measured at `resolution`, still refused beyond the documented
    table's longest window. Thread-safe.
    """

    def __init__(self, reader: TimelinesReader | None, *, clock: Clock, resolution: int = 10,
                 refresh: int = REFRESH, enabled: bool = True) -> None:
        if refresh <= 0:
            raise ValueError(f"refresh must be positive, got {refresh}")
        self._reader = reader
        self._clock = clock
        self.resolution = resolution
        self._refresh = refresh
        self._enabled = enabled
        self._tiers: tuple[Tier, ...] = ()
        self._origin: Origin = "documented"
        self._read_at: float | None = None
        self._valid_for = 0
        self._lock = threading.Lock()

    @property
    def origin(self) -> Origin:
        """Where the current tiers came from: `timelines`, `documented` or `disabled`."""
        self.tiers()
        return self._origin

    def tiers(self) -> tuple[Tier, ...]:
        """The current tiers, finest first; read from Sysdig when missing or stale.

        Raises `SourceAuthError` when Sysdig rejects the token.
        """
        with self._lock:
            now = self._clock.time()
            if self._read_at is None or now - self._read_at >= self._valid_for:
                self._tiers, self._origin, self._valid_for = self._read(now)
                self._read_at = now
            return self._tiers

    def _read(self, now: float) -> tuple[tuple[Tier, ...], Origin, int]:
        if not self._enabled:
            return (Tier(self.resolution, DOCUMENTED[-1].window),), "disabled", self._refresh
        if self._reader is None:
            return DOCUMENTED, "documented", self._refresh
        try:
            body = self._reader.timelines()
            if body is None:
                reason = "Sysdig serves no retention timelines (HTTP 404)"
            else:
                tiers = parse_timelines(body, now)
                log.info("Sysdig retention timelines read", extra={
                    "tiers": ", ".join(f"{format_duration(t.step)} for "
                                       f"{'ever' if t.window is None else format_duration(t.window)}"
                                       for t in tiers)})
                return tiers, "timelines", self._refresh
        except SourceAuthError:
            raise
        except (SourceUnavailable, SourceError) as exc:
            reason = str(exc)
        log.warning("Sysdig retention timelines unavailable; using the documented July 2020 "
                    "retention table (10s for 4h, 1m for 1w, 10m for 2w, 1h for 60d, 1d for 450d)",
                    extra={"error": reason})
        return DOCUMENTED, "documented", min(self._refresh, RETRY_FAILED)

    def available_step(self, period: Period) -> int | None:
        """The finest step Sysdig still holds `period` at, at least `resolution`; None if none."""
        now = self._clock.time()
        for tier in self.tiers():
            if tier.holds(period.start, now):
                return max(tier.step, self.resolution)
        return None

    def step_for(self, period: Period) -> int:
        """`available_step`, or `RetentionError` beyond every window."""
        step = self.available_step(period)
        if step is not None:
            return step
        age = int(self._clock.time()) - period.start
        longest = max((t.window or 0) for t in self.tiers())
        raise RetentionError(
            f"period {period} is {format_duration(age)} old, beyond Sysdig's longest retention "
            f"({format_duration(longest)}, {self.origin}); its usage can no longer be measured"
        )


class Pinned:
    """A model that measures every period at one `step` (a backfill plan already chose it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def step_for(self, period: Period) -> int:
        return self.step
