"""Shared-cost distribution: exact conservation at the record scale, marking, edge cases."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import SharedCostsConfig
from exporter.model import ChargeLine, PricedLine
from exporter.money import largest_remainder
from exporter.periods import Period
from exporter.pricing import RateCard, quantize_quantity
from exporter.shared_costs import (
    METHOD_ID,
    SHARED_FROM_LABEL,
    distribute,
    is_shared,
)
from tests.rigs.charge_lines import HOUR, line

SHARED = SharedCostsConfig(enabled=True, namespaces=("kube-system",))
CARD = RateCard.from_data({
    "currency": "EUR",
    "versions": [{
        "effective_from": "2026-01-01T00:00:00Z",
        "default": {"cpu": "0.031", "memory": "0.0042"},
        "namespaces": [{"namespace": "kube-system", "cpu": "0.0333333333"}],
    }],
})


# --- largest remainder ------------------------------------------------------------------------


def test_largest_remainder_gives_leftover_units_to_largest_remainders() -> None:
    assert largest_remainder(Decimal(1), [Decimal(1)] * 3, 9) == [
        Decimal("0.333333334"), Decimal("0.333333333"), Decimal("0.333333333"),
    ]
    # exact shares 0.0000025, 0.0000050, 0.0000025 at 6 places: floors 2,5,2 and one unit left;
    # the two remainders tie at 0.5, so the lower index gets it
    assert largest_remainder(Decimal("0.00001"), [Decimal(1), Decimal(2), Decimal(1)], 6) == [
        Decimal("0.000003"), Decimal("0.000005"), Decimal("0.000002"),
    ]
    assert largest_remainder(Decimal("-1"), [Decimal(1)] * 3, 9) == [
        Decimal("-0.333333334"), Decimal("-0.333333333"), Decimal("-0.333333333"),
    ]
    assert largest_remainder(Decimal(0), [Decimal(5), Decimal(7)], 9) == [0, 0]


def test_largest_remainder_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="not a multiple of 10\\^-9"):
        largest_remainder(Decimal("0.0000000001"), [Decimal(1)], 9)
    with pytest.raises(ValueError, match="positive"):
        largest_remainder(Decimal(1), [Decimal(1), Decimal(0)], 9)
    with pytest.raises(ValueError, match="at least one"):
        largest_remainder(Decimal(1), [], 9)


# --- distribution -----------------------------------------------------------------------------


def test_shared_quantity_goes_to_recipients_in_proportion() -> None:
    lines = [
        line("3", namespace="kube-system", name="coredns", kind="deployment"),
        line("1", namespace="kube-system", name="kube-proxy", kind="daemonset"),
        line("2", namespace="shop", name="web", org_values={"costcenter": "cc-1"}),
        line("6", namespace="shop", name="db", org_values={"costcenter": "cc-2"}),
        line("0", namespace="idle", name="nothing"),  # zero quantity: no share
        line("5", namespace="other-cluster", cluster="c2"),  # another cluster: untouched
    ]
    result = distribute(lines, SHARED)
    originals, extra = result.lines[: len(lines)], result.lines[len(lines):]
    assert [ln.allocation for ln in originals] == [
        "shared-source", "shared-source", "direct", "direct", "direct", "direct",
    ]
    assert originals[2:] == tuple(lines[2:])  # non-shared lines are unchanged
    assert [(d.workload.name, d.chargeable) for d in extra] == [
        ("db", Decimal("3.000000000")), ("web", Decimal("1.000000000")),
    ]
    db = extra[0]
    assert db.allocation == "shared-distribution" and db.method == METHOD_ID == "shared-proportional/v1"
    assert db.org.values["costcenter"] == "cc-2"
    assert (db.usage, db.request) == (Decimal(0), Decimal(0))
    assert db.labels[SHARED_FROM_LABEL] == "kube-system/daemonset/kube-proxy,kube-system/deployment/coredns"
    [pool] = result.pools
    assert (pool.cluster, pool.resource, pool.quantity, pool.recipients) == ("c1", "cpu", Decimal(4), 2)


def test_priced_lines_distribute_cost_exactly_too() -> None:
    lines = [
        line("1", namespace="kube-system", name="coredns"),
        line("1", namespace="a", name="x"),
        line("1", namespace="b", name="y"),
        line("1", namespace="c", name="z"),
    ]
    priced = CARD.price_lines(lines)
    assert priced[0].cost == Decimal("0.033333")
    result = distribute(priced, SHARED)
    assert all(isinstance(p, PricedLine) for p in result.lines)
    extra = result.lines[4:]
    # 0.033333 over three equal weights: 0.011111 each; 1 over three: the first gets the extra unit
    assert [(p.line.workload.namespace, p.cost) for p in extra] == [
        ("a", Decimal("0.011111")), ("b", Decimal("0.011111")), ("c", Decimal("0.011111")),
    ]
    assert [p.line.chargeable for p in extra] == [
        Decimal("0.333333334"), Decimal("0.333333333"), Decimal("0.333333333"),
    ]
    assert all(p.unit_price is None and p.currency == "EUR" for p in extra)
    assert {p.price_version for p in extra} == {"2026-01-01T00:00:00Z"}
    assert result.lines[0].line.allocation == "shared-source"
    assert result.lines[0].cost == Decimal("0.033333")  # the source keeps its own figures


def test_without_recipients_the_pool_stays_with_its_own_lines() -> None:
    lines = [
        line("2", namespace="kube-system", name="coredns"),
        line("0", namespace="app", name="scaled-to-zero"),
        line("1", namespace="app", name="api", resource="memory"),  # other resource
    ]
    result = distribute(lines, SHARED)
    assert result.lines == tuple(lines)
    cpu_pool = next(p for p in result.pools if p.resource == "cpu")
    assert cpu_pool.recipients == 0 and cpu_pool.quantity == 2


def test_disabled_or_empty_is_a_no_op() -> None:
    lines = [line("2", namespace="kube-system"), line("1")]
    off = SharedCostsConfig(enabled=False, namespaces=("kube-system",))
    assert distribute(lines, off).lines == tuple(lines)
    assert distribute([], SHARED).lines == ()


def test_selectors_declare_shared_workloads_by_org_value_or_label() -> None:
    config = SharedCostsConfig(
        enabled=True, selectors=({"team": "platform"}, {"tier": "infra", "costcenter": "cc-9"}),
    )
    assert is_shared(line("1", org_values={"team": "platform"}), config)
    assert is_shared(line("1", org_values={"costcenter": "cc-9"}, labels={"tier": "infra"}), config)
    assert not is_shared(line("1", labels={"tier": "infra"}), config)
    assert not is_shared(line("1", namespace="kube-system"), config)


def test_bad_input_is_refused() -> None:
    mixed: list[ChargeLine | PricedLine] = [line("1"), CARD.price(line("1"))]
    with pytest.raises(TypeError, match="all ChargeLine or all PricedLine"):
        distribute(mixed, SHARED)  # type: ignore[type-var]
    already = distribute([line("1", namespace="kube-system"), line("1")], SHARED).lines
    with pytest.raises(ValueError, match="expected direct lines, got 'shared-source'"):
        distribute(already, SHARED)


# --- property: conservation to the last decimal -----------------------------------------------

_amounts = st.one_of(
    st.decimals(min_value=Decimal(0), max_value=Decimal(10**6), places=13,
                allow_nan=False, allow_infinity=False),
    st.integers(0, 3).map(Decimal),
)
_raw_lines = st.lists(
    st.tuples(
        _amounts,
        st.sampled_from(["c1", "c2"]),
        st.sampled_from(["kube-system", "monitoring", "a", "b", "c"]),
        st.sampled_from(["cpu", "memory"]),
        st.integers(0, 1),  # period
        st.sampled_from(["cc-1", "cc-2", "__unallocated__"]),
    ),
    min_size=0, max_size=40,
)


def _build(raw: list[tuple[Decimal, str, str, str, int, str]]) -> list[ChargeLine]:
    out: list[ChargeLine] = []
    seen = set()
    for i, (q, cluster, ns, res, p, cc) in enumerate(raw):
        period = Period(HOUR.start + p * 3600, HOUR.end + p * 3600)
        key = (cluster, ns, f"w{i % 7}", res, p)
        if key in seen:  # one line per workload, resource and period, as the source gives
            continue
        seen.add(key)
        out.append(line(q, cluster=cluster, namespace=ns, name=f"w{i % 7}",
                        resource="cpu" if res == "cpu" else "memory",
                        period=period, org_values={"costcenter": cc}))
    return out


@settings(max_examples=200, deadline=None)
@given(raw=_raw_lines, priced=st.booleans())
def test_distribution_conserves_every_total_exactly(
    raw: list[tuple[Decimal, str, str, str, int, str]], priced: bool
) -> None:
    config = SharedCostsConfig(enabled=True, namespaces=("kube-system", "monitoring"))
    lines = _build(raw)
    items: list[PricedLine] = (
        CARD.price_lines(lines) if priced else [PricedLine(ln, None, None, None, None) for ln in lines]
    )
    result = distribute(items, config)
    assert len(result.lines) >= len(items)

    def group(p: PricedLine) -> tuple[object, ...]:
        return (p.line.period, p.line.workload.cluster, p.line.resource)

    before_q: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    before_c: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    for p in items:
        before_q[group(p)] += quantize_quantity(p.line.chargeable)
        before_c[group(p)] += p.cost or 0
    after_q: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    after_c: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    shared_q: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    dist_q: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    shared_c: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    dist_c: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    for p in result.lines:
        g = group(p)
        alloc = p.line.allocation
        if alloc == "shared-source":
            shared_q[g] += quantize_quantity(p.line.chargeable)
            shared_c[g] += p.cost or 0
            continue  # the consumer rule: leave shared-source lines out of totals
        if alloc == "shared-distribution":
            # already exactly at the record scale: records will not round it again
            assert p.line.chargeable == quantize_quantity(p.line.chargeable)
            dist_q[g] += p.line.chargeable
            dist_c[g] += p.cost or 0
            assert (p.cost is None) == (not priced)
        after_q[g] += quantize_quantity(p.line.chargeable)
        after_c[g] += p.cost or 0
    # Σ distributed == Σ shared, to the last decimal, per (period, cluster, resource)
    for g in shared_q:
        assert dist_q[g] == shared_q[g]
        assert dist_c[g] == shared_c[g]
    # and the totals a consumer sees are the totals without sharing
    assert after_q == before_q
    assert after_c == before_c
    # each share is within one unit of its exact proportional share
    for pool in result.pools:
        if not pool.recipients:
            continue
        g = (pool.period, pool.cluster, pool.resource)
        weights = {
            p.line.workload: quantize_quantity(p.line.chargeable) for p in items
            if group(p) == g and p.line.allocation == "direct"
            and p.line.workload.namespace not in config.namespaces
            and quantize_quantity(p.line.chargeable) > 0
        }
        total_w = sum(map(Fraction, weights.values()), Fraction(0))
        for p in result.lines:
            if p.line.allocation == "shared-distribution" and group(p) == g:
                exact = Fraction(pool.quantity) * Fraction(weights[p.line.workload]) / total_w
                assert abs(Fraction(p.line.chargeable) - exact) < Fraction(1, 10**9)
