"""The one parser of Sysdig's PromQL answers: their envelope (`_result`) and instant vectors.

An answer is checked whole before a value is read: its status, warnings and shape, Sysdig's
silent cap on series, the instant each sample is stamped at, and each value's range. What does
not hold is a `SourceQueryError` (unusable) or a `LimitExceeded` (possibly cut short at one of
Sysdig's service limits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from exporter.errors import LimitExceeded, SourceQueryError

# Sysdig caps aggregated answers at 100k result segments, without an error.
SERIES_CAP = 100_000
# Far above any real sum (1 PiB for a year of 10 s steps is ~3e21): larger is a broken answer.
MAX_VALUE = Decimal("1e30")


_STR = frozenset({str})


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))



def _result(body: Any, kind: str, where: str, cap: int | None = None) -> list[Any]:
    """The `data.result` list of a successful answer of `kind` ("vector" or "matrix").

    Any warning makes the answer incomplete: Sysdig warns when it truncates (the 1,000-series
    limit of queries without aggregation, `limit`), and a warning we cannot read is no better.
    An answer of `SERIES_CAP` series or more may have been capped silently (aggregated
    queries are cut at 100k result segments without an error), so it is incomplete too.
    `cap` is the tenant's cap (`sysdig.limits.segments`), `SERIES_CAP` when None.
    """
    cap = SERIES_CAP if cap is None else cap
    if not isinstance(body, dict) or body.get("status") != "success":
        raise SourceQueryError(f"{where}: malformed response: missing status 'success'")
    warnings = body.get("warnings")
    if warnings:
        first = _printable(str(warnings[0] if isinstance(warnings, list) else warnings)[:200])
        raise LimitExceeded(f"{where}: Sysdig answered with a warning, so the answer may "
                                  f"be incomplete: {first}")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != kind:
        raise SourceQueryError(f"{where}: malformed response: data.resultType is not {kind}")
    result = data.get("result")
    if not isinstance(result, list):
        raise SourceQueryError(f"{where}: malformed response: data.result is not a list")
    if len(result) >= cap:
        raise LimitExceeded(
            f"{where}: {len(result)} series, at Sysdig's cap of {cap} result segments; "
            "the answer may have been cut short")
    return result


def parse_vector(result: Sequence[Any], at: float, where: str) -> list[tuple[dict[str, str], Decimal]]:
    """Validate an instant answer evaluated at `at`: (labels, value) per series, in order.

    Every series must carry string labels and one `[at, "<number>"]` sample. A sample stamped
    at another instant than `at` is an error naming both instants: it is never read as "no
    series". Values must be finite, non-negative and at most `MAX_VALUE`.
    """
    out: list[tuple[dict[str, str], Decimal]] = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
            raise SourceQueryError(f"{where}: malformed series: missing 'metric' map")
        labels = item["metric"]
        # The types of all names and values at once, in C: this runs for every series.
        if not {*map(type, labels), *map(type, labels.values())} <= _STR:
            raise SourceQueryError(f"{where}: malformed series: labels must be strings")
        point = item.get("value")
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise SourceQueryError(f"{where}: malformed series: missing 'value' [time, value]")
        ts, raw = point
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not isinstance(raw, str):
            raise SourceQueryError(f"{where}: malformed point {_printable(str(point)[:80])}")
        if ts != at and not math.isclose(float(ts), at, abs_tol=1e-3):
            raise SourceQueryError(
                f"{where}: answer stamped at {_instant(float(ts))}, asked for {_instant(at)}; "
                "the period is held rather than read as having no series")
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise SourceQueryError(f"{where}: value {_printable(raw[:40])} is not a number") from None
        if not value.is_finite() or value < 0 or value > MAX_VALUE:
            raise SourceQueryError(
                f"{where}: unusable value {_printable(raw[:40])} for series {_brief(labels)}")
        out.append((labels, value))
    return out


def _instant(t: float) -> str:
    """An instant as epoch seconds and UTC time, for error messages."""
    stamp = datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{_num(t)} ({stamp})"


def _brief(labels: Mapping[str, str]) -> str:
    # Label values are arbitrary text: escape them so an error stays on one line.
    return ",".join(f"{k[:40]}={_printable(v[:40])}" for k, v in list(labels.items())[:4])


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")

