"""Fixtures of the broker tests: a backfill rig (the Sysdig simulator, a real broker, the
backfill command) and `export focus` through the CLI."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from chargeback_simulator.localbroker import LocalBroker
from exporter import cli
from tests.rigs.backfill import T0, EditableSim, H, Rig
from tests.rigs.focus import Run


@pytest.fixture
def rig_factory(noida: LocalBroker, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """`rig_factory(now=..., history=...)`: a started simulator with its own topics."""
    configs = itertools.count(1)
    with ExitStack() as servers:

        def make(now: int = T0 + 6 * H + 300, history: int | None = 12 * H,
                 allocations: bool = False) -> Rig:
            sim = EditableSim(now, history, allocations=allocations)
            servers.enter_context(sim.server)  # started now, stopped when the test ends
            return Rig(sim, noida, tmp_path / f"config-{next(configs)}.yaml")

        yield make


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    return rig_factory()


@pytest.fixture
def export(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run `chargeback-exporter export focus` with the given arguments, capture its output."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = cli.main(["export", "focus", "--log.format", "text", *args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
