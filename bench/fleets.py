"""Fleet sizes, periods and the exporter configuration every benchmark process shares."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from chargeback_simulator.fleet import FleetSpec
from exporter.config import Config, load_config
from exporter.periods import Period

HOUR = 3600
STEP = 60  # periods.resolution: 1m, so a one-hour period has 60 sample steps
SETTLE = 300
T0 = 1_794_009_600  # 2026-11-07T00:00:00Z: the first measured period starts here
TOKEN = "bench-token"
# The wall-time run (bench/wall.py): queries in flight and cluster groups fetched ahead. Its
# cluster groups differ from the other runs' (the samples budget is shared by the queries in
# flight), so the recording holds its queries too.
WALL_CONCURRENCY = 64
WALL_PREFETCH = 8
WORKLOADS_PER_NAMESPACE = 10

RATE_CARD = """\
currency: EUR
description: benchmark list prices
versions:
  - id: "2026-01"
    effective_from: 2026-01-01T00:00:00Z
    default: {cpu: "0.0310", memory: "0.0042"}
    namespaces:
      - {namespace: payments-1, cpu: "0.0450", memory: "0.0060"}
    selectors:
      - match: {costcenter: "CC-1000"}
        cpu: "0.0250"
        memory: "0.0035"
      - match: {costcenter: "CC-1037", team: "atlas"}
        cpu: "0.0200"
"""


def default_clusters(pods: int) -> int:
    """The clusters of a fleet of `pods` pods unless chosen: 2, 4, 10, then 50 above 100 000."""
    return 2 if pods <= 2000 else 4 if pods <= 20000 else 10 if pods <= 100_000 else 50


def fleet_spec(pods: int, seed: int = 1, max_replicas: int = 1,
               clusters: int | None = None) -> FleetSpec:
    """A fleet of about `pods` pods per hour and half as many workloads, over `clusters`
    clusters (`default_clusters` when None).

    One replica per workload: rollovers (deployments live 20 min to 6 h) and jobs on 30-minute
    schedules make about 2.1 pods per workload and hour. The actual counts are measured.
    `max_replicas` above 1 gives the same workloads more pods (the answer-size contrast).
    """
    workloads = max(WORKLOADS_PER_NAMESPACE, pods // 2)
    clusters = default_clusters(pods) if clusters is None else clusters
    namespaces = max(1, math.ceil(workloads / (clusters * WORKLOADS_PER_NAMESPACE)))
    return FleetSpec(seed=seed, clusters=clusters, namespaces_per_cluster=namespaces,
                     workloads_per_namespace=WORKLOADS_PER_NAMESPACE, max_replicas=max_replicas)


def period(index: int) -> Period:
    """The `index`-th one-hour period from `T0` (negative: before it)."""
    start = T0 + index * HOUR
    return Period(start, start + HOUR)


def write_rate_card(directory: Path) -> Path:
    path = directory / "rate-card.yaml"
    if not path.exists():
        path.write_text(RATE_CARD, encoding="utf-8")
    return path


def exporter_config(url: str, bootstrap: str, tag: str, rate_card: Path | None,
                    concurrency: int = 1, step: int = STEP, prefetch: int = 2) -> Config:
    """The exporter's configuration for one benchmark process.

    One Sysdig request at a time by default, so the phases of a period do not overlap and
    their times add up; topics and transactional id are unique to `tag`.
    """
    base: dict[str, Any] = {
        "sysdig": {"url": url, "token": TOKEN, "timeout": 120, "max_attempts": 1,
                   "max_concurrency": concurrency, "prefetch_groups": prefetch,
                   "retention_tiers": False},
        "periods": {"length": "1h", "resolution": step, "settle_delay": SETTLE, "grain": "pod"},
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 3, "replication_factor": 1,
                  "transactional_id": f"bench-{tag}", "transaction_timeout": 120,
                  "connect_timeout": 30,
                  "topics": {"records": f"bench-records-{tag}",
                             "manifests": f"bench-manifests-{tag}",
                             "checkpoint": f"bench-checkpoint-{tag}"}},
        "logging": {"level": "WARNING", "format": "text"},
    }
    if rate_card is not None:
        base["pricing"] = {"rate_card_file": str(rate_card)}
    return load_config(environ={}, overrides=base)
