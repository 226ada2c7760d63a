"""Publishing test periods to a real broker and running `export focus` through the CLI."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import yaml

from exporter.clock import FakeClock
from exporter.config import Config
from exporter.consumer import latest_records, read_records
from exporter.periods import Period
from exporter.pipeline import Prior
from exporter.records import BillingRecord
from exporter.wiring import build_codec, build_pipeline, build_sink
from tests.fakes.memory import FakeSource
from tests.rigs.kafka import T0
from tests.rigs.rate_cards import JANUARY_2026

H = 3600

RATE_CARD = JANUARY_2026 + """\
    namespaces:
      - {namespace: tools, cpu: "0.0450"}
"""
"""Prices the FakeSource workloads differently per namespace (shop: default, tools: override)."""


def publish(cfg: Config, periods: Sequence[int], corrections: Sequence[int] = (),
            correction_coverage: Decimal = Decimal("0.97"), corrections_at: int | None = None,
            ) -> None:
    """Publish FakeSource periods starting at `periods`, then republish those in `corrections`
    as revision 1 with a lower sample coverage (so the two revisions differ). The clock, and so
    the `published_at` header, reads T0 + 6 h, then `corrections_at` for the corrections."""
    clock = FakeClock(T0 + 6 * H)
    source = FakeSource(clock)
    pipeline = build_pipeline(cfg, clock, source=source)
    sink = build_sink(cfg, clock)
    sink.start()
    try:
        for start in periods:
            pipeline.export(Period(start, start + H), sink, cfg.kafka.transactional_id)
        if corrections_at is not None:
            clock.sleep(corrections_at - clock.time())  # a fake clock: only moves time on
        for start in corrections:
            source.coverage[start] = correction_coverage
            pipeline.export(Period(start, start + H), sink, cfg.kafka.transactional_id,
                            prior={"prod": Prior(0, "published-before")})
    finally:
        sink.close()


def consumed(cfg: Config) -> dict[str, BillingRecord]:
    """What an upserting read_committed consumer holds, read independently of the export."""
    return latest_records(read_records(cfg.kafka, build_codec(cfg)))


def config_file(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    return path


@dataclass
class Run:
    code: int
    out: str
    err: str


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    text = path.read_bytes().decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows
