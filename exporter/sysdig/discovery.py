"""`ShardSource`: the usage of one hash shard, whose clusters are found in each period.

With hash sharding and no `sysdig.clusters`, a shard does not know its clusters in advance.
Each period it asks Sysdig which clusters show any usage or request series (one cheap query,
one series per cluster: `exporter.queries.clusters_present`), keeps those that hash to it, and
measures them with a `SysdigSource` restricted to them. A cluster of the shard that vanished is
not listed and so not measured; the pipeline still expects it (the shard's checkpoint remembers
it) and holds the period, exactly as for an unsharded fleet.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator

from exporter.model import PeriodUsage
from exporter.periods import Period
from exporter.queries import clusters_present
from exporter.sysdig.answers import parse_vector
from exporter.sysdig.client import SysdigClient
from exporter.sysdig.source import SysdigSource, merge

log = logging.getLogger("exporter.sysdig")


class ShardSource:
    """A `UsageSource` of the clusters `owns` accepts among those Sysdig shows in each period.

    `restricted(clusters)` builds the Sysdig source of those clusters (empty: the whole fleet,
    used here only for the step and the evaluation instant, never fetched). `shard` describes
    the shard in errors; `grain` is the sources' grain. The source of the shard's clusters is
    kept while they stay the same, so that it plans each period's cluster groups from the
    previous period's pre-count, as an unsharded source does (docs/queries.md).
    """

    def __init__(self, client: SysdigClient, *, owns: Callable[[str], bool], shard: str,
                 restricted: Callable[[tuple[str, ...]], SysdigSource], grain: str) -> None:
        self._client = client
        self._grain = grain
        self._owns = owns
        self._shard = shard
        self._restricted = restricted
        self._fleet = restricted(())
        self._owned: tuple[tuple[str, ...], SysdigSource] | None = None

    def step_for(self, period: Period) -> int:
        """See `UsageSource.step_for`."""
        return self._fleet.step_for(period)

    def clusters(self, period: Period) -> list[str]:
        """Every cluster with a usage or request series in `period`, sorted."""
        _, _, at = self._fleet.plan_for(period)
        raw = self._client.query_instant(clusters_present(period.length), at,
                                         f"clusters {period}")
        found = parse_vector(raw, at, f"Sysdig (clusters {period})")
        return sorted({labels.get("kube_cluster_name", "") for labels, _ in found})

    def fetch(self, period: Period) -> PeriodUsage:
        """See `UsageSource.fetch`: the merge of `fetch_chunks`."""
        return merge(list(self.fetch_chunks(period)))

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        """The usage of the shard's clusters in `period`, in the chunks of
        `SysdigSource.fetch_chunks`; the listing query is counted on the first.

        Without any (Sysdig shows no cluster, or none of the shard's), one empty chunk, and the
        completeness check decides as for an unsharded fleet: it holds the period for a cluster
        the shard published before (its checkpoint remembers it), or for no series at all unless
        `periods.publish_empty`. Otherwise raises what `SysdigSource.fetch_chunks` raises.
        """
        before_requests, before_bytes = self._client.requests, self._client.bytes
        seen = self.clusters(period)
        owned = tuple(c for c in seen if self._owns(c))
        listing = (self._client.requests - before_requests, self._client.bytes - before_bytes)
        if not owned:
            if seen:
                log.warning("no cluster of the shard in the period", extra={
                    "period": str(period), "shard": self._shard, "clusters_seen": seen})
            yield PeriodUsage(period=period, step_seconds=self.step_for(period),
                              grain=self._grain, workloads=(), coverage={},
                              queries=listing[0], bytes_fetched=listing[1])
            return
        log.debug("shard clusters", extra={"period": str(period), "shard": self._shard,
                                            "clusters": list(owned), "seen": len(seen)})
        if self._owned is None or self._owned[0] != owned:
            self._owned = (owned, self._restricted(owned))
        first = True
        for usage in self._owned[1].fetch_chunks(period):
            if first:
                usage = dataclasses.replace(usage, queries=usage.queries + listing[0],
                                            bytes_fetched=usage.bytes_fetched + listing[1])
                first = False
            yield usage
