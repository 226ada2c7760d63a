"""System tests: the exporter as a whole under faults (crash campaign, outages, fuzzing, shutdown
and signals, secrets, TLS, bad input), all marked `integration` here.

The fixtures: a Sysdig simulator on a fake clock, and what the system tests build on it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from chargeback_simulator.fleet import REQUESTS, Fleet, FleetSpec
from chargeback_simulator.hostile import Hiding
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.series import METRIC_NAME, LabelMatcher, SeriesSet
from chargeback_simulator.server import SimulatorServer
from exporter.clock import FakeClock
from exporter.config import Config, load_config
from exporter.metrics import Metrics
from exporter.model import ChargeLine
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pipeline import charge_lines
from exporter.run import assemble
from exporter.sysdig import SysdigSource
from exporter.wiring import build_source, build_worker_parts
from tests.rigs.campaign import tune_server
from tests.rigs.harness import q
from tests.rigs.markers import mark_below

H = 3600
T0 = 1_794_009_600  # 2026-11-07T00:00:00Z, aligned to hours and days
TOKEN = "reliability-token-8d2e"
PERIOD = Period(T0 + H, T0 + 2 * H)
SPEC = FleetSpec(seed=4, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=3)

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_below(HERE, items, pytest.mark.integration)


class GapStorage:
    """The fleet, with the request metric's samples missing inside `gap` (a scrape outage).

    `gap` is `(start, end)` in epoch seconds, or None for the complete fleet.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.gap: tuple[int, int] | None = None

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        data = self.fleet.select(matchers, start_ms, end_ms)
        if self.gap is None or not len(data):
            return data
        rows = np.array([i for i, labels in enumerate(data.labels) if labels.get(METRIC_NAME) == REQUESTS],
                        dtype=np.int64)
        cols = np.flatnonzero((data.ts >= self.gap[0] * 1000) & (data.ts < self.gap[1] * 1000))
        if not len(rows) or not len(cols):
            return data
        values = data.values.copy()  # the fleet caches its arrays; never write into them
        values[np.ix_(rows, cols)] = np.nan
        return SeriesSet(data.labels, data.ts, values)


class Sim:
    """A simulator serving `spec` (default `SPEC`) through a `GapStorage` and `Hiding`, on a fake
    clock 3 h after T0."""

    def __init__(self, spec: FleetSpec = SPEC) -> None:
        self.clock = FakeClock(T0 + 3 * H + 300)
        self.fleet = Fleet(spec, clock=self.clock, history=12 * H)
        self.storage = GapStorage(self.fleet)
        self.hiding = Hiding(self.storage)
        self.server = SimulatorServer(self.hiding, self.clock, tokens=[TOKEN])

    def config(self, **overrides: dict[str, Any]) -> Config:
        """Sysdig pointed at the simulator (one query at a time, so faults hit in order)."""
        tag = uuid.uuid4().hex[:8]
        base: dict[str, Any] = {
            "sysdig": {"url": self.server.url, "token": TOKEN, "timeout": 10, "max_attempts": 3,
                       "max_retry_time": 300, "max_concurrency": 1, "retention_tiers": False},
            "periods": {"settle_delay": "5m"},
            "kafka": {"partitions": 3, "replication_factor": 1, "transactional_id": f"faults-{tag}",
                      "transaction_timeout": 30, "connect_timeout": 10,
                      "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                                 "checkpoint": f"c-{tag}"}},
            "web": {"enabled": False},
        }
        for section, values in overrides.items():
            base.setdefault(section, {}).update(values)
        return load_config(environ={}, overrides=base)

    def source(self, **sysdig: Any) -> SysdigSource:
        return build_source(self.config(sysdig=sysdig), self.clock)

    def prometheus_requests(self) -> int:
        return sum(1 for r in self.server.requests if r.path.startswith("/prometheus/"))

    def lines(self, source: SysdigSource, period: Period = PERIOD) -> list[ChargeLine]:
        return charge_lines(source.fetch(period), OrgModel(self.config().org))

    def assert_ground_truth(self, lines: list[ChargeLine], period: Period = PERIOD) -> None:
        truth = self.fleet.ground_truth(period.start, period.end)
        got = {(ln.workload, ln.resource): (q(ln.usage), q(ln.request), q(ln.chargeable)) for ln in lines}
        want = {(k, r): (q(s.usage), q(s.request), q(s.chargeable)) for k, per in truth.items()
                for r, s in per.items()}
        assert got == want


def worker_for(sim: Sim, broker: LocalBroker, tag: str | None = None, **sections: dict[str, Any]
               ) -> tuple[Any, Config, Metrics]:
    """A started worker on the simulator: hourly periods from PERIOD, four queries at a time.

    The same `tag` gives the same transactional id and topics, so a second worker with it is a
    restart of the first; `sections` are merged into the config's sections of those names.
    """
    tag = tag or uuid.uuid4().hex[:8]
    cfg = sim.config(periods={"length": "1h", "settle_delay": "5m", "start": PERIOD.start,
                              **sections.get("periods", {})},
                     kafka={"bootstrap_servers": broker.bootstrap, "transactional_id": f"worker-{tag}",
                            "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                                       "checkpoint": f"c-{tag}"}},
                     sysdig={"max_concurrency": 4, **sections.get("sysdig", {})},
                     **{k: v for k, v in sections.items() if k not in ("periods", "kafka", "sysdig")})
    metrics = Metrics(CollectorRegistry())
    worker = assemble(cfg, sim.clock, metrics, build_worker_parts, serve_http=False).worker
    worker.start()
    return worker, cfg, metrics


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = Sim()
    s.server.start()
    tune_server(s.server)
    try:
        yield s
    finally:
        s.server.stop()


@pytest.fixture
def claims_sim() -> Iterator[Sim]:
    """`sim` with GPUs and persistent volume claims (`FleetSpec.allocations`)."""
    s = Sim(dataclasses.replace(SPEC, allocations=True))
    s.server.start()
    tune_server(s.server)
    try:
        yield s
    finally:
        s.server.stop()
