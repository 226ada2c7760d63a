"""Session fixtures: one small fleet served by the simulator AND by a real Prometheus.

`conformance_data` describes the data set (fleet, clock, first and last sample); `prometheus`
is Debian's prometheus loaded with exactly that fleet's samples; `prometheus_proxy` serves it
as Sysdig does (`/prometheus` prefix, Bearer auth) so the real sdcclient can query it;
`simulator` serves the same fleet. Point an `SdMonitorClient(token=data.token, sdc_url=...)` at
either URL. Prometheus missing is a failure with a clear message, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.prometheus import RealPrometheus, SysdigPrometheusProxy
from chargeback_simulator.server import SimulatorServer
from exporter.clock import FakeClock
from tests.rigs.prometheus import serving

T0 = 1704067200  # 2024-01-01T00:00:00Z: the first sample
HOURS = 2  # full hours of data before the partial last one
NOW = T0 + HOURS * 3600 + 2400  # the data ends 40 minutes into the third hour
TOKEN = "conformance-token"
SPEC = FleetSpec(seed=11, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=3,
                 max_replicas=2, max_containers=2, allocations=True)


@dataclass(frozen=True)
class ConformanceData:
    """The shared data set: samples exist at every 10 s step in `[start, now]`."""

    fleet: Fleet
    clock: FakeClock
    start: int
    now: int
    token: str


@pytest.fixture(scope="session")
def conformance_data() -> ConformanceData:
    clock = FakeClock(NOW)
    fleet = Fleet(SPEC, clock=clock, history=NOW - T0)
    return ConformanceData(fleet, clock, T0, NOW, TOKEN)


@pytest.fixture(scope="session")
def prometheus(conformance_data: ConformanceData,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPrometheus]:
    """A real Prometheus holding exactly the fleet's samples, stopped by PID at session end."""
    data = conformance_data
    with serving(RealPrometheus(tmp_path_factory.mktemp("prometheus")),
                 lambda server: server.load(data.fleet, data.start, data.now + 10),
                 "PromQL conformance") as server:
        yield server


@pytest.fixture(scope="session")
def prometheus_proxy(prometheus: RealPrometheus,
                     conformance_data: ConformanceData) -> Iterator[SysdigPrometheusProxy]:
    """The real Prometheus behind Sysdig's `/prometheus` prefix and Bearer auth."""
    with SysdigPrometheusProxy(prometheus.url, [conformance_data.token]) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def simulator(conformance_data: ConformanceData) -> Iterator[SimulatorServer]:
    """The simulator serving the same fleet, stamping range answers as Prometheus does: these
    tests compare PromQL semantics, not Sysdig's alignment of range answers."""
    with SimulatorServer(conformance_data.fleet, conformance_data.clock,
                         tokens=[conformance_data.token], stamping="prometheus") as server:
        yield server
