"""The usage-source seam: anything that can measure a period."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from exporter.model import PeriodUsage
from exporter.periods import Period


class UsageSource(Protocol):
    """Measures CPU and memory per workload for a closed period."""

    def fetch(self, period: Period) -> PeriodUsage:
        """Return the period's usage. Blocking; retries transient failures within its policy.

        Raises `SourceUnavailable` when retries are exhausted, `SourceAuthError` for a bad
        token, `SourceQueryError` for a rejected query or an unusable response. Idempotent:
        the same period and unchanged source data give the same result.
        """
        ...

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        """The period's usage in chunks, one per group of clusters, each complete for the
        clusters it covers (`PeriodUsage.clusters`: every query of the group answered and
        checked). Chunks cover disjoint clusters and come in a stable order (sorted by first
        cluster); an expected cluster the source knows of but that shows no series is covered
        by some chunk (the last), so none vanishes. Merged, they are `fetch(period)`.

        Blocking per chunk; the source may fetch a bounded number of chunks ahead, so memory
        grows with the chunk, not the fleet. Raises as `fetch`, possibly after some chunks were
        yielded: a consumer must then drop the chunks it has. Closing the iterator early stops
        the fetching.
        """
        ...

    def step_for(self, period: Period) -> int:
        """The sample step (seconds) the source will use for `period`.

        Raises `RetentionError` when the source keeps no data for `period` any more.
        """
        ...
