"""Integration tests: every test below this folder talks to a real broker, Prometheus, the
simulator's HTTP server, a subprocess or an external binary, and is marked `integration` here.

The fixtures: a simulator per test, its fleet, and a configuration pointing the exporter at it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from chargeback_simulator.fleet import FleetSpec
from chargeback_simulator.server import Team
from exporter import cli
from exporter.clock import FakeClock
from tests.rigs.markers import mark_below
from tests.rigs.sim import T0, H, Run, Sim

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_below(HERE, items, pytest.mark.integration)


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
