"""Property-based checks of pricing arithmetic against an independent oracle on fractions.

What is compared: for every record, q̂ = the chargeable quantity rounded half-even to 9
decimals and cost = q̂ × unit price rounded half-even to 6 decimals, computed here with
`fractions.Fraction` (no Decimal contexts involved). Per price version, Σ cost over the records
must equal Σ of those per-record oracle costs exactly, and differ from the exact Σ q̂ × price by
at most half a cost unit per record.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from math import floor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import PricingError
from exporter.periods import Period, iso
from exporter.pricing import RateCard, quantize_cost, quantize_quantity
from tests.rigs.charge_lines import line

START = 1_767_225_600  # 2026-01-01T00:00:00Z
HOUR = 3600


def half_even(x: Fraction, places: int) -> Fraction:
    """x rounded to `places` decimals, ties to even: the oracle."""
    scaled = x * 10**places
    low = floor(scaled)
    rest = scaled - low
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and low % 2 == 1):
        low += 1
    return Fraction(low, 10**places)


def scaled(max_units: int, places: int) -> st.SearchStrategy[Decimal]:
    return st.integers(0, max_units).map(lambda n: Decimal(n).scaleb(-places))


# Few-decimal values make rounding ties (a trailing 5 just past the scale) frequent.
quantities = st.one_of(
    st.decimals(min_value=Decimal(0), max_value=Decimal("99999999"), places=14,
                allow_nan=False, allow_infinity=False),
    scaled(10**17, 10),
    scaled(10**14, 7),
    st.integers(0, 10**13).map(lambda n: Decimal(10 * n + 5).scaleb(-7)),  # ties at 6 places
)
prices = st.one_of(scaled(999 * 10**10, 10), scaled(99999, 2), scaled(9, 0))


def card_with(version_prices: list[tuple[Decimal, Decimal]], starts: list[int]) -> RateCard:
    return RateCard.from_data({
        "currency": "EUR",
        "versions": [
            {"id": f"v{i}", "effective_from": iso(s), "default": {"cpu": str(c), "memory": str(m)}}
            for i, (s, (c, m)) in enumerate(zip(starts, version_prices, strict=True))
        ],
    }, period_length=HOUR)


@settings(max_examples=150, deadline=None)
@given(
    version_prices=st.lists(st.tuples(prices, prices), min_size=1, max_size=3),
    records=st.lists(
        st.tuples(quantities, st.sampled_from(["cpu", "memory"]), st.integers(0, 47)),
        min_size=1, max_size=40,
    ),
)
def test_sum_of_costs_per_version_matches_the_oracle(
    version_prices: list[tuple[Decimal, Decimal]],
    records: list[tuple[Decimal, str, int]],
) -> None:
    starts = [START + i * 16 * HOUR for i in range(len(version_prices))]
    card = card_with(version_prices, starts)
    by_version: dict[str, list[tuple[Fraction, Fraction, Decimal]]] = {}
    for q, res, hour in records:
        period = Period(START + hour * HOUR, START + (hour + 1) * HOUR)
        priced = card.price(line(q, resource=res, period=period))  # type: ignore[arg-type]
        v = max(i for i, s in enumerate(starts) if s <= period.start)
        price = version_prices[v][0 if res == "cpu" else 1]
        assert priced.price_version == f"v{v}"
        assert priced.unit_price == price
        assert priced.cost is not None
        q_hat = half_even(Fraction(q), 9)
        by_version.setdefault(priced.price_version, []).append(
            (q_hat, Fraction(price), priced.cost)
        )
    for rows in by_version.values():
        oracle = sum((half_even(qh * p, 6) for qh, p, _ in rows), Fraction(0))
        got = sum((c for _, _, c in rows), Decimal(0))
        assert Fraction(got) == oracle
        exact = sum((qh * p for qh, p, _ in rows), Fraction(0))
        assert abs(Fraction(got) - exact) <= Fraction(len(rows), 2 * 10**6)
        for qh, p, c in rows:
            assert abs(Fraction(c) - qh * p) <= Fraction(1, 2 * 10**6)
            assert c.as_tuple().exponent == -6


@settings(max_examples=200, deadline=None)
@given(st.lists(quantities, min_size=1, max_size=50))
def test_quantization_moves_each_record_by_at_most_half_a_unit(values: list[Decimal]) -> None:
    rounded = [quantize_quantity(v) for v in values]
    for v, r in zip(values, rounded, strict=True):
        assert Fraction(r) == half_even(Fraction(v), 9)
        assert abs(Fraction(r) - Fraction(v)) <= Fraction(1, 2 * 10**9)
        assert r.as_tuple().exponent == -9
    exact = sum((Fraction(v) for v in values), Fraction(0))
    drift = abs(sum((Fraction(r) for r in rounded), Fraction(0)) - exact)
    assert drift <= Fraction(len(values), 2 * 10**9)
    money = sum((Fraction(quantize_cost(v)) for v in values), Fraction(0))
    assert abs(money - exact) <= Fraction(len(values), 2 * 10**6)


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 200), min_size=1, max_size=5),
    offset=st.integers(-10, 1200),
)
def test_effective_dating_picks_the_last_version_started(gaps: list[int], offset: int) -> None:
    starts: list[int] = []
    t = START
    for g in gaps:
        starts.append(t)
        t += g * HOUR
    card = card_with([(Decimal(i), Decimal(i)) for i in range(len(starts))], starts)
    period_start = START + offset * HOUR
    period = Period(period_start, period_start + HOUR)
    if period_start < START:
        with pytest.raises(PricingError, match="no price version is in effect"):
            card.price(line("1", period=period))
        return
    expected = max(i for i, s in enumerate(starts) if s <= period_start)
    priced = card.price(line("1", period=period))
    assert priced.price_version == f"v{expected}"
    assert priced.unit_price == expected


MIXED_CARD = {
    "currency": "EUR",
    "versions": [{
        "id": "v1", "effective_from": iso(START),
        "default": {"cpu": "0.03", "memory": "0.004"},
        "clusters": {"c2": {"cpu": "0.025"}},
        "namespaces": [{"namespace": "app", "memory": "0.0045"},
                       {"namespace": "app", "cluster": "c2", "cpu": "0.021"}],
        "selectors": [{"match": {"team": "t1"}, "cpu": "0.05"},
                      {"match": {"team": "t1", "tier": "gold"}, "cpu": "0.06", "memory": "0.007"},
                      {"match": {"team": "t2", "costcenter": "cc2"}, "memory": "0.006"}],
    }, {"id": "v2", "effective_from": iso(START + 2 * HOUR), "default": {"cpu": "1", "memory": "2"}}],
}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(
    quantities, st.sampled_from(["cpu", "memory"]), st.sampled_from(["c1", "c2"]),
    st.sampled_from(["app", "web"]), st.sampled_from([None, "t1", "t2"]),
    st.sampled_from([None, "gold"]), st.sampled_from([None, "cc2"]), st.integers(0, 3),
), min_size=1, max_size=60))
def test_a_batch_prices_every_line_as_it_would_be_priced_alone(rows: list) -> None:
    """`price_lines` looks quotes up once per distinct input: the batch must give each line
    exactly the quote and cost that line gets on its own."""
    card = RateCard.from_data(MIXED_CARD, period_length=HOUR, other_labels=["tier"])
    lines = [
        line(q, resource=res, cluster=cluster, namespace=ns,
             org_values={k: v for k, v in (("team", team), ("costcenter", cc)) if v},
             labels={"tier": tier} if tier else {},
             period=Period(START + hour * HOUR, START + (hour + 1) * HOUR))
        for q, res, cluster, ns, team, tier, cc, hour in rows
    ]
    batch = card.price_lines(lines)
    for ln, priced in zip(lines, batch, strict=True):
        alone = card.quote(ln)
        assert (priced.unit_price, priced.price_version) == (alone.unit_price, alone.version)
        assert priced == card.price(ln)
        assert priced.cost == quantize_cost(quantize_quantity(ln.chargeable) * alone.unit_price)
