"""Sysdig's Prometheus API service limits, and the cluster groups that keep each query below them.

A period's queries are sent once per group of clusters. The groups come from a pre-count of
usage series per cluster (`exporter.queries.series_count`): no answer of the plan has more
series than the usage series of the clusters it covers, and no query scans more samples than
its selectors times those series times the period's 10 s samples. Groups are contiguous runs of
the sorted cluster names, each below every limit with `margin` to spare (docs/queries.md,
"Service limits"). A query that still reaches a limit is split further by the source.

Once a period was counted, the next one is planned from those counts while its own pre-count
runs; `regroup` then keeps the planned groups that still fit and groups the clusters left over
(new ones, or those of a group that grew too big).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Sysdig's documented limits for the Prometheus API (docs.sysdig.com, "service limits").
SEGMENTS = 100_000  # result segments of an aggregated answer; capped without an error
RAW_SERIES = 1_000  # series of an answer without aggregation; truncated with a warning
METRICS = 10  # metrics named in one query
CONCURRENCY = 200  # queries in flight at once
SAMPLES_PER_MINUTE = 4_000_000_000  # samples scanned per minute
# Sysdig's finest sample interval: a series holds at most one sample per 10 s of a period.
SAMPLE_SECONDS = 10
# The cluster regex is repeated in each selector of a GET query string; keep URLs short.
MAX_GROUP_CLUSTERS = 100

_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits queries are sized to, the margin kept below each, and the target group size.

    `group_series` is the most usage series a group is given (memory and parallelism: smaller
    groups are smaller chunks, fetched concurrently); the limits lower it further when needed.
    """

    segments: int = SEGMENTS
    raw_series: int = RAW_SERIES
    metrics: int = METRICS
    samples_per_minute: int = SAMPLES_PER_MINUTE
    margin: float = 0.2
    group_series: int = 20_000
    concurrency: int = 4

    def _below(self, limit: int) -> int:
        return max(1, math.floor(limit * (1 - self.margin)))

    @property
    def series_budget(self) -> int:
        """The most usage series one group may have (`group_series`, below the cap)."""
        return min(self.group_series, self._below(self.segments))

    @property
    def clusters_budget(self) -> int:
        """The most clusters one group may have: the answers without aggregation (coverage)
        carry one series per cluster."""
        return min(MAX_GROUP_CLUSTERS, self._below(self.raw_series))

    @property
    def samples_budget(self) -> int:
        """The most samples one query may scan: the per-minute budget, below its limit, shared
        by the queries in flight at once."""
        return max(1, self._below(self.samples_per_minute) // self.concurrency)


def selectors(query: str) -> list[str]:
    """The metric of each selector in `query`, in order (every selector of a group's query
    carries matchers, so it is written `metric{...}`)."""
    return _SELECTOR.findall(query)


def check_metrics(name: str, query: str, limits: Limits) -> None:
    """Raise ValueError when `query` names more metrics than Sysdig accepts in one query (a
    plan that splitting by cluster cannot fix)."""
    named = set(selectors(query))
    if len(named) > limits.metrics:
        raise ValueError(f"query {name} names {len(named)} metrics, more than Sysdig's limit of "
                         f"{limits.metrics} per query")


def _max_series(limits: Limits, period_seconds: int, scans: int) -> int:
    """The most usage series one group may have: the series budget, and the samples budget
    where a query scans at most `scans` selectors x series x `period_seconds / 10` samples."""
    per_series = max(1, scans) * max(1, period_seconds // SAMPLE_SECONDS)
    return min(limits.series_budget, max(1, limits.samples_budget // per_series))


def group_clusters(counts: Mapping[str, int], *, limits: Limits, period_seconds: int,
                   scans: int) -> list[tuple[str, ...]]:
    """Contiguous groups of the sorted clusters of `counts` (cluster -> usage series), in order.

    A group is closed before it would exceed the series, cluster or samples budget, where a
    query scans at most `scans` selectors x series x `period_seconds / 10` samples. A cluster
    over a budget on its own is a group of one (its queries may still be answered whole; if
    not, the period is held).
    """
    max_series = _max_series(limits, period_seconds, scans)
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    size = 0
    for cluster in sorted(counts):
        n = counts[cluster]
        if current and (size + n > max_series or len(current) >= limits.clusters_budget):
            groups.append(tuple(current))
            current, size = [], 0
        current.append(cluster)
        size += n
    if current:
        groups.append(tuple(current))
    return groups


def fits(group: Sequence[str], counts: Mapping[str, int], *, limits: Limits,
         period_seconds: int, scans: int) -> bool:
    """Whether `group` is within every budget by `counts` (a cluster absent from it has no
    series): a group `group_clusters` could have made, a single cluster always being one."""
    if len(group) == 1:
        return True
    return (len(group) <= limits.clusters_budget
            and sum(counts.get(c, 0) for c in group) <= _max_series(limits, period_seconds, scans))


def regroup(planned: Sequence[tuple[str, ...]], counts: Mapping[str, int], *, limits: Limits,
            period_seconds: int, scans: int) -> list[tuple[str, ...]]:
    """The groups to measure a period with, sorted by first cluster, given the groups
    `planned` from earlier counts and this period's `counts`.

    A planned group is kept when it still fits the budgets by `counts` and has a cluster of
    `counts`; every cluster of `counts` that no kept group has (new, or of a group that grew
    too big) is in the groups `group_clusters` makes of them. Every cluster of `counts` is in
    exactly one group. With no plan, these are `group_clusters(counts)`.
    """
    kept = [g for g in planned
            if any(c in counts for c in g)
            and fits(g, counts, limits=limits, period_seconds=period_seconds, scans=scans)]
    taken = {c for g in kept for c in g}
    rest = {c: n for c, n in counts.items() if c not in taken}
    added = group_clusters(rest, limits=limits, period_seconds=period_seconds, scans=scans)
    return sorted([*kept, *added], key=lambda g: g[0])


def halves(group: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`group` (two clusters or more) split in two contiguous halves."""
    mid = len(group) // 2
    return tuple(group[:mid]), tuple(group[mid:])
