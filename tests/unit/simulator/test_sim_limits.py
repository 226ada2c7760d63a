"""The simulator's Sysdig service limits and latency model, through `SimulatorServer.handle`
(no socket): samples scanned, metrics per query, queries in flight, samples per minute, and the
time an answer takes, spent with the injected `sleep`."""

from __future__ import annotations

from typing import Any

import pytest

from chargeback_simulator.series import MemoryStorage
from chargeback_simulator.server import Latency, SimulatorServer
from exporter.clock import FakeClock

T = 1_800_000_000
QUERY = "/prometheus/api/v1/query"


def storage() -> MemoryStorage:
    """Three metrics, two series each, one sample every 10 s for the 10 minutes before T."""
    s = MemoryStorage()
    for metric in ("a", "b", "c"):
        for pod in ("p1", "p2"):
            s.add({"__name__": metric, "pod": pod}, [(t, 1.0) for t in range(T - 590, T + 1, 10)])
    return s


class Rig:
    def __init__(self, latency: Latency | None = None) -> None:
        self.slept: list[float] = []
        self.now = 0.0
        self.server = SimulatorServer(storage(), FakeClock(T), sleep=self.slept.append,
                                      timer=lambda: self.now, latency=latency)

    def ask(self, query: str, timeout: str | None = None) -> tuple[int, Any, dict[str, str]]:
        params = {"query": [query], "time": [str(T)]}
        if timeout is not None:
            params["timeout"] = [timeout]
        return self.server.handle("GET", QUERY, params, {}, b"")


def test_samples_scanned_count_every_selector_even_when_computed_once() -> None:
    rig = Rig()
    status, _, _ = rig.ask("sum(count_over_time(a[10m]))")
    assert status == 200 and rig.server.stats[-1].samples == 2 * 60
    # The same selector twice reads its data twice, as Sysdig would.
    rig.ask("sum(count_over_time(a[10m])) + sum(count_over_time(a[10m]))")
    assert rig.server.stats[-1].samples == 2 * 2 * 60
    assert rig.server.stats[-1].series == 1


def test_an_answer_takes_the_modelled_time_and_one_beyond_the_timeout_is_given_up() -> None:
    rig = Rig(Latency(base=0.5, samples_per_second=100.0))
    assert rig.ask("sum(count_over_time(a[10m]))")[0] == 200
    assert rig.slept == [pytest.approx(0.5 + 120 / 100)]
    status, body, _ = rig.ask("sum(count_over_time(a[10m]))", timeout="1s")
    assert status == 503 and body["errorType"] == "timeout"
    assert rig.slept[-1] == 1.0
    assert Rig().ask("sum(count_over_time(a[10m]))")[0] == 200  # no model: no time spent


def test_a_query_naming_more_metrics_than_the_limit_is_refused() -> None:
    rig = Rig()
    rig.server.metrics_limit = 2
    query = "sum(last_over_time(a[1m])) + sum(last_over_time(b[1m])) + sum(last_over_time(c[1m]))"
    status, body, _ = rig.ask(query)
    assert status == 422 and "3 metrics, more than the limit of 2" in body["error"]
    assert rig.ask("sum(last_over_time(a[1m])) + sum(last_over_time(b[1m]))")[0] == 200


def test_samples_per_minute_throttle_until_the_minute_has_passed() -> None:
    rig = Rig()
    rig.server.samples_per_minute = 200
    assert rig.ask("sum(count_over_time(a[10m]))")[0] == 200  # 120 samples
    status, _, headers = rig.ask("sum(count_over_time(b[10m]))")  # 240 in the minute
    assert status == 429 and headers["Retry-After"] == "60"
    rig.now = 60.5
    assert rig.ask("sum(count_over_time(b[10m]))")[0] == 200


def test_queries_beyond_the_concurrency_limit_are_throttled() -> None:
    rig = Rig()
    rig.server.concurrency_limit = 0
    status, body, headers = rig.ask("sum(last_over_time(a[1m]))")
    assert status == 429 and body["message"] == "Too many requests" and headers["Retry-After"] == "1"
