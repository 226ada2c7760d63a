"""A period's wall time against its slowest Sysdig query, on a replay with Sysdig's latency.

The replay server answers each query after the time the simulator's latency model gives the
samples it scanned (`python -m bench _replay DIR --latency`). The exporter runs as the worker
does, queries concurrent within `sysdig.max_concurrency` and cluster groups fetched ahead of the
one being computed; each query's wall time is taken around `SysdigClient.query_instant`
(retries included), the period's around `Pipeline.export` (measured, built and published chunk
by chunk).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.fleets import (
    SETTLE,
    WALL_CONCURRENCY,
    WALL_PREFETCH,
    exporter_config,
    period,
    write_rate_card,
)
from bench.measure import INSTANCE
from exporter.clock import FakeClock
from exporter.sysdig import SysdigClient
from exporter.wiring import build_pipeline, build_sink

CONCURRENCY = WALL_CONCURRENCY
PREFETCH = WALL_PREFETCH


@contextmanager
def timed_queries(walls: list[float], ends: list[float] | None = None) -> Iterator[None]:
    """Append the wall time of every `SysdigClient.query_instant` call to `walls`, and the
    `time.perf_counter()` it returned at to `ends`."""
    original = SysdigClient.query_instant
    lock = threading.Lock()

    def timed(self: SysdigClient, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            done = time.perf_counter()
            with lock:
                walls.append(done - began)
                if ends is not None:
                    ends.append(done)

    SysdigClient.query_instant = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        SysdigClient.query_instant = original  # type: ignore[method-assign]


def wall(recording: Path, url: str, bootstrap: str, tag: str, periods: int,
         concurrency: int = CONCURRENCY, prefetch: int = PREFETCH) -> dict[str, Any]:
    """One warm-up period, then `periods` measured by a new pipeline: per period its wall time,
    its slowest query's and their ratio. The first measured period is its source's first, whose
    pre-count precedes the groups' queries (`first`); the later ones size their groups from the
    previous period's counts while their own pre-count runs."""
    cfg = exporter_config(url, bootstrap, tag, write_rate_card(recording.parent),
                          concurrency=concurrency, prefetch=prefetch)
    clock = FakeClock(period(0).end + SETTLE)
    pipeline = build_pipeline(cfg, clock)
    sink = build_sink(cfg, clock)
    sink.start()
    runs = []
    walls: list[float] = []
    ends: list[float] = []
    try:
        with timed_queries(walls, ends):
            for i in range(-1, periods):
                if i == 0:
                    pipeline = build_pipeline(cfg, clock)  # a source without counts
                p = period(i)
                clock.set(p.end + SETTLE)
                walls.clear()
                ends.clear()
                began = time.perf_counter()
                cpu = time.process_time()
                pipeline.export(p, sink, INSTANCE)
                took = time.perf_counter() - began
                if i >= 0:
                    # After the last answer: what the exporter does once Sysdig is done.
                    runs.append({"first": i == 0, "period_wall": took,
                                 "slowest_query": max(walls), "queries": len(walls),
                                 "ratio": took / max(walls),
                                 "after_last_answer": began + took - max(ends),
                                 "cpu": time.process_time() - cpu})
    finally:
        sink.close()
    return {"concurrency": concurrency, "prefetch": prefetch, "runs": runs}
