"""The worker's own path over many periods, in one process: CPU, wall time and RSS per period.

The exporter is wired as `run` wires it (`run.assemble` with the production factories), its
Sysdig URL pointing at the replay server, with the default query settings (concurrency, cluster
groups fetched ahead, group size). `Worker.export_due` exports one period per call
(`worker.max_batch_periods: 1`) from `periods.start` on: each period is measured, built and
published chunk by chunk through `ExactlyOnceSink` in its own transaction. Resident memory is
read after each period; the peak (`ru_maxrss`) at the end covers every period's inside too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.fleets import SETTLE, TOKEN, period, write_rate_card
from bench.measure import current_rss_mib, peak_rss_mib
from exporter.clock import FakeClock
from exporter.config import Config, load_config
from exporter.metrics import Metrics
from exporter.run import assemble
from exporter.wiring import build_worker_parts


def live_config(url: str, bootstrap: str, tag: str, rate_card: Path, periods: int) -> Config:
    """The worker's configuration: the defaults of `sysdig` (queries, groups, concurrency)
    except URL and token, hourly periods at a 60 s step from period 0, one period per batch."""
    return load_config(environ={}, overrides={
        "sysdig": {"url": url, "token": TOKEN, "timeout": 120, "max_attempts": 1,
                   "retention_tiers": False},
        "periods": {"length": "1h", "resolution": 60, "settle_delay": SETTLE, "grain": "pod",
                    "start": period(0).start},
        "worker": {"max_batch_periods": 1},
        "pricing": {"rate_card_file": str(rate_card)},
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 3, "replication_factor": 1,
                  "transactional_id": f"bench-{tag}", "transaction_timeout": 300,
                  "connect_timeout": 30,
                  "topics": {"records": f"bench-records-{tag}",
                             "manifests": f"bench-manifests-{tag}",
                             "checkpoint": f"bench-checkpoint-{tag}"}},
        "logging": {"level": "WARNING", "format": "text"},
    })


def live(recording: Path, url: str, bootstrap: str, tag: str, periods: int) -> dict[str, Any]:
    """Export `periods` consecutive periods with the worker; per period its wall and process
    CPU seconds and the RSS after it, and the peak RSS."""
    cfg = live_config(url, bootstrap, tag, write_rate_card(recording.parent), periods)
    clock = FakeClock(period(periods - 1).end + SETTLE)
    metrics = Metrics(CollectorRegistry())
    service = assemble(cfg, clock, metrics, build_worker_parts, serve_http=False)
    worker = service.worker
    runs: list[dict[str, float]] = []
    worker.start()
    try:
        for _ in range(periods):
            wall, cpu = time.perf_counter(), time.process_time()
            outcome = worker.export_due()
            took = time.perf_counter() - wall, time.process_time() - cpu
            if outcome.error is not None:
                raise outcome.error
            if len(outcome.exported) != 1:
                raise RuntimeError(f"expected one period per batch, got {outcome}")
            runs.append({"wall": took[0], "cpu": took[1], "rss_after_mib": current_rss_mib()})
    finally:
        worker.close()
    records = metrics.registry.get_sample_value("chargeback_records_produced_total",
                                                {"mode": "live"}) or 0.0
    return {"periods": periods, "records": records, "runs": runs, "peak_rss_mib": peak_rss_mib()}
