"""`SysdigSource`: the usage source that measures periods with the `exporter.queries` plan.

A period is measured in chunks, one per group of clusters (`exporter.limits`): a pre-count of
usage series per cluster sizes the groups so that every query stays below Sysdig's service
limits, and a group whose query still reaches one is split in two, down to one cluster, whose
period is then held. After a source's first period, the groups are planned from the previous
pre-count while the period's own runs alongside them, then checked against it. Each group's
queries go to `SysdigClient` for one instant answer each, concurrently and a bounded number of
groups ahead of the consumer; `answers.parse_vector` checks each, and each group becomes one
`PeriodUsage`: exact sums per workload, the labels seen most, and each cluster's sample
coverage.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal, Inexact
from operator import itemgetter
from typing import TYPE_CHECKING

from exporter.clock import Clock
from exporter.errors import LimitExceeded, SourceQueryError
from exporter.limits import (
    Limits,
    check_metrics,
    group_clusters,
    halves,
    regroup,
    selectors,
)
from exporter.model import (
    GIB,
    STORAGE,
    PeriodUsage,
    Resource,
    SampleSums,
    WorkloadKey,
    WorkloadUsage,
    is_resource,
    merge_usage,
)
from exporter.money import CONTEXT, EXACT, largest_remainder
from exporter.periods import Period
from exporter.pricing import QUANTITY_SCALE, quantize_quantity
from exporter.queries import (
    ALLOCATABLE,
    CLAIM_KIND,
    RECORD_GRAIN,
    GpuNames,
    QueryPlan,
    StorageNames,
    plan,
    series_count,
)
from exporter.sysdig.answers import _brief, parse_vector
from exporter.sysdig.client import SysdigClient
from exporter.units import to_unit_hours

if TYPE_CHECKING:
    from exporter.sysdig.retention import RetentionModel

NO_WORKLOAD = "__no_workload__"
log = logging.getLogger("exporter.sysdig")

_Answer = list[tuple[dict[str, str], Decimal]]
# One query's outcome: its name, its answer, and the requests and bytes it took.
_Outcome = tuple[str, _Answer, int, int]


class SysdigSource:
    """Measures periods by sending the `exporter.queries` plan to Sysdig, group by group.

    `retention` chooses each period's step (`exporter.sysdig.retention`); without one every period is
    measured at `resolution`. `limits` sizes the cluster groups and the queries in flight
    (`limits.concurrency`); `prefetch` is how many groups are fetched ahead of the one the
    consumer of `fetch_chunks` holds.
    """

    def __init__(
        self,
        client: SysdigClient,
        *,
        clock: Clock,
        label_columns: Sequence[str],
        resolution: int = 10,
        grain: str = "pod",
        clusters: Sequence[str] = (),
        concurrency: int | None = None,
        retention: RetentionModel | None = None,
        gpu: GpuNames | None = None,
        gpu_resources: Mapping[str, str] | None = None,
        storage: StorageNames | None = None,
        allocatable: Mapping[Resource, str] | None = None,
        allocatable_metric: str = ALLOCATABLE,
        limits: Limits | None = None,
        prefetch: int = 2,
    ) -> None:
        self._client = client
        self._clock = clock
        self._columns = tuple(label_columns)
        self._resolution = resolution
        self._grain = grain
        self._clusters = tuple(clusters)
        self._limits = limits or Limits()
        if concurrency is not None:
            self._limits = replace(self._limits, concurrency=concurrency)
        self._prefetch = prefetch
        self._retention = retention
        self._gpu = gpu
        # kube-state-metrics `resource` value -> charged resource (`gpu`, `gpu.<profile>`)
        self._gpu_resources = dict(gpu_resources or {})
        self._storage = storage
        # Idle capacity: exporter resource -> the allocatable series' `resource` label value.
        self._allocatable = dict(allocatable or {})
        self._allocatable_metric = allocatable_metric
        # The last pre-count's answer (cluster -> usage series): the next period's groups are
        # planned from it while that period's own pre-count runs.
        self._previous: dict[str, int] | None = None

    def step_for(self, period: Period) -> int:
        """See `UsageSource.step_for`; raises `RetentionError` beyond Sysdig's retention."""
        if self._retention is None:
            return self._resolution
        return self._retention.step_for(period)

    def plan_for(self, period: Period, clusters: Sequence[str] | None = None,
                 ) -> tuple[QueryPlan, int, float]:
        """The plan of `period` for `clusters` (the configured ones when None), its step and
        the instant its queries are evaluated at."""
        step = self.step_for(period)
        if period.length % step:
            step = period.length
        chosen = self._clusters if clusters is None else clusters
        p = plan(period.length, step, self._grain, chosen, self._columns,
                 gpu=self._gpu, storage=self._storage,
                 allocatable=tuple(self._allocatable.values()),
                 allocatable_metric=self._allocatable_metric)
        return p, step, period.end - step / 2

    def fetch(self, period: Period) -> PeriodUsage:
        """See `UsageSource.fetch`: the merge of `fetch_chunks`."""
        return merge(list(self.fetch_chunks(period)))

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        """See `UsageSource.fetch_chunks`.

        Pre-counts usage series per cluster, groups the clusters (`exporter.limits`) and yields
        one `PeriodUsage` per group, sorted by first cluster; the last also covers configured
        clusters that show no series. Once a period was counted, the groups of the next are
        planned from those counts and their queries sent while this period's pre-count runs;
        its answer then decides (`limits.regroup`): planned groups that still fit are kept,
        the clusters of the others and new clusters get groups of their own. No chunk is
        yielded before the pre-count answered, and a chunk covers only clusters that it shows
        or whose series its group's answers carry. At most `prefetch` groups are fetched ahead
        of the one yielded. A group whose query reaches a limit (`LimitExceeded`) is split in
        two and both halves fetched; a single cluster that still does raises `LimitExceeded`
        naming it.
        """
        _, step, at = self.plan_for(period)
        # Selectors per query do not depend on the clusters a plan is restricted to.
        named = self.plan_for(period, ("",))[0].all()
        scans = max(len(selectors(q)) for _, q in named)
        previous = self._previous
        planned = [] if previous is None else group_clusters(
            previous, limits=self._limits, period_seconds=period.length, scans=scans)
        with ThreadPoolExecutor(max_workers=self._limits.concurrency,
                                thread_name_prefix="sysdig-query") as pool:
            # Groups whose queries were sent, not yet taken into the window.
            sent: dict[tuple[str, ...], list[Future[_Outcome]]] = {}
            window: deque[tuple[tuple[str, ...], list[Future[_Outcome]]]] = deque()
            try:
                if not planned:
                    # Nothing to size the groups from yet: the pre-count goes first.
                    counts, pre_requests, pre_bytes = self._count(period, at)
                else:
                    counting = pool.submit(self._count, period, at)
                    for group in planned[:self._prefetch + 1]:
                        sent[group] = self._submit(pool, period, group)
                    counts, pre_requests, pre_bytes = counting.result()
                self._previous = counts
                groups = regroup(planned, counts, limits=self._limits,
                                 period_seconds=period.length, scans=scans)
                for group in set(sent) - set(groups):
                    _cancel(sent.pop(group))
                if planned and groups != planned:
                    log.info("cluster groups changed since the last pre-count", extra={
                        "period": str(period), "planned": len(planned), "groups": len(groups)})
                silent = tuple(sorted(c for c in self._clusters if c not in counts))
                if not groups:
                    yield self._assemble(period, step, {name: [] for name, _ in named}, silent,
                                         pre_requests, pre_bytes)
                    return
                log.debug("period measured in cluster groups", extra={
                    "period": str(period), "groups": len(groups), "clusters": len(counts)})
                ahead = deque(groups)

                def top_up() -> None:
                    while ahead and len(window) <= self._prefetch:
                        group = ahead.popleft()
                        futures = sent.pop(group, None) or self._submit(pool, period, group)
                        window.append((group, futures))

                extra = (pre_requests, pre_bytes)
                top_up()
                while window:
                    group, futures = window.popleft()
                    top_up()
                    chunks = self._collect(pool, period, step, at, group, futures)
                    for i, (chunk_group, results, nreq, nbytes) in enumerate(chunks):
                        last = not window and i == len(chunks) - 1
                        shown = tuple(c for c in chunk_group if c in counts)
                        covered = (*shown, *silent) if last else shown
                        yield self._assemble(period, step, results, covered,
                                             nreq + extra[0], nbytes + extra[1],
                                             queried=chunk_group)
                        extra = (0, 0)
            finally:
                for _, futures in window:
                    _cancel(futures)
                for futures in sent.values():
                    _cancel(futures)

    def _count(self, period: Period, at: float) -> tuple[dict[str, int], int, int]:
        """Usage series per cluster of `period` (the configured clusters only, when set), and
        the requests and bytes the pre-count took."""
        before = self._client.thread_totals()
        raw = self._client.query_instant(series_count(period.length, self._clusters), at,
                                          f"series count {period}")
        counts: dict[str, int] = {}
        for labels, value in parse_vector(raw, at, f"Sysdig (series count {period})"):
            counts[labels.get("kube_cluster_name", "")] = int(value)
        after = self._client.thread_totals()
        return counts, after[0] - before[0], after[1] - before[1]

    def _submit(self, pool: ThreadPoolExecutor, period: Period, group: Sequence[str],
                ) -> list[Future[_Outcome]]:
        qplan, _, at = self.plan_for(period, group)
        named = qplan.all()
        for name, query in named:
            try:
                check_metrics(name, query, self._limits)
            except ValueError as exc:
                raise SourceQueryError(f"Sysdig ({name} {period}): {exc}") from None
        where = f"{period}, {_clusters_brief(group)}"

        def run(name: str, query: str) -> _Outcome:
            before = self._client.thread_totals()
            raw = self._client.query_instant(query, at, f"{name} {where}")
            answer = parse_vector(raw, at, f"Sysdig ({name} {where})")
            after = self._client.thread_totals()
            return name, answer, after[0] - before[0], after[1] - before[1]

        return [pool.submit(run, name, query) for name, query in named]

    def _collect(self, pool: ThreadPoolExecutor, period: Period, step: int, at: float,
                 group: tuple[str, ...], futures: list[Future[_Outcome]],
                 ) -> list[tuple[tuple[str, ...], dict[str, _Answer], int, int]]:
        """The answers of `group`'s queries, split into the groups they were answered for.

        Waits for every query of the group. When one reached a limit, the group is fetched
        again as two halves (recursively); other errors are raised.
        """
        results: dict[str, _Answer] = {}
        nreq = nbytes = 0
        limited: LimitExceeded | None = None
        failure: BaseException | None = None
        for f in futures:
            try:
                name, answer, r, b = f.result()
            except LimitExceeded as exc:
                limited = limited or exc
                continue
            except BaseException as exc:  # raised below, once every query of the group ended
                failure = failure or exc
                continue
            results[name] = answer
            nreq += r
            nbytes += b
        if failure is not None:
            raise failure
        if limited is None:
            return [(group, results, nreq, nbytes)]
        if len(group) == 1:
            raise LimitExceeded(
                f"{limited}; cluster {group[0]!r} alone reaches a Sysdig service limit, so period "
                f"{period} is held (docs/queries.md, \"Service limits\")") from None
        log.info("a query reached a Sysdig limit; splitting its cluster group", extra={
            "period": str(period), "clusters": len(group), "error": str(limited)})
        out = []
        for half in halves(group):
            out.extend(self._collect(pool, period, step, at, half,
                                     self._submit(pool, period, half)))
        # What the group's first try cost is counted in its first half.
        first = out[0]
        out[0] = (first[0], first[1], first[2] + nreq, first[3] + nbytes)
        return out

    def _assemble(
        self, period: Period, step: int, results: Mapping[str, Sequence[tuple[Mapping[str, str], Decimal]]],
        covered: Sequence[str], queries: int, nbytes: int, queried: Sequence[str] = (),
    ) -> PeriodUsage:
        """One `PeriodUsage` from the (labels, value) pairs of each answer, by answer name,
        covering the clusters `covered` (those queried, and possibly clusters that show no
        series at all) and the clusters of `queried` (those the answers are restricted to)
        that the answers carry.

        Sums are exact (or the period is refused); coverage shares use `money.CONTEXT`.
        """
        # Per workload, one sum per `_SLOTS` entry (None: no series yet). Several series of one
        # workload (pod or container grain beyond one workload label set) add up exactly, or
        # the period is refused: never rounded at the default 28 digits.
        add = EXACT.add  # values are at most MAX_VALUE; Sysdig's have 17 digits
        sums: dict[_Grain, list[Decimal | None]] = {}
        # The same lists by raw grain labels, so a series costs one lookup.
        rows: dict[_Grain, list[Decimal | None]] = {}
        grain_of = _grain_of
        for i, slot in enumerate(_SLOTS):
            for labels, value in results[slot]:
                try:
                    raw = grain_of(labels)
                except KeyError:
                    raw = _raw_grain(labels)
                got = rows.get(raw)
                if got is None:
                    key = _canonical(raw)
                    got = sums.get(key)
                    if got is None:
                        got = sums[key] = [None] * len(_SLOTS)
                    rows[raw] = got
                prev = got[i]
                if prev is None:
                    got[i] = value
                else:
                    try:
                        got[i] = add(prev, value)
                    except Inexact:
                        raise SourceQueryError(
                            f"Sysdig ({slot}): the series of {_brief(labels)} do not add up "
                            f"exactly in {EXACT.prec} digits") from None
        allocated = self._allocated(results, step)
        picked = _best_labels(results["labels"], self._columns)
        _namespace_labels(picked, allocated, self._columns)
        coverage: dict[str, Decimal] = {}
        expected = Decimal(period.length // step)
        for labels, value in results["coverage"]:
            cluster = labels.get("kube_cluster_name", "")
            coverage[cluster] = min(Decimal(1), CONTEXT.divide(value, expected))
        for cluster in dict.fromkeys(key[0] for key in sums):  # first-seen order, once each
            coverage.setdefault(cluster, Decimal(0))
        for cluster in covered:
            coverage.setdefault(cluster, Decimal(0))
        workloads = []
        zero = Decimal(0)
        # Grain tuples sort exactly as their WorkloadKeys do (field order), but in C.
        for key in sorted(sums.keys() | allocated.keys()) if allocated else sorted(sums):
            per: dict[Resource, SampleSums] = {}
            if key in sums:
                cu, cr, cc, mu, mr, mc = [zero if v is None else v for v in sums[key]]
                per = {"cpu": SampleSums(cu, cr, cc), "memory": SampleSums(mu, mr, mc)}
            # A claim or a GPU pod without cpu and memory series gets no cpu or memory line.
            per.update(allocated.get(key, {}))
            found = picked.get(key)
            workloads.append(WorkloadUsage(WorkloadKey(*key), {} if found is None else found, per))
        return PeriodUsage(
            period=period, step_seconds=step, grain=self._grain, workloads=tuple(workloads),
            coverage=coverage,
            usage_clusters=frozenset(lbl.get("kube_cluster_name", "") for lbl, _ in results["labels"]),
            request_clusters=frozenset(
                lbl.get("kube_cluster_name", "") for lbl, _ in results["requests.present"]),
            queries=queries, bytes_fetched=nbytes,
            clusters=frozenset(covered) | (coverage.keys() & frozenset(queried)),
            allocatable=_unoffered(_allocatable(results.get("allocatable", ()), self._allocatable),
                                   workloads, self._allocatable),
            claim_clusters=frozenset(
                lbl.get("kube_cluster_name", "") for lbl, _ in results.get("storage.request", ())),
        )


    def _allocated(self, results: Mapping[str, Sequence[tuple[Mapping[str, str], Decimal]]],
                   step: int) -> dict[_Grain, dict[Resource, SampleSums]]:
        """Per workload, the sums of resources charged by allocation (`_ALLOCATED` answers):
        chargeable is the request; GPU usage is utilisation, information only. Claims' parts
        are rounded first (`_claim_parts`)."""
        out: dict[_Grain, dict[Resource, list[Decimal]]] = {}
        zero = Decimal(0)
        for slot in _ALLOCATED:
            rows = results.get(slot, ())
            if slot == "storage.request" and rows:
                assert self._storage is not None
                rows = _claim_parts(rows, self._storage, step)
            for labels, value in rows:
                if slot.startswith("gpu."):
                    name = self._gpu_resources.get(labels.get("resource", ""))
                    if name is None:
                        raise SourceQueryError(
                            f"Sysdig ({slot}): unexpected GPU resource in {_brief(labels)}")
                else:
                    assert self._storage is not None
                    name = f"{STORAGE}.{labels.get(self._storage.class_label) or '<none>'}"
                    if not is_resource(name):
                        raise SourceQueryError(
                            f"Sysdig ({slot}): storage class is not a Kubernetes name in "
                            f"{_brief(labels)}")
                got = out.setdefault(_grain(labels), {}).setdefault(name, [zero, zero])
                i = 0 if slot.endswith(".usage") else 1
                try:
                    # Claims' parts are already rounded, to far more digits than a record has
                    # when the step does not divide a GiB-Hour's byte-steps.
                    got[i] = (CONTEXT if slot == "storage.request" else EXACT).add(got[i], value)
                except Inexact:
                    raise SourceQueryError(
                        f"Sysdig ({slot}): the series of {_brief(labels)} do not add up "
                        f"exactly in {EXACT.prec} digits") from None
        # Usage never lowers the charge: the allocation (request) is what is charged.
        return {key: {name: SampleSums(u, r, r) for name, (u, r) in per.items()}
                for key, per in out.items()}


def _claim_parts(rows: Sequence[tuple[Mapping[str, str], Decimal]], names: StorageNames,
                 step: int) -> list[tuple[Mapping[str, str], Decimal]]:
    """The `storage.request` answer (one series per workload, class and claim) with each
    claim's parts rounded so that they add up to the claim's whole exactly.

    A claim's GiB-Hours (Σ of its parts: the workloads that mounted it, evenly split at each
    step, and its own record while none did) are rounded to the records' quantity scale once;
    that whole is split back in proportion to the parts by largest remainder
    (`money.largest_remainder`; equal remainders: the workloads in key order). Each part is
    returned as the byte-step sum that converts to it, so a record of several claims is the
    exact sum of its rounded parts.
    """
    claims: dict[tuple[str, str, str], list[int]] = {}
    # In workload order, whatever the answer's: equal remainders go to the first workload.
    for i, (labels, _) in sorted(enumerate(rows), key=lambda r: _grain(r[1][0])):
        key = (labels.get(RECORD_GRAIN[0], ""), labels.get(RECORD_GRAIN[1], ""),
               labels.get(names.claim_label, ""))
        claims.setdefault(key, []).append(i)
    out: list[tuple[Mapping[str, str], Decimal]] = list(rows)
    per_hour = CONTEXT.divide(Decimal(3600 * GIB), Decimal(step))  # byte-steps per GiB-Hour
    for members in claims.values():
        hours = [to_unit_hours(rows[i][1], STORAGE, step) for i in members]
        whole = quantize_quantity(sum(hours, Decimal(0)))
        positive = [j for j, h in enumerate(hours) if h > 0]
        if not positive:
            continue
        parts = largest_remainder(whole, [hours[j] for j in positive], QUANTITY_SCALE)
        for j, part in zip(positive, parts, strict=True):
            i = members[j]
            out[i] = (rows[i][0], CONTEXT.multiply(part, per_hour))
    return out


# Answers of resources charged by allocation (`QueryPlan.allocated`), absent when unconfigured.
_ALLOCATED: tuple[str, ...] = ("gpu.usage", "gpu.request", "storage.request")


merge = merge_usage  # the name callers of this module know


def _cancel(futures: Iterable[Future[_Outcome]]) -> None:
    for f in futures:
        f.cancel()


def _clusters_brief(group: Sequence[str]) -> str:
    if len(group) == 1:
        return f"cluster {group[0]}"
    return f"clusters {group[0]}..{group[-1]} ({len(group)})"



# The six quantity answers, per resource in `SampleSums` field order (usage, request, chargeable).
_SLOTS: tuple[str, ...] = tuple(
    f"{res}.{part}" for res in ("cpu", "memory") for part in ("usage", "request", "chargeable"))
_Grain = tuple[str, str, str, str]
_grain_of = itemgetter(*RECORD_GRAIN)


def _allocatable(series: Iterable[tuple[Mapping[str, str], Decimal]],
                 names: Mapping[Resource, str]) -> dict[str, dict[Resource, Decimal]]:
    """Per cluster, the `allocatable` answer by exporter resource (`names` maps each to its
    allocatable resource name); series of other resource names are not asked for and ignored."""
    resource_of = {name: res for res, name in names.items()}
    out: dict[str, dict[Resource, Decimal]] = {}
    for labels, value in series:
        res = resource_of.get(labels.get("resource", ""))
        if res is None:
            continue
        per = out.setdefault(labels.get("kube_cluster_name", ""), {})
        try:
            per[res] = EXACT.add(per.get(res, Decimal(0)), value)
        except Inexact:
            raise SourceQueryError(f"Sysdig (allocatable): the series of {_brief(labels)} do not "
                                   f"add up exactly in {EXACT.prec} digits") from None
    return out


def _unoffered(allocatable: dict[str, dict[Resource, Decimal]],
               workloads: Iterable[WorkloadUsage], names: Mapping[Resource, str]
               ) -> dict[str, dict[Resource, Decimal]]:
    """`allocatable` with 0 for each measured resource that a cluster with allocatable series
    charges but no node of it offers (GPU pods in a cluster whose nodes show no such resource,
    or a misspelt name): its charges are then overcommit, never left out of the capacity."""
    for w in workloads:
        per = allocatable.get(w.key.cluster)
        if per is not None:
            for res in w.sums:
                if res in names and res not in per:
                    per[res] = Decimal(0)
    return allocatable


def _raw_grain(labels: Mapping[str, str]) -> _Grain:
    """The grain labels of a series; a missing one is ""."""
    try:
        raw: _Grain = _grain_of(labels)
    except KeyError:
        raw = (labels.get(RECORD_GRAIN[0], ""), labels.get(RECORD_GRAIN[1], ""),
               labels.get(RECORD_GRAIN[2], ""), labels.get(RECORD_GRAIN[3], ""))
    return raw


def _canonical(raw: _Grain) -> _Grain:
    """The `WorkloadKey` fields of grain labels `raw`: no kind is "unknown", no name NO_WORKLOAD.

    A plain tuple is equal to and sorts as its WorkloadKey does, but is hashed and compared in C.
    """
    cluster, namespace, kind, name = raw
    if kind and name:
        return raw
    return (cluster, namespace, kind or "unknown", name or NO_WORKLOAD)


def _grain(labels: Mapping[str, str]) -> _Grain:
    """The canonical grain (`WorkloadKey` fields) of a series' labels."""
    return _canonical(_raw_grain(labels))


def _namespace_labels(picked: dict[_Grain, dict[str, str]], allocated: Iterable[_Grain],
                      columns: Sequence[str]) -> None:
    """A claim charged on its own has no series of its own with labels: it takes its
    namespace's (`kube_namespace_label_*`) from a workload of the same namespace."""
    by_ns: dict[tuple[str, str], dict[str, str]] = {}
    for key in sorted(picked):
        ns = by_ns.setdefault((key[0], key[1]), {})
        for k, v in picked[key].items():
            if k.startswith("kube_namespace_label_") and k in columns:
                ns.setdefault(k, v)
    for key in allocated:
        if key[2] == CLAIM_KIND and key not in picked:
            picked[key] = dict(by_ns.get((key[0], key[1]), {}))


def _best_labels(series: Iterable[tuple[Mapping[str, str], Decimal]], columns: Sequence[str],
                 ) -> dict[_Grain, dict[str, str]]:
    """Per workload grain, the label combination of `columns` seen in the most samples (ties:
    sorted first), from (labels, sample count) pairs."""
    wanted = frozenset(columns)
    best: dict[_Grain, tuple[Decimal, tuple[tuple[str, str], ...]]] = {}
    for labels, value in series:
        key = _grain(labels)
        combo = tuple(sorted([kv for kv in labels.items() if kv[0] in wanted]))
        current = best.get(key)
        if current is None or value > current[0] or (value == current[0] and combo < current[1]):
            best[key] = (value, combo)
    return {k: dict(v[1]) for k, v in best.items()}
