"""`SysdigSource`: the usage source that measures periods with the `exporter.queries` plan.

It asks `SysdigClient` for one instant answer per query, has `answers.parse_vector` check each,
and assembles the periods' `PeriodUsage`: exact sums per workload, the labels seen most, and
each cluster's sample coverage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, Inexact
from operator import itemgetter
from typing import TYPE_CHECKING

from exporter.clock import Clock
from exporter.errors import SourceQueryError
from exporter.model import (
    GIB,
    STORAGE,
    PeriodUsage,
    Resource,
    SampleSums,
    WorkloadKey,
    WorkloadUsage,
    is_resource,
)
from exporter.money import CONTEXT, EXACT, largest_remainder
from exporter.periods import Period
from exporter.pricing import QUANTITY_SCALE, quantize_quantity
from exporter.queries import (
    CLAIM_KIND,
    RECORD_GRAIN,
    GpuNames,
    QueryPlan,
    StorageNames,
    plan,
)
from exporter.sysdig.answers import _brief, parse_vector
from exporter.sysdig.client import SysdigClient
from exporter.units import to_unit_hours

if TYPE_CHECKING:
    from exporter.sysdig.retention import RetentionModel

NO_WORKLOAD = "__no_workload__"


class SysdigSource:
    """Measures periods by sending the `exporter.queries` plan to Sysdig.

    `retention` chooses each period's step (`exporter.sysdig.retention`); without one every period is
    measured at `resolution`.
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
        concurrency: int = 4,
        retention: RetentionModel | None = None,
        gpu: GpuNames | None = None,
        gpu_resources: Mapping[str, str] | None = None,
        storage: StorageNames | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._columns = tuple(label_columns)
        self._resolution = resolution
        self._grain = grain
        self._clusters = tuple(clusters)
        self._concurrency = concurrency
        self._retention = retention
        self._gpu = gpu
        # kube-state-metrics `resource` value -> charged resource (`gpu`, `gpu.<profile>`)
        self._gpu_resources = dict(gpu_resources or {})
        self._storage = storage

    def step_for(self, period: Period) -> int:
        """See `UsageSource.step_for`; raises `RetentionError` beyond Sysdig's retention."""
        if self._retention is None:
            return self._resolution
        return self._retention.step_for(period)

    def plan_for(self, period: Period) -> tuple[QueryPlan, int, float]:
        step = self.step_for(period)
        if period.length % step:
            step = period.length
        p = plan(period.length, step, self._grain, self._clusters, self._columns,
                 self._gpu, self._storage)
        return p, step, period.end - step / 2

    def fetch(self, period: Period) -> PeriodUsage:
        qplan, step, at = self.plan_for(period)
        before_requests, before_bytes = self._client.requests, self._client.bytes
        named = qplan.all()

        def run(item: tuple[str, str]) -> tuple[str, list[tuple[dict[str, str], Decimal]]]:
            name, query = item
            raw = self._client.query_instant(query, at, f"{name} {period}")
            return name, parse_vector(raw, at, f"Sysdig ({name} {period})")

        if self._concurrency > 1:
            with ThreadPoolExecutor(max_workers=min(self._concurrency, len(named))) as pool:
                results = dict(pool.map(run, named))
        else:
            results = dict(map(run, named))
        return self._assemble(
            period, step, results,
            self._client.requests - before_requests, self._client.bytes - before_bytes,
        )

    def _assemble(
        self, period: Period, step: int, results: Mapping[str, Sequence[tuple[Mapping[str, str], Decimal]]],
        queries: int, nbytes: int,
    ) -> PeriodUsage:
        """One `PeriodUsage` from the (labels, value) pairs of each answer, by answer name.

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
        for cluster in self._clusters:
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
# The six quantity answers, per resource in `SampleSums` field order (usage, request, chargeable).
_SLOTS: tuple[str, ...] = tuple(
    f"{res}.{part}" for res in ("cpu", "memory") for part in ("usage", "request", "chargeable"))
_Grain = tuple[str, str, str, str]
_grain_of = itemgetter(*RECORD_GRAIN)


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
