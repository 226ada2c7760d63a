"""Billing records, period manifests and checkpoints: the values published to Kafka.

The dataclasses mirror `schemas/*.v1.avsc` field for field (timestamps as UTC epoch
milliseconds, quantities as `Decimal` already rounded to the schema's scale), so
`to_avro()` is a plain dict and `exporter.avro.AvroSchema.encode_object` can encode an
instance directly.

Identity is deterministic: `record_id` and `manifest_id` are SHA-256 over a length-prefixed
tuple of the identity fields, so a re-export or backfill of the same period gives the same ids
(consumers upsert by id and keep the highest `revision`). Every quantity goes through
`exporter.money.quantize` (ROUND_HALF_EVEN to the schema's scale, precision checked), the only
rounding step between the unit arithmetic and the Avro bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from exporter.avro import load_schema
from exporter.errors import EncodingError
from exporter.model import (
    RESOURCES,
    UNALLOCATED,
    PricedLine,
    is_resource,
    unit_of,
)
from exporter.money import quantize
from exporter.periods import Period

if TYPE_CHECKING:
    pass

ALLOCATIONS: tuple[str, ...] = ("direct", "shared-distribution", "shared-source", "idle",
                                 "idle-source", "idle-distribution")
# Records a consumer adds up for a bill; a `shared-source` record was distributed and would
# count twice, and an `idle` record is capacity nobody was charged for (its shares, if the rate
# card distributes it, are the `idle-distribution` records).
BILLABLE_ALLOCATIONS: frozenset[str] = frozenset({"direct", "shared-distribution",
                                                  "idle-distribution"})
STATUSES: tuple[str, ...] = ("final", "low-coverage")
PUBLISHED_AT_HEADER = "published_at"
"""Kafka header carrying the wall-clock publication time (UTC epoch ms, ASCII digits); it is
kept out of the Avro payload so that payloads of unchanged data stay byte-identical."""

_CURRENCY = re.compile(r"[A-Z]{3}")  # with fullmatch: no trailing newline slips through

# Sysdig's lowercase kube_workload_type -> Kubernetes Kind; anything else passes through.
KINDS: Mapping[str, str] = {
    "deployment": "Deployment",
    "statefulset": "StatefulSet",
    "daemonset": "DaemonSet",
    "job": "Job",
    "cronjob": "CronJob",
    "replicaset": "ReplicaSet",
    "replicationcontroller": "ReplicationController",
    "pod": "Pod",
    # A claim no running pod mounts is charged on its own (exporter.queries.CLAIM_KIND).
    "persistentvolumeclaim": "PersistentVolumeClaim",
}


def kubernetes_kind(sysdig_type: str) -> str:
    """The Kubernetes Kind for Sysdig's `kube_workload_type` (`deployment` -> `Deployment`).

    Case-insensitive and idempotent (`Deployment` stays `Deployment`); an unknown value is
    returned unchanged rather than guessed.
    """
    return KINDS.get(sysdig_type.lower(), sysdig_type)


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


def _chunk(part: str | int) -> bytes:
    data = (str(part) if isinstance(part, int) else part).encode("utf-8")
    return len(data).to_bytes(8, "big") + data


def _digest(domain: str, parts: Iterable[str | int]) -> str:
    """First 32 hex chars of SHA-256 over `domain` and `parts`, each as 8-byte big-endian
    length + UTF-8 bytes (ints as ASCII decimal), so no two tuples share an encoding.
    """
    return hashlib.sha256(b"".join(map(_chunk, (domain, *parts)))).hexdigest()[:32]


RECORD_ID_DOMAIN = "chargeback.billing_record.v1"
"""The first part hashed into every record id (ids of other kinds of object never collide)."""


class RecordIds:
    """The ids of one batch of records, by `record_id`'s definition: the parts that repeat
    are hashed once per batch. The SHA-256 state after the domain, cluster and period bounds is
    kept per (cluster, period), and the bytes of (resource, allocation, method) per triple; a
    workload's state (`workload`) is copied for each of its records.
    """

    def __init__(self) -> None:
        self._scopes: dict[tuple[str, Period], hashlib._Hash] = {}
        self._tails: dict[tuple[str, str, str], bytes] = {}

    def workload(self, *, cluster: str, period: Period, namespace: str, workload_kind: str,
                 workload_name: str) -> hashlib._Hash:
        """The SHA-256 state after a workload's identity parts, to pass to `record_id`."""
        scope = self._scopes.get((cluster, period))
        if scope is None:
            parts: tuple[str | int, ...] = (RECORD_ID_DOMAIN, cluster, period.start * 1000,
                                            period.end * 1000)
            scope = self._scopes[(cluster, period)] = hashlib.sha256(b"".join(map(_chunk, parts)))
        state = scope.copy()
        state.update(b"".join(map(_chunk, (namespace, workload_kind, workload_name))))
        return state

    def record_id(self, workload: hashlib._Hash, resource: str, allocation: str,
                  method: str) -> str:
        """The id of the record of `workload` (a `workload` state) for these parts."""
        tail = self._tails.get((resource, allocation, method))
        if tail is None:
            tail = self._tails[(resource, allocation, method)] = b"".join(
                map(_chunk, (resource, allocation, identity_method(method))))
        state = workload.copy()
        state.update(tail)
        return state.hexdigest()[:32]


def record_id(*, cluster: str, period: Period, namespace: str, workload_kind: str,
              workload_name: str, resource: str, allocation: str, method: str) -> str:
    """The deterministic id of a billing record; recomputable from the record's own fields.

    The first 32 hex characters of SHA-256 over `RECORD_ID_DOMAIN` and the identity fields,
    each as 8-byte big-endian length + UTF-8 bytes (ints as ASCII decimal), in this order:
    cluster, period start and end (epoch ms), namespace, kind, name, resource, allocation,
    calculation method without its sample step (`identity_method`). It changes with any of
    them and with nothing else: quantities, prices, org labels and the revision do not enter
    it, so a republication replaces the earlier one on upsert. `RecordIds` computes the same
    ids for a batch.
    """
    ids = RecordIds()
    return ids.record_id(ids.workload(cluster=cluster, period=period, namespace=namespace,
                                      workload_kind=workload_kind, workload_name=workload_name),
                         resource, allocation, method)


_STEP = re.compile(r"/\d+s/")


def identity_method(method: str) -> str:
    """The method without its sample step: `max-request-usage/pod/10s/v1` -> `.../pod/v1`.

    The step records how finely Sysdig still held the data; a correction measured at a coarser
    step (older data) must replace the earlier record, not sit beside it under a new id.
    """
    return _STEP.sub("/", method, count=1)


def manifest_id(*, cluster: str, period: Period) -> str:
    """The deterministic id of the manifest of one (period, cluster)."""
    return _digest("chargeback.period_manifest.v1", (cluster, period.start * 1000, period.end * 1000))


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


class FrozenMap(dict[str, Any]):
    """A dict that refuses changes: the label maps that records and their ids share."""

    __slots__ = ()

    def _immutable(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is immutable")

    __setitem__ = __delitem__ = __ior__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy would otherwise rebuild it item by item through __setitem__.
        return (type(self), (list(self.items()),))


class SortedMap(FrozenMap):
    """A record's map field: keys in sorted order (map order is part of the Avro bytes, so
    sorting keeps payloads byte-identical) and immutable, so records can share one."""

    __slots__ = ()


def _sorted_map(m: Mapping[str, str]) -> SortedMap:
    return m if type(m) is SortedMap else SortedMap(sorted(m.items()))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(value: Any) -> int:
    """Epoch milliseconds of a decoded timestamp (aware datetime) or an int, exactly."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MS
    return int(value)


@dataclass(frozen=True, slots=True)
class BillingRecord:
    """One value of the billing-records topic (`schemas/billing_record.v1.avsc`)."""

    record_id: str
    period_start: int
    period_end: int
    cluster: str
    namespace: str
    workload_kind: str
    workload_name: str
    costcenter: str
    businessunit: str
    department: str
    team: str
    org_label_sources: Mapping[str, str]
    invalid_org_values: Mapping[str, str]
    labels: Mapping[str, str]
    resource: str
    unit: str
    usage_quantity: Decimal
    request_quantity: Decimal
    chargeable_quantity: Decimal
    unit_price: Decimal | None
    cost: Decimal | None
    currency: str | None
    price_version: str | None
    revision: int
    method: str
    allocation: str
    sample_coverage: Decimal
    exporter_version: str
    generated_at: int

    def __post_init__(self) -> None:
        # Maps from `build_records` are already sorted (and shared by a workload's records).
        if type(self.org_label_sources) is type(self.invalid_org_values) is type(self.labels) \
                is SortedMap:
            return
        for name in ("org_label_sources", "invalid_org_values", "labels"):
            value = getattr(self, name)
            ordered = _sorted_map(value)
            if ordered is not value:
                object.__setattr__(self, name, ordered)

    def to_avro(self) -> dict[str, Any]:
        """The Avro datum: every field by name, maps sorted by key."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_avro(cls, datum: Mapping[str, Any]) -> BillingRecord:
        """Inverse of `to_avro`; accepts decoded datetimes for the timestamp fields."""
        values = dict(datum)
        for name in ("period_start", "period_end", "generated_at"):
            values[name] = _ms(values[name])
        return cls(**{name: values[name] for name in cls.__slots__})

    @property
    def period(self) -> Period:
        return Period(self.period_start // 1000, self.period_end // 1000)


@dataclass(frozen=True, slots=True)
class ResourceTotal:
    """Exact sums of one resource over a period-cluster's records (`ResourceTotal` in Avro)."""

    resource: str
    unit: str
    usage_quantity: Decimal
    request_quantity: Decimal
    chargeable_quantity: Decimal
    cost: Decimal | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class KeyShare:
    """Unallocated and invalid share of one org key for one resource (`KeyCoverage` in Avro)."""

    org_key: str
    resource: str
    unallocated_share: Decimal
    invalid_share: Decimal


@dataclass(frozen=True, slots=True)
class TopOffender:
    """A workload with missing or invalid org labels (`Offender` in Avro)."""

    namespace: str
    workload_kind: str
    workload_name: str
    resource: str
    chargeable_quantity: Decimal
    missing_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResourceCapacity:
    """Node capacity of one resource in a period-cluster (`ResourceCapacity` in Avro):
    `charged_quantity + idle_quantity - overcommit_quantity == allocatable_quantity`."""

    resource: str
    unit: str
    allocatable_quantity: Decimal
    charged_quantity: Decimal
    idle_quantity: Decimal
    overcommit_quantity: Decimal


@dataclass(frozen=True, slots=True)
class PeriodManifest:
    """One value of the manifests topic (`schemas/period_manifest.v1.avsc`)."""

    manifest_id: str
    period_start: int
    period_end: int
    cluster: str
    record_count: int
    totals: tuple[ResourceTotal, ...]
    unallocated_share: tuple[KeyShare, ...]
    top_offenders: tuple[TopOffender, ...]
    revision: int
    content_hash: str
    sample_coverage: Decimal
    method: str
    status: str
    complete: bool
    exporter_version: str
    generated_at: int
    capacity: tuple[ResourceCapacity, ...] = ()

    def to_avro(self) -> dict[str, Any]:
        """The Avro datum, nested records as dicts."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        out["totals"] = [_as_dict(t) for t in self.totals]
        out["capacity"] = [_as_dict(c) for c in self.capacity]
        out["unallocated_share"] = [_as_dict(s) for s in self.unallocated_share]
        out["top_offenders"] = [
            {**_as_dict(o), "missing_keys": list(o.missing_keys)} for o in self.top_offenders
        ]
        return out

    @classmethod
    def from_avro(cls, datum: Mapping[str, Any]) -> PeriodManifest:
        """Inverse of `to_avro`; accepts decoded datetimes for the timestamp fields."""
        values = dict(datum)
        for name in ("period_start", "period_end", "generated_at"):
            values[name] = _ms(values[name])
        values["totals"] = tuple(ResourceTotal(**t) for t in values["totals"])
        values["unallocated_share"] = tuple(KeyShare(**s) for s in values["unallocated_share"])
        values["top_offenders"] = tuple(
            TopOffender(**{**o, "missing_keys": tuple(o["missing_keys"])})
            for o in values["top_offenders"]
        )
        values["capacity"] = tuple(ResourceCapacity(**c) for c in values.get("capacity") or ())
        return cls(**{name: values[name] for name in cls.__slots__})

    @property
    def period(self) -> Period:
        return Period(self.period_start // 1000, self.period_end // 1000)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One value of the compacted checkpoint topic (`schemas/checkpoint.v1.avsc`); the
    message key is `instance`."""

    instance: str
    last_period_end: int
    period_seconds: int
    updated_at: int
    # cluster -> end (epoch ms) of the last period published with it; {} in checkpoints written
    # before the field existed (the schema default).
    clusters: Mapping[str, int] = field(default_factory=dict)
    # cluster -> end (epoch ms) of the last period that billed a claim of it; {} before the
    # field existed.
    claims: Mapping[str, int] = field(default_factory=dict)

    def to_avro(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_avro(cls, datum: Mapping[str, Any]) -> Checkpoint:
        return cls(
            instance=datum["instance"], last_period_end=_ms(datum["last_period_end"]),
            period_seconds=int(datum["period_seconds"]), updated_at=_ms(datum["updated_at"]),
            clusters={str(k): _ms(v) for k, v in (datum.get("clusters") or {}).items()},
            claims={str(k): _ms(v) for k, v in (datum.get("claims") or {}).items()},
        )


def _as_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# --------------------------------------------------------------------------------------------
# Building records
# --------------------------------------------------------------------------------------------


Revision = Callable[[str], int] | int
"""A fixed revision, or a function of the id (`record_id` / `manifest_id`) giving it."""


def revision_of(revision: Revision, ident: str) -> int:
    """The revision of the record or manifest `ident` (`revision` or `revision(ident)`),
    checked: an int in [0, 2^31)."""
    value = revision(ident) if callable(revision) else revision
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise EncodingError(f"{ident}: revision must be an int in [0, 2^31), got {value!r}")
    return value


def build_records(lines: Sequence[PricedLine], *, revision: Revision, generated_at_ms: int,
                  exporter_version: str) -> list[BillingRecord]:
    """Turn priced charge lines into billing records, in input order.

    Quantities are rounded half-even to 9 decimals, prices to 10, costs to 6 and coverage to 6
    (the schema's scales); each must fit the schema's precision. `generated_at_ms` is the
    logical generation time (the pipeline passes period end + settle delay), never the wall
    clock, so that unchanged data re-exports byte-identically.

    Raises `EncodingError` naming the record and field for a value that does not fit, an
    unknown resource or allocation, a malformed currency, a cost without currency, a negative
    quantity, or two lines with the same identity.
    """
    specs = load_schema("billing_record").decimals
    quantity_spec = specs["usage_quantity"]
    if (specs["request_quantity"], specs["chargeable_quantity"]) != (quantity_spec, quantity_spec):
        raise AssertionError("the three quantities share one decimal type")  # pragma: no cover
    price_spec, cost_spec, coverage_spec = specs["unit_price"], specs["cost"], specs["sample_coverage"]
    fixed_revision = revision if type(revision) is int and 0 <= revision < 2**31 else None
    ids = RecordIds()
    prefix_of: Any = None
    prefix_kind: str | None = None
    prefix_period: Period | None = None
    prefix = hashlib.sha256()
    out: list[BillingRecord] = []
    seen: set[str] = set()
    # A workload's lines are adjacent and share their org and label maps: sort those once.
    last_org: Any = None
    last_labels: Any = None
    sources: dict[str, str] = {}
    invalid: dict[str, str] = {}
    labels: dict[str, str] = {}
    kinds: dict[str, str] = {}
    # Values repeat (prices per rule, coverage per cluster, one period): each distinct one is
    # checked and converted once, and records share the result.
    prices: dict[Decimal, Decimal] = {}
    coverages: dict[Decimal, Decimal] = {}
    currencies: set[str] = set()
    bounds: dict[Period, tuple[int, int]] = {}
    append = out.append
    for priced in lines:
        line = priced.line
        wl = line.workload
        kind = kinds.get(wl.kind)
        if kind is None:
            kind = kinds[wl.kind] = kubernetes_kind(wl.kind)
        resource, allocation = line.resource, line.allocation
        # A workload's lines are adjacent: its identity parts are hashed once for all of them.
        if prefix_of is not wl or prefix_kind != kind or prefix_period != line.period:
            prefix_of, prefix_kind, prefix_period = wl, kind, line.period
            prefix = ids.workload(cluster=wl.cluster, period=line.period, namespace=wl.namespace,
                                  workload_kind=kind, workload_name=wl.name)
        rid = ids.record_id(prefix, resource, allocation, line.method)
        if rid in seen:
            raise EncodingError(f"{_where(rid, wl, kind, resource)}: two charge lines have the same "
                                "identity")
        seen.add(rid)
        if resource not in RESOURCES and not is_resource(resource):
            raise EncodingError(f"{_where(rid, wl, kind, resource)}: unknown resource {resource!r}")
        if allocation not in ALLOCATIONS:
            raise EncodingError(f"{_where(rid, wl, kind, resource)}: unknown allocation "
                                f"{allocation!r}")
        # Each lambda names its field only when the value does not fit; it is called, if at
        # all, within this iteration (hence the B023 exemptions). A partial costs twice as much.
        usage = quantize(line.usage, quantity_spec,
                         lambda: _field(rid, wl, kind, resource, "usage_quantity"))  # noqa: B023
        request = quantize(line.request, quantity_spec,
                           lambda: _field(rid, wl, kind, resource, "request_quantity"))  # noqa: B023
        chargeable = quantize(line.chargeable, quantity_spec,
                              lambda: _field(rid, wl, kind, resource, "chargeable_quantity"))  # noqa: B023
        if usage < 0 or request < 0 or chargeable < 0:
            raise _negative(line, (usage, request, chargeable), rid, kind)
        unit_price = priced.unit_price
        if unit_price is not None:
            known = prices.get(unit_price)
            if known is None:
                known = prices[unit_price] = quantize(
                    unit_price, price_spec, lambda: _field(rid, wl, kind, resource, "unit_price"))  # noqa: B023
            unit_price = known
        cost = priced.cost
        if cost is not None:
            cost = quantize(cost, cost_spec, lambda: _field(rid, wl, kind, resource, "cost"))  # noqa: B023
        currency = priced.currency
        if currency is not None and currency not in currencies:
            if not _CURRENCY.fullmatch(currency):
                raise EncodingError(f"{_where(rid, wl, kind, resource)} field currency: "
                                    f"{currency!r} is not an ISO 4217 code")
            currencies.add(currency)
        if (unit_price is not None or cost is not None) and currency is None:
            raise EncodingError(f"{_where(rid, wl, kind, resource)} field currency: a priced "
                                "record needs a currency")
        coverage = coverages.get(line.coverage)
        if coverage is None:
            coverage = coverages[line.coverage] = quantize(
                line.coverage, coverage_spec,
                lambda: _field(rid, wl, kind, resource, "sample_coverage"))  # noqa: B023
        org = line.org
        if org is not last_org:
            last_org = org
            sources = _sorted_map(org.sources)
            invalid = _sorted_map(org.original)
        if line.labels is not last_labels:
            last_labels = line.labels
            labels = _sorted_map(line.labels)
        period = line.period
        start_end = bounds.get(period)
        if start_end is None:
            start_end = bounds[period] = (period.start * 1000, period.end * 1000)
        values = org.values
        append(BillingRecord(
            rid, start_end[0], start_end[1], wl.cluster, wl.namespace, kind,
            wl.name, values.get("costcenter", UNALLOCATED), values.get("businessunit", UNALLOCATED),
            values.get("department", UNALLOCATED), values.get("team", UNALLOCATED),
            sources, invalid, labels, resource, unit_of(resource), usage, request, chargeable,
            unit_price, cost, currency, priced.price_version,
            fixed_revision if fixed_revision is not None else revision_of(revision, rid),
            line.method, allocation, coverage, exporter_version, generated_at_ms,
        ))
    return out


def _where(rid: str, wl: Any, kind: str, resource: str) -> str:
    return f"record {rid} ({wl.cluster}/{wl.namespace}/{kind}/{wl.name} {resource})"


def _field(rid: str, wl: Any, kind: str, resource: str, name: str) -> str:
    return f"{_where(rid, wl, kind, resource)} field {name}"


def _negative(line: Any, rounded: Sequence[Decimal], rid: str, kind: str) -> EncodingError:
    """The error for the first of usage, request, chargeable that is negative once rounded."""
    names = ("usage_quantity", "request_quantity", "chargeable_quantity")
    values = (line.usage, line.request, line.chargeable)
    name, value = next((n, v) for n, v, q in zip(names, values, rounded, strict=True) if q < 0)
    where = _field(rid, line.workload, kind, line.resource, name)
    return EncodingError(f"{where}: negative quantity {value}")
