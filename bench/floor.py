"""The floor: what the job costs in this interpreter with every check, object and report left out.

One plain loop takes the period's recorded answers from `json.loads` to the billing records'
Avro bodies and each cluster's content hash: sums per workload, unit-hours, price, cost,
record id, body. It reuses the exporter's own lookups (org resolution, price quotes) and its
own memo of string bytes, and writes the same bytes, which `measure` checks body by body, so it does the
exporter's work and nothing else. What it leaves out is what the exporter adds to that work:
HTTP and sdcclient, validating the answers, exact sums, the record, line and quote objects,
label coverage, manifests, framing and every error path.

It is a yardstick for the ratio target, not a second implementation: it assumes answers that
are plain and valid (one value per series, no duplicate workload, prices that fit), and is
only ever run on the benchmark's recordings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from decimal import Context, Decimal
from typing import Any

from exporter.avro.encoder import varint
from exporter.model import ORG_KEYS, UNALLOCATED, UNITS
from exporter.periods import Period
from exporter.queries import RECORD_GRAIN
from exporter.records import RECORD_ID_DOMAIN, identity_method, kubernetes_kind
from exporter.units import method_id

# The answers in the order of a workload's six sums, and the conversion context: the
# exporter's own values, which `measure`'s byte-for-byte check holds this copy to.
SLOTS = tuple(f"{res}.{part}" for res in ("cpu", "memory") for part in ("usage", "request", "chargeable"))
CONVERT = Context(prec=60)
EXACT = Context(prec=120, Emax=999_999, Emin=-999_999)


def chunk(part: str | int) -> bytes:
    """One record-id part as `records.record_id` hashes it: 8-byte length, then UTF-8."""
    data = (str(part) if isinstance(part, int) else part).encode("utf-8")
    return len(data).to_bytes(8, "big") + data


class _Line:
    """The three attributes `PriceVersion.selector_quote` reads."""

    __slots__ = ("labels", "org", "resource")

    def __init__(self, resource: str, org: Any, labels: Mapping[str, str]) -> None:
        self.resource, self.org, self.labels = resource, org, labels


def floor_bodies(answers: Mapping[str, Sequence[bytes]], *, period: Period, step: int, org: Any,
                 card: Any, columns: Sequence[str], settle_delay: int, exporter_version: str,
                 ) -> tuple[dict[str, bytes], dict[str, str]]:
    """record_id -> Avro body, and cluster -> content hash, from the raw answer bodies by name
    (one per cluster group)."""
    docs = {name: [item for body in bodies for item in json.loads(body)["data"]["result"]]
            for name, bodies in answers.items()}
    # The grain labels, inline below: a call per series would slow the yardstick itself.
    cluster_l, namespace_l, kind_l, name_l = RECORD_GRAIN
    sums: dict[tuple[str, str, str, str], list[Decimal]] = {}
    zero = Decimal(0)
    for i, slot in enumerate(SLOTS):
        for item in docs[slot]:
            m = item["metric"]
            key = (m[cluster_l], m[namespace_l], m.get(kind_l) or "unknown", m[name_l])
            row = sums.get(key)
            if row is None:
                row = sums[key] = [zero] * 6
            row[i] = Decimal(item["value"][1])
    wanted = frozenset(columns)
    best: dict[tuple[str, str, str, str], tuple[Decimal, tuple[tuple[str, str], ...]]] = {}
    for item in docs["labels"]:
        m = item["metric"]
        key = (m[cluster_l], m[namespace_l], m.get(kind_l) or "unknown", m[name_l])
        value = Decimal(item["value"][1])
        combo = tuple(sorted([kv for kv in m.items() if kv[0] in wanted]))
        seen = best.get(key)
        if seen is None or value > seen[0] or (value == seen[0] and combo < seen[1]):
            best[key] = (value, combo)
    expected = Decimal(period.length // step)
    coverage = {item["metric"].get("kube_cluster_name", ""):
                min(Decimal(1), Decimal(item["value"][1]) / expected) for item in docs["coverage"]}

    mul, div, exact = CONVERT.multiply, CONVERT.divide, EXACT
    strs: dict[str, bytes] = {}

    def s(v: str) -> bytes:
        found = strs.get(v)
        if found is None:
            b = v.encode()
            found = strs[v] = varint(len(b) << 1) + b
        return found

    def dec(v: Decimal, factor: Decimal) -> bytes:
        n = int(exact.multiply(v, factor))
        raw = n.to_bytes((n.bit_length() + 8) >> 3, "big", signed=True)
        return varint(len(raw) << 1) + raw

    # Org assignments and label maps are memoised objects: by identity, each kept alive here
    # so that its id cannot be reused by another map.
    maps: dict[int, tuple[Mapping[str, str], bytes]] = {}

    def sorted_map(m: Mapping[str, str]) -> bytes:
        found = maps.get(id(m))
        if found is None:
            found = maps[id(m)] = (m, b"".join((
                varint(len(m) << 1), *[s(k) + s(v) for k, v in sorted(m.items())], b"\x00",
            )) if m else b"\x00")
        return found[1]

    q9, q10, q6 = Decimal("1e-9"), Decimal("1e-10"), Decimal("1e-6")
    f9, f10, f6 = Decimal(10**9), Decimal(10**10), Decimal(10**6)
    hour, gib, step_d = Decimal(3600), Decimal(2**30), Decimal(step)
    method = method_id("pod", step)
    version = card.version_at(period.start)
    selector_keys = version.selector_keys
    start_ms, end_ms = period.start * 1000, period.end * 1000
    bounds = varint(start_ms << 1) + varint(end_ms << 1)
    generated = (period.end + settle_delay) * 1000
    suffix: dict[str, bytes] = {
        r: b"".join(map(chunk, (r, "direct", identity_method(method)))) for r in UNITS}
    units: dict[str, bytes] = {r: s(r) + s(u) for r, u in UNITS.items()}
    currency = b"\x02" + s(card.currency)
    tail = s(method) + s("direct")
    end = s(exporter_version) + varint(generated << 1)
    cov_bytes = {c: dec(v.quantize(q6, context=exact), f6) for c, v in coverage.items()}
    by_selector: dict[tuple[Any, ...], Any] = {}
    by_scope: dict[tuple[str, str, str], Any] = {}
    # Per quote: its price and the fields written after the cost (currency, version, ...).
    quote_parts: dict[int, tuple[Decimal, bytes, bytes]] = {}
    heads: dict[tuple[str, str, str], bytes] = {}
    no_coverage = dec(zero, f6)
    bodies: dict[str, bytes] = {}
    by_cluster: dict[str, list[str]] = {}
    for key in sorted(sums):
        cluster, namespace, raw_kind, name = key
        labels = dict(best[key][1]) if key in best else {}
        org_of = org.resolve(raw_kind, labels)
        others = org.other_labels(labels)
        kind = kubernetes_kind(raw_kind)
        values = org_of.values
        shared = b"".join((
            bounds, s(cluster), s(namespace), s(kind), s(name),
            s(values.get("costcenter", UNALLOCATED)), s(values.get("businessunit", UNALLOCATED)),
            s(values.get("department", UNALLOCATED)), s(values.get("team", UNALLOCATED)),
            sorted_map(org_of.sources), sorted_map(org_of.original), sorted_map(others)))
        # The record id's parts that repeat (cluster and period, namespace, kind) are encoded
        # once, as `records.record_id_prefix` lets the exporter do.
        head = heads.get((cluster, namespace, kind))
        if head is None:
            identity: tuple[str | int, ...] = (
                RECORD_ID_DOMAIN, cluster, start_ms, end_ms, namespace, kind)
            head = heads[(cluster, namespace, kind)] = b"".join(map(chunk, identity))
        prefix = hashlib.sha256(head + chunk(name))
        after_cost_tail = tail + (cov_bytes.get(cluster) or no_coverage) + end
        # A selector reads only its keys' values (as `RateCard.price_lines` memoises it).
        selected = tuple([values.get(k) if k in ORG_KEYS else others.get(k) for k in selector_keys])
        cu, cr, cc, mu, mr, mc = sums[key]
        ids = by_cluster.setdefault(cluster, [])
        for resource, u, r, c in (("cpu", cu, cr, cc), ("memory", mu, mr, mc)):
            skey = (resource, selected)
            if skey in by_selector:
                quote = by_selector[skey]
            else:
                quote = by_selector[skey] = version.selector_quote(_Line(resource, org_of, others))
            if quote is None:
                scope = (resource, cluster, namespace)
                quote = by_scope.get(scope)
                if quote is None:
                    quote = by_scope[scope] = version.scope_quote(resource, cluster, namespace)
            qp = quote_parts.get(id(quote))  # quotes stay alive in the two memos above
            if qp is None:
                qp = quote_parts[id(quote)] = (
                    quote.unit_price,
                    b"\x02" + dec(quote.unit_price.quantize(q10, context=exact), f10),
                    currency + b"\x02" + s(quote.version) + b"\x00")
            price, price_bytes, after_cost = qp
            if resource == "cpu":
                u, r, c = div(mul(u, step_d), hour), div(mul(r, step_d), hour), div(mul(c, step_d), hour)
            else:
                u = div(div(mul(u, step_d), hour), gib)
                r = div(div(mul(r, step_d), hour), gib)
                c = div(div(mul(c, step_d), hour), gib)
            u, r = u.quantize(q9, context=exact), r.quantize(q9, context=exact)
            c = c.quantize(q9, context=exact)
            cost = mul(c, price).quantize(q6, context=exact)
            h = prefix.copy()
            h.update(suffix[resource])
            rid = h.hexdigest()[:32]
            bodies[rid] = b"".join((
                varint(len(rid) << 1) + rid.encode(), shared, units[resource],
                dec(u, f9), dec(r, f9), dec(c, f9), price_bytes, b"\x02" + dec(cost, f6),
                after_cost, after_cost_tail))
            ids.append(rid)
    hashes = {}
    for cluster, ids in by_cluster.items():
        h = hashlib.sha256()
        for rid in sorted(ids):
            body = bodies[rid]
            h.update(len(body).to_bytes(8, "big"))
            h.update(body)
        hashes[cluster] = h.hexdigest()
    return bodies, hashes


def time_floor(answers: Mapping[str, Sequence[bytes]], repeat: int = 3, **kwargs: Any
               ) -> tuple[list[float], dict[str, bytes], dict[str, str]]:
    """Lowest [wall, CPU] seconds of `floor_bodies` over `repeat` runs (collector on, as the
    exporter runs a period), and the bodies and hashes of the last run."""
    best = [float("inf"), float("inf")]
    bodies: dict[str, bytes] = {}
    hashes: dict[str, str] = {}
    for _ in range(repeat):
        bodies, hashes = {}, {}  # the previous run's are freed before this one
        w, c = time.perf_counter(), time.process_time()
        bodies, hashes = floor_bodies(answers, **kwargs)
        best = [min(best[0], time.perf_counter() - w), min(best[1], time.process_time() - c)]
    return best, bodies, hashes
