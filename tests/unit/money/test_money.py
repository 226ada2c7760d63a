"""The money module: half-even quantize with lazy, one-line errors; cost, share and the exact
largest-remainder split."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import EncodingError, PricingError
from exporter.money import (
    CONTEXT,
    DecimalSpec,
    cost,
    largest_remainder,
    quantize,
    share,
)

Q = DecimalSpec(18, 9)
COST = DecimalSpec(20, 6)


@pytest.mark.parametrize("value,expected", [
    ("0.0000000005", "0E-9"),           # a tie rounds to the even neighbour: 0
    ("0.0000000015", "0.000000002"),
    ("0.0000000025", "0.000000002"),
    ("-0.0000000025", "-0.000000002"),
    ("0.00000000250000000001", "0.000000003"),  # just past the tie
    ("1", "1.000000000"),
])
def test_quantize_rounds_half_even_at_the_boundary(value: str, expected: str) -> None:
    rounded = quantize(Decimal(value), Q, "x")
    assert rounded == Decimal(expected) and rounded.as_tuple().exponent == -9


def test_quantize_checks_precision_after_rounding_in_one_line() -> None:
    assert quantize(Decimal("999999999.9999999994"), Q, "x") == Q.max_value
    with pytest.raises(EncodingError) as err:
        quantize(Decimal("999999999.9999999995"), Q, "usage of w")
    assert str(err.value) == ("usage of w 1000000000.000000000 does not fit decimal(18,9) "
                              "(more than 18 digits at scale 9)")
    with pytest.raises(EncodingError, match=r"^big 1E\+200 does not fit decimal\(18,9\)"):
        quantize(Decimal("1E+200"), Q, "big")  # beyond the context: still the same error


@pytest.mark.parametrize("value,described", [
    (Decimal("NaN"), "Decimal NaN"),
    (Decimal("-Infinity"), "Decimal -Infinity"),
    (1.5, "float 1.5"),
    (True, "bool True"),
    ("1", "str"),
])
def test_quantize_refuses_what_is_not_a_finite_decimal(value: object, described: str) -> None:
    with pytest.raises(EncodingError) as err:
        quantize(value, Q, "w")  # type: ignore[arg-type]
    assert str(err.value) == f"w must be a finite Decimal, got {described}"


def test_quantize_takes_ints_and_the_callers_error_type() -> None:
    assert quantize(7, Q, "x") == Decimal("7.000000000")
    with pytest.raises(PricingError, match=r"^quantity 1000000000\.000000000 does not fit"):
        quantize(10**9, Q, "quantity", PricingError)


def test_a_lazy_where_is_called_only_on_failure() -> None:
    calls: list[str] = []

    def where() -> str:
        calls.append("called")
        return "lazy"

    assert quantize(Decimal("1.5"), Q, where) == Decimal("1.500000000")
    assert cost(Decimal("2"), Decimal("0.5"), Q, COST, where) == Decimal("1.000000")
    assert share(Decimal(1), Decimal(3)) == Decimal("0.333333")
    assert calls == []
    with pytest.raises(EncodingError, match=r"^lazy must be a finite Decimal"):
        quantize(Decimal("NaN"), Q, where)
    assert calls == ["called"]


def test_cost_is_the_record_quantity_times_the_price_at_cost_scale() -> None:
    # 1.0000000025 is recorded as 1.000000002 (half-even): the cost is computed from that.
    assert cost(Decimal("1.0000000025"), Decimal(3000), Q, COST, "x") == Decimal("3000.000006")
    with pytest.raises(PricingError, match=r"^rc: cpu: cost 998999999999001.000000 does not fit"):
        cost(Decimal(999), Decimal("999999999999"), Q, COST, "rc: cpu", PricingError)
    with pytest.raises(EncodingError, match=r"^rc: cpu: quantity 1000000000.000000000 does not"):
        cost(Decimal(10**9), Decimal(1), Q, COST, lambda: "rc: cpu")


def test_share_is_half_even_at_six_decimals_and_zero_for_an_empty_whole() -> None:
    assert share(Decimal(2), Decimal(3)) == Decimal("0.666667")
    assert share(Decimal(1), Decimal(2_000_000)) == Decimal("0.000000")  # 0.0000005 -> even 0
    assert share(Decimal(3), Decimal(2_000_000)) == Decimal("0.000002")  # 0.0000015 -> even 2
    assert str(share(Decimal(0), Decimal(0))) == "0.000000"


def test_the_context_keeps_conversions_far_beyond_any_record_scale() -> None:
    third = CONTEXT.divide(Decimal(1), Decimal(3))
    assert len(third.as_tuple().digits) == CONTEXT.prec >= 60


@settings(max_examples=200, deadline=None)
@given(
    units=st.integers(min_value=-10**15, max_value=10**15),
    scale=st.integers(min_value=0, max_value=12),
    weights=st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=30),
)
def test_largest_remainder_sums_exactly(units: int, scale: int, weights: list[int]) -> None:
    total = Decimal(units).scaleb(-scale)
    ws = [Decimal(w).scaleb(-9) for w in weights]
    parts = largest_remainder(total, ws, scale)
    assert sum(parts, Decimal(0)) == total
    assert all(p.as_tuple().exponent == -scale for p in parts)
    # each part is within one unit of its exact proportional share
    whole = sum(ws, Decimal(0))
    unit = Decimal(1).scaleb(-scale)
    for p, w in zip(parts, ws, strict=True):
        assert abs(p - CONTEXT.divide(CONTEXT.multiply(total, w), whole)) < unit


def test_largest_remainder_gives_leftovers_to_the_largest_remainders_then_lower_index() -> None:
    assert largest_remainder(Decimal(1), [Decimal(1), Decimal(2)], 0) == [0, 1]  # 1/3, 2/3
    assert largest_remainder(Decimal(2), [Decimal(1)] * 3, 0) == [1, 1, 0]  # ties: lower index
