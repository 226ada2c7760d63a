"""A simulator on a fake clock with its fleet, and a configuration pointing the exporter at it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.server import SimulatorServer, Team
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
