"""The simulator tests' small fleet: its spec, clock and tokens."""

from __future__ import annotations

from chargeback_simulator.fleet import DEFAULT_TIMELINES, FleetSpec

T0 = 1704067200  # 2024-01-01T00:00:00Z, an hour boundary
NOW = T0 + 6 * 3600 + 1234  # mid-hour, so the last hour is partial
TOKEN = "test-token"
READ_ONLY = "no-privileges-token"
SMALL = FleetSpec(seed=7, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=3,
                  max_replicas=2, max_containers=2)
# This tenant keeps 10 s data for 13 h (the fixture's whole history), then the July 2020 tiers.
TIMELINES = ((10, 13 * 3600), *DEFAULT_TIMELINES[1:])
