"""A simulator on a fake clock with its fleet, and a configuration pointing the exporter at it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from chargeback_simulator.fleet import Fleet, FleetSpec, Grain
from chargeback_simulator.series import LabelMatcher, SeriesSet
from chargeback_simulator.server import SimulatorServer, Team
from exporter.clock import FakeClock
from exporter.config import Config, load_config
from exporter.model import Resource, SampleSums, WorkloadKey

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


class LateCluster:
    """`fleet` as Sysdig shows it when `cluster` joins at `since` (epoch seconds, a period
    boundary): none of its samples stamped before then, and none of its workloads in the ground
    truth of a period that ends by then. Everything else is `fleet`'s."""

    def __init__(self, fleet: Fleet, cluster: str, since: int) -> None:
        self.fleet = fleet
        self.cluster = cluster
        self.since = since

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        got = self.fleet.select(matchers, start_ms, end_ms)
        rows = [i for i, labels in enumerate(got.labels)
                if labels.get("kube_cluster_name") == self.cluster]
        early = np.flatnonzero(got.ts < self.since * 1000)
        if not rows or not len(early):
            return got
        values = got.values.copy()
        values[np.ix_(np.asarray(rows, dtype=np.intp), early)] = np.nan
        return SeriesSet(got.labels, got.ts, values)

    def ground_truth(self, start: int, end: int, grain: Grain = "pod",
                     resolution: int | None = None,
                     ) -> dict[WorkloadKey, dict[Resource, SampleSums]]:
        truth: dict[WorkloadKey, dict[Resource, SampleSums]] = self.fleet.ground_truth(
            start, end, grain, resolution)
        if start >= self.since:
            return truth
        assert end <= self.since, "a period across the cluster's first sample"
        return {k: v for k, v in truth.items() if k.cluster != self.cluster}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)
