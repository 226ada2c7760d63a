"""Series data shared by the fleet (a storage) and the PromQL evaluator.

A `SeriesSet` is a dense block: one row per series (its labels as a plain dict), one column per
timestamp (integer epoch milliseconds), NaN where the series has no sample. Instant-vector
results over many evaluation times and raw samples of a range selector have the same shape, so
every evaluator stage passes the same type around and numpy does the work column-wise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Labels = dict[str, str]
LabelKey = tuple[tuple[str, str], ...]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
MatchOp = Literal["=", "!=", "=~", "!~"]
METRIC_NAME = "__name__"


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """A hashable, order-independent identity for a label set."""
    return tuple(sorted(labels.items()))


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    """One `name op "value"` matcher with Prometheus semantics.

    A missing label matches as the empty string, and regexes are anchored at both ends
    (`=~"a|b"` means `^(?:a|b)$`), exactly as in Prometheus.
    """

    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, name: str, op: MatchOp, value: str) -> LabelMatcher:
        """Build a matcher; raises `ValueError` (one line) for an invalid regex."""
        regex: re.Pattern[str] | None = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"(?:{value})", re.DOTALL)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r} for label {name}: {exc}") from exc
        return cls(name, op, value, regex)

    def matches(self, value: str | None) -> bool:
        """Whether a label value (None when the label is absent) satisfies the matcher."""
        v = value or ""
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def matches_all(matchers: Iterable[LabelMatcher], labels: Mapping[str, str]) -> bool:
    """Whether a label set satisfies every matcher."""
    return all(m.matches(labels.get(m.name)) for m in matchers)


@dataclass(slots=True)
class SeriesSet:
    """Rows of series over shared timestamps.

    `labels[i]` belongs to `values[i]`; `ts` is sorted int64 epoch milliseconds; `values` has
    shape `(len(labels), len(ts))` with NaN for "no sample". Label dicts are never mutated.
    """

    labels: list[Labels]
    ts: IntArray
    values: FloatArray

    @classmethod
    def empty(cls, ts: IntArray) -> SeriesSet:
        return cls([], ts, np.full((0, len(ts)), np.nan))

    def __len__(self) -> int:
        return len(self.labels)


class Storage(Protocol):
    """Where selectors read raw samples from."""

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        """Every series matching all `matchers`, with its samples stamped in `[start_ms, end_ms]`.

        Rows with no sample in the window may be omitted. Thread-safe; never blocks on I/O.
        """
        ...


class MemoryStorage:
    """A small in-memory storage of explicit samples (for tests and fixtures)."""

    def __init__(self) -> None:
        self._series: dict[LabelKey, dict[int, float]] = {}

    def add(self, labels: Mapping[str, str], samples: Iterable[tuple[float, float]]) -> None:
        """Add `(epoch seconds, value)` samples to the series with `labels` (incl. `__name__`)."""
        clean = {k: v for k, v in labels.items() if v != ""}
        points = self._series.setdefault(label_key(clean), {})
        for t, v in samples:
            points[round(t * 1000)] = float(v)

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        rows: list[tuple[Labels, dict[int, float]]] = []
        stamps: set[int] = set()
        for key, points in self._series.items():
            labels = dict(key)
            if not matches_all(matchers, labels):
                continue
            inside = {t: v for t, v in points.items() if start_ms <= t <= end_ms}
            if inside:
                rows.append((labels, inside))
                stamps.update(inside)
        ts = np.array(sorted(stamps), dtype=np.int64)
        values = np.full((len(rows), len(ts)), np.nan)
        index = {int(t): j for j, t in enumerate(ts)}
        for i, (_, inside) in enumerate(rows):
            for t, v in inside.items():
                values[i, index[t]] = v
        return SeriesSet([labels for labels, _ in rows], ts, values)


def format_value(value: float) -> str:
    """A float as Prometheus writes it: Go's `FormatFloat(v, 'f', -1, 64)`.

    Shortest digits that round-trip, never an exponent; `NaN`, `+Inf`, `-Inf` as Prometheus.
    """
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    if "e" not in text and "E" not in text:
        return text[:-2] if text.endswith(".0") else text
    return format(Decimal(text), "f")
