"""Money: the one rounding mode, the one decimal context, and every rounding of an amount.

Everything that rounds a quantity, a price, a cost or a share goes through this module:
`quantize(value, spec, where)` rounds half-even to a decimal type's scale and checks its
precision; `cost` is the one pricing rule; `share` and `largest_remainder` are the two ways a
whole is split. Arithmetic that must not round before the explicit quantize (unit conversions,
products, sums) uses `CONTEXT`, through its methods: entering a `localcontext` per value is slow.

This module may import only the standard library and `exporter.errors`, so that schemas,
pricing, records and the Sysdig adapter can all depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, Overflow
from fractions import Fraction
from math import floor
from typing import Any

from exporter.errors import EncodingError, ExporterError

ROUNDING = ROUND_HALF_EVEN
"""The one rounding mode for every quantity and amount (banker's rounding: no bias in sums)."""

CONTEXT = Context(prec=120, rounding=ROUNDING, Emax=999_999, Emin=-999_999)
"""The one context: 120 digits, so conversions, products and shares carry far more digits than
any record scale before `quantize` rounds them once."""

EXACT = Context(prec=CONTEXT.prec, rounding=ROUNDING, Emax=CONTEXT.Emax, Emin=CONTEXT.Emin,
                traps=[InvalidOperation, Inexact, Overflow])
"""`CONTEXT` with rounding as an error, for sums that must be exact (`Inexact` is raised)."""

Where = str | Callable[[], str]
"""What a value is, for an error message: text, or a function giving it (called on failure
only, so a hot loop passes a lambda and builds no text for values that fit)."""


@dataclass(frozen=True, slots=True)
class DecimalSpec:
    """A decimal type (Avro `decimal`): at most `precision` digits, `scale` of them decimals."""

    precision: int
    scale: int
    quantum: Decimal = field(init=False, repr=False, compare=False)
    max_value: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantum", Decimal(1).scaleb(-self.scale))
        object.__setattr__(self, "max_value", Decimal(10**self.precision - 1).scaleb(-self.scale))


def quantize(value: Decimal | int, spec: DecimalSpec, where: Where,
             error: type[ExporterError] = EncodingError) -> Decimal:
    """`value` rounded half-even to `spec.scale` decimals, checked against `spec.precision`.

    Raises `error` (one line, starting with `where`) when the value is not a finite Decimal
    or an int, or needs more than `precision` digits once rounded. The message is built only
    then.
    """
    if not isinstance(value, Decimal):
        if type(value) is not int:  # bool and float are not amounts
            raise error(f"{_text(where)} must be a finite Decimal, got {_describe(value)}")
        value = Decimal(value)
    if not value.is_finite():
        raise error(f"{_text(where)} must be a finite Decimal, got {_describe(value)}")
    try:
        rounded = value.quantize(spec.quantum, ROUNDING, CONTEXT)
    except InvalidOperation:
        rounded = None  # more digits than the context holds: too large for any spec
    if rounded is None or not -spec.max_value <= rounded <= spec.max_value:
        raise error(
            f"{_text(where)} {value if rounded is None else rounded} does not fit "
            f"decimal({spec.precision},{spec.scale}) (more than {spec.precision} digits at "
            f"scale {spec.scale})"
        )
    return rounded


def cost(chargeable: Decimal, unit_price: Decimal, quantity: DecimalSpec, amount: DecimalSpec,
         where: Where, error: type[ExporterError] = EncodingError) -> Decimal:
    """The pricing rule: `chargeable` at the record's quantity scale, times `unit_price`
    (exact), at the record's cost scale. A consumer recomputes it from the record's fields.

    `where` names the priced line; an error names `where: quantity` or `where: cost`.
    """
    qty = quantize(chargeable, quantity, lambda: f"{_text(where)}: quantity", error)
    return quantize(CONTEXT.multiply(qty, unit_price), amount, lambda: f"{_text(where)}: cost",
                    error)


SHARE = DecimalSpec(7, 6)
"""A share of a whole, 0 to 1 at 6 decimals (the manifest's shares and coverage)."""
_NO_SHARE = Decimal(0).quantize(SHARE.quantum)


def share(part: Decimal, total: Decimal) -> Decimal:
    """`part / total` at 6 decimals (ROUND_HALF_EVEN); 0 when `total` is 0."""
    if total == 0:
        return _NO_SHARE
    return quantize(CONTEXT.divide(part, total), SHARE, "share")


def largest_remainder(total: Decimal, weights: Sequence[Decimal], scale: int) -> list[Decimal]:
    """Split `total` (a multiple of 10^-scale) in proportion to positive `weights`, exactly.

    Each share is a multiple of 10^-scale and Σ shares == total. Shares are floored, then the
    leftover units go to the largest remainders; ties go to the lower index.
    """
    if not weights:
        raise ValueError("largest_remainder needs at least one weight")
    if any(w <= 0 for w in weights):
        raise ValueError("weights must be positive")
    scaled = Fraction(total) * 10**scale
    if scaled.denominator != 1:
        raise ValueError(f"total {total} is not a multiple of 10^-{scale}")
    units = abs(scaled.numerator)
    sign = -1 if scaled < 0 else 1
    fw = [Fraction(w) for w in weights]
    whole = sum(fw, Fraction(0))
    exact = [units * w / whole for w in fw]
    shares = [floor(x) for x in exact]
    leftover = units - sum(shares)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:leftover]:
        shares[i] += 1
    return [CONTEXT.scaleb(Decimal(sign * s), -scale) for s in shares]  # not the thread's context


def _text(where: Where) -> str:
    return where if isinstance(where, str) else where()


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!s:.40}" if isinstance(value, Decimal | int | float) \
        else type(value).__name__
