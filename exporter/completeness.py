"""Which clusters a period must show, and when what Sysdig returned is too little to publish.

Sysdig answers `success` with no series, or with fewer, when a metric was renamed, an agent
stopped, kube-state-metrics is gone from a cluster, or the token's team sees only part of the
fleet. None of that is "nothing ran", so a period is published only when every expected
cluster shows both usage and request series (see docs/operations.md, "Missing cluster").

Expected clusters are `sysdig.clusters`, the clusters the period itself shows, and the clusters
of earlier periods that the worker keeps in its checkpoint; minus `sysdig.retired_clusters`.
(Backfill leaves a cluster published before but without data now as it was, and reports it.)

Claims are charged from metrics of their own (`resources.storage`), so they can vanish while
the cluster's cpu and memory series stay: a renamed capacity metric on one cluster answers
`success` with no claim series and would bill its storage as zero. The worker's checkpoint
keeps the clusters whose claims it billed (`claims`), and a period in which one of them shows
usage and requests but no claim series is held, until the claims return or the cluster is
listed in `resources.storage.clusters_without_claims` (its claims really were all deleted).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from exporter.errors import IncompleteDataError
from exporter.model import PeriodUsage, covered_clusters
from exporter.periods import Period, iso

USAGE = "usage"
REQUESTS = "requests"
CLAIMS = "claims"


class MissingClusters(IncompleteDataError):
    """Expected clusters show no usage, no request or no claim series; `missing` maps each to
    what it lacks (`usage`, `requests`, both, or `claims`)."""

    def __init__(self, message: str, missing: Mapping[str, tuple[str, ...]]) -> None:
        super().__init__(message)
        self.missing = dict(missing)


def expected_clusters(
    *,
    configured: Collection[str] = (),
    published: Mapping[str, int | None] | None = None,
    retired: Collection[str] = (),
) -> dict[str, int | None]:
    """Cluster -> end (epoch seconds) of the last period published with it, None when unknown
    (configured only); retired clusters left out."""
    out: dict[str, int | None] = dict.fromkeys(configured)
    for cluster, end in (published or {}).items():
        if out.get(cluster) is None:
            out[cluster] = end
    for cluster in retired:
        out.pop(cluster, None)
    return out


def check(usage: PeriodUsage, expected: Mapping[str, int | None], *, publish_empty: bool,
          claims: Mapping[str, int] | None = None) -> None:
    """Raise `MissingClusters` unless every expected or present cluster shows usage and request
    series, and every cluster of `claims` (cluster -> end of the last period that billed one of
    its claims) that shows them also shows claim series.

    With `publish_empty`, a cluster with no series at all (and a period with no series at all)
    counts as having had no usage; a cluster with one kind of series but not the other never
    does, since that is a broken collection, not an idle cluster.
    """
    tally = Tally(usage.period, expected, publish_empty=publish_empty, claims=claims)
    tally.add(usage)
    tally.finish()


class Tally:
    """`check` over a period measured in chunks: `add` each chunk, then `finish`.

    The same clusters are missing, with the same message, as `check` of the chunks merged.
    """

    def __init__(self, period: Period, expected: Mapping[str, int | None], *,
                 publish_empty: bool, claims: Mapping[str, int] | None = None) -> None:
        self._period = period
        self._expected = expected
        self._claims = claims or {}
        self._publish_empty = publish_empty
        self._missing: dict[str, tuple[str, ...]] = {}
        self._covered: set[str] = set()
        self._any = False

    @property
    def covered(self) -> frozenset[str]:
        """The clusters of the chunks added so far."""
        return frozenset(self._covered)

    def add(self, usage: PeriodUsage) -> bool:
        """Count one chunk; True when each of its clusters is complete (as `check` says)."""
        clusters = covered_clusters(usage)
        self._covered.update(clusters)
        seen_usage, seen_requests = usage.usage_clusters, usage.request_clusters
        self._any = self._any or bool(seen_usage or seen_requests)
        complete = True
        mine = {c for c in self._expected if c in clusters}
        for cluster in sorted({*mine, *seen_usage, *seen_requests}):
            lacks = tuple(what for what, seen in ((USAGE, seen_usage), (REQUESTS, seen_requests))
                          if cluster not in seen)
            if lacks and not (self._publish_empty and len(lacks) == 2):
                self._missing[cluster] = lacks
                complete = False
            elif not lacks and cluster in self._claims and cluster not in usage.claim_clusters:
                self._missing[cluster] = (CLAIMS,)
                complete = False
        return complete

    def finish(self) -> None:
        """Raise `MissingClusters` for what the chunks lacked, expected clusters no chunk
        covered included."""
        missing = dict(self._missing)
        if not self._publish_empty:
            missing.update((c, (USAGE, REQUESTS)) for c in self._expected if c not in self._covered)
        missing = dict(sorted(missing.items()))
        expected = self._expected
        if not self._any and not self._publish_empty:
            expected_part = f"; expected cluster(s) {', '.join(sorted(expected))}" if expected else ""
            raise MissingClusters(
                f"period {self._period}: Sysdig returned no series at all (a renamed metric, a "
                "stopped agent or a token whose team sees nothing look the same)"
                f"{expected_part}; held. Set periods.publish_empty: true only if an empty fleet "
                "is possible", missing)
        if missing:
            parts = [f"cluster {c}: {_lacks(what)}"
                     f"{_last(self._claims.get(c) if what == (CLAIMS,) else expected.get(c))}"
                     for c, what in missing.items()]
            claims = ("; a cluster whose claims were all deleted is listed in "
                      "resources.storage.clusters_without_claims"
                      if any(what == (CLAIMS,) for what in missing.values()) else "")
            raise MissingClusters(
                f"period {self._period}: {'; '.join(parts)}; held. A decommissioned cluster is "
                f"retired with sysdig.retired_clusters{claims}", missing)


def empty_clusters(usage: PeriodUsage, expected: Collection[str]) -> frozenset[str]:
    """Expected clusters with no series at all in `usage` (published empty with
    `periods.publish_empty`)."""
    return frozenset(c for c in expected
                     if c not in usage.usage_clusters and c not in usage.request_clusters)


def remembered(known: Mapping[str, int], published: Collection[str], period_end: int,
               retired: Collection[str] = ()) -> dict[str, int]:
    """The checkpoint's cluster map after publishing `published` clusters up to `period_end`."""
    out = dict(known)
    out.update(dict.fromkeys(published, period_end))
    for cluster in retired:
        out.pop(cluster, None)
    return dict(sorted(out.items()))


def _lacks(what: tuple[str, ...]) -> str:
    if what == (CLAIMS,):
        return ("usage and requests but no claim series (a renamed "
                "resources.storage.capacity_metric would bill its storage as zero)")
    return " and ".join(f"no {'request' if w == REQUESTS else w} series" for w in what)


def _last(end: int | None) -> str:
    return "" if end is None else f" (last published in the period ending {iso(end)})"
