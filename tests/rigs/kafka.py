"""Configurations for tests against a real broker (a config per test with its own topics), and
publishing periods to it the way the live path does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from exporter.clock import FakeClock
from exporter.config import Config, load_config
from exporter.periods import Period

T0 = 1_794_000_000 - (1_794_000_000 % 3600)  # an aligned hour in 2026


def make_config(bootstrap: str, **overrides: Any) -> Config:
    """A configuration for `bootstrap` with topics and transactional id unique to the caller."""
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "sysdig": {"url": "http://127.0.0.1:1", "token": "test-token"},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "partitions": 3,
            "replication_factor": 1,
            "transactional_id": f"exporter-{tag}",
            "transaction_timeout": 30,
            "connect_timeout": 10,
            "topics": {"records": f"records-{tag}", "manifests": f"manifests-{tag}",
                       "checkpoint": f"checkpoint-{tag}"},
        },
        "periods": {"settle_delay": "5m", "start": T0},
    }
    for section, values in overrides.items():
        base.setdefault(section, {}).update(values)
    return load_config(environ={}, overrides=base)


def hours(count: int, start: int = T0) -> list[Period]:
    """`count` consecutive one-hour periods from `start`."""
    return [Period(start + i * 3600, start + (i + 1) * 3600) for i in range(count)]


def publish_periods(cfg: Config, clock: FakeClock, periods: list[Period], source: Any = None) -> None:
    """Publish `periods` in order as the live path does (one transaction each), fake source."""
    from exporter.wiring import build_pipeline
    from tests.fakes.memory import FakeSource

    publish_live(build_pipeline(cfg, clock, source=source or FakeSource(clock)), cfg, clock, periods)


def publish_live(pipeline: Any, cfg: Config, clock: FakeClock, periods: Sequence[Period]) -> None:
    """What `run --once` does for `periods` with `pipeline`: the live sink, one transaction
    (records, manifests, checkpoint) per period, in order."""
    from exporter.publication import ExactlyOnceSink
    from exporter.wiring import build_checkpoints, build_sink

    sink = build_sink(cfg, clock)
    sink.start()
    policy = ExactlyOnceSink(sink, build_checkpoints(cfg, clock), clock)
    try:
        for p in periods:
            pipeline.export(p, policy, cfg.kafka.transactional_id)
    finally:
        sink.close()
