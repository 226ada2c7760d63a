"""A simulator per test, its fleet, and a configuration pointing the exporter at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.server import SimulatorServer, Team
from exporter import cli
from exporter.clock import FakeClock
from exporter.config import Config, load_config

H = 3600
T0 = 1_794_009_600  # 2026-11-07T00:00:00Z, aligned to hours and days
TOKEN = "sim-token-4f1c9a"
Run = Callable[..., tuple[int, str, str]]


class Sim:
    """A running simulator with its fleet and clock."""

    def __init__(self, spec: FleetSpec, now: int, history: int = 12 * H,
                 stamping: str = "sysdig", teams: dict[str, Team] | None = None) -> None:
        self.clock = FakeClock(now)
        self.fleet = Fleet(spec, clock=self.clock, history=history)
        self.server = SimulatorServer(self.fleet, self.clock, tokens=[TOKEN],
                                      forbidden_tokens=["read-only-token"], stamping=stamping,
                                      teams=teams)

    def config(self, **overrides: Any) -> Config:
        base: dict[str, Any] = {
            "sysdig": {"url": self.server.url, "token": TOKEN, "timeout": 30, "max_attempts": 3,
                       "max_concurrency": 4},
            "periods": {"settle_delay": "2m"},
        }
        for section, values in overrides.items():
            base.setdefault(section, {}).update(values)
        return load_config(environ={}, overrides=base)


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Sim]]:
    with ExitStack() as servers:

        def make(seed: int = 1, now: int = T0 + 3 * H + 300, history: int = 12 * H,
                 stamping: str = "sysdig", teams: dict[str, Team] | None = None, **spec: Any) -> Sim:
            sim = Sim(FleetSpec(seed=seed, **spec), now, history, stamping=stamping, teams=teams)
            servers.enter_context(sim.server)  # started now, stopped when the test ends
            return sim

        yield make


@pytest.fixture
def sim(sim_factory: Callable[..., Sim]) -> Sim:
    return sim_factory()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """`run(*argv)`: `chargeback-exporter ARGV` on a clock just after T0 + 3 h; (exit code,
    stdout, stderr)."""
    clock = FakeClock(T0 + 3 * H + 300)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv), clock)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
