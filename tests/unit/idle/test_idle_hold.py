"""A cluster whose nodes report no allocatable is held while idle is measured, never idle 0."""

from __future__ import annotations

import pytest

from exporter.clock import FakeClock
from exporter.config import load_config
from exporter.errors import IncompleteDataError
from exporter.periods import Period
from exporter.wiring import build_pipeline
from tests.fakes.memory import FakeSource

T0 = 1_794_009_600


def test_charges_without_allocatable_hold_the_period() -> None:
    clock = FakeClock(T0 + 7200)
    cfg = load_config(environ={}, overrides={"idle": {"enabled": True}})
    pipeline = build_pipeline(cfg, clock, source=FakeSource(clock))  # no allocatable answer
    with pytest.raises(IncompleteDataError, match="no node allocatable series for cluster"):
        pipeline.measure(Period(T0, T0 + 3600))
    off = build_pipeline(load_config(environ={}), clock, source=FakeSource(clock))
    _, _, priced = off.measure(Period(T0, T0 + 3600))
    assert priced and not [p for p in priced if p.line.allocation.startswith("idle")]
