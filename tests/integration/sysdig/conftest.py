"""Fixtures of the tests against the simulator's HTTP API: a small fleet, its server, and real
sdcclient clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter
from sdcclient import SdMonitorClient

from chargeback_simulator.fleet import Fleet
from chargeback_simulator.server import SimulatorServer
from exporter.clock import FakeClock
from tests.rigs.small_fleet import NOW, READ_ONLY, SMALL, T0, TIMELINES, TOKEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def fleet(clock: FakeClock) -> Fleet:
    """A small fleet whose 10 s data ends at NOW and starts 6 h before T0."""
    return Fleet(SMALL, clock=clock, history=NOW - (T0 - 6 * 3600), timelines=TIMELINES)


@pytest.fixture
def server(fleet: Fleet, clock: FakeClock) -> Iterator[SimulatorServer]:
    with SimulatorServer(fleet, clock, tokens=[TOKEN], forbidden_tokens=[READ_ONLY]) as srv:
        yield srv


@pytest.fixture
def client(server: SimulatorServer) -> SdMonitorClient:
    """The real, unmodified client with its own retrying adapter."""
    return SdMonitorClient(token=TOKEN, sdc_url=server.url)


@pytest.fixture
def no_retry_client(server: SimulatorServer) -> SdMonitorClient:
    """The real client with a zero-retry adapter, so a 5xx comes back as (False, msg)."""
    c = SdMonitorClient(token=TOKEN, sdc_url=server.url)
    adapter = HTTPAdapter(max_retries=0)
    c.http.mount("http://", adapter)
    c.http.mount("https://", adapter)
    return c


@pytest.fixture
def urllib3_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record urllib3's retry sleeps instead of sleeping (Retry-After and backoff)."""
    sleeps: list[float] = []
    import urllib3.util.retry as retry_module

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(retry_module.time, "sleep", fake_sleep)
    return sleeps


@pytest.fixture
def raw_get(server: SimulatorServer) -> Callable[..., requests.Response]:
    """Plain `requests.get` against the server with the valid token (for raw HTTP checks)."""

    def get(path: str, token: str | None = TOKEN, **params: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(server.url + path, params=params, headers=headers, timeout=30)

    return get
