"""The usage-source seam: anything that can measure a period."""

from __future__ import annotations

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

    def step_for(self, period: Period) -> int:
        """The sample step (seconds) the source will use for `period`.

        Raises `RetentionError` when the source keeps no data for `period` any more.
        """
        ...
