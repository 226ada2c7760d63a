"""A vectorised PromQL evaluator over a `Storage`, for the Sysdig simulator.

Queries are parsed by `promql_parser` (a Rust PromQL parser) and the AST is evaluated node by
node for all evaluation timestamps at once: every node yields a `SeriesSet` (rows x timestamps,
NaN for absent) or a scalar row, so the cost is a handful of numpy passes per node.

Semantics follow Prometheus, with these choices (documented in docs/simulator.md):

- Range selectors and the 5-minute lookback are left-open, `(t - range, t]` (Prometheus 3).
  The exporter's queries never put a sample on a range boundary, so 2.x (closed) agrees.
- Subquery steps are absolute multiples of the step, the first one `>= t - range`; a subquery
  without a step uses 60 s (Prometheus' default evaluation interval).
- There are no staleness markers: a series that stopped stays visible for the lookback, as in
  Prometheus serving backfilled blocks.
- `avg` and `avg_over_time` are sum / count, which can differ from Prometheus' incremental mean
  in the last bit for values that are not exactly representable.

Anything outside the supported subset raises `QueryUnsupported` (HTTP 422, `execution`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import promql_parser as pp

from chargeback_simulator.series import (
    METRIC_NAME,
    FloatArray,
    IntArray,
    LabelKey,
    LabelMatcher,
    Labels,
    MatchOp,
    SeriesSet,
    Storage,
    label_key,
)

LOOKBACK_MS = 300_000
DEFAULT_SUBQUERY_STEP_MS = 60_000
# Range queries are evaluated in chunks of outer steps so raw data held at once stays bounded.
CHUNK_BUDGET_MS = 2 * 3600 * 1000

_ARITHMETIC = {"+", "-", "*", "/", "%", "^"}
_COMPARISON = {"==", "!=", ">", "<", ">=", "<="}
_SET = {"and", "or", "unless"}
_RANGE_FUNCS = {"sum_over_time", "avg_over_time", "max_over_time", "min_over_time",
                "count_over_time", "last_over_time", "present_over_time"}
_AGGREGATIONS = {"sum", "max", "min", "avg", "count", "group", "topk", "bottomk"}
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # Prometheus 2.x model.LabelNameRE


class PromQLError(Exception):
    """A query that cannot be answered; `error_type` is the Prometheus `errorType`."""

    error_type = "execution"


class QueryParseError(PromQLError):
    """The query does not parse (HTTP 400, `bad_data`)."""

    error_type = "bad_data"


class QueryUnsupported(PromQLError):
    """Valid PromQL outside the simulator's subset (HTTP 422, `execution`)."""


class QueryExecutionError(PromQLError):
    """Evaluation failed as it would in Prometheus, e.g. many-to-many matching (HTTP 422)."""


class QueryTimeout(PromQLError):
    """Evaluation exceeded its timeout (HTTP 503, `timeout`)."""

    error_type = "timeout"


@dataclass(slots=True)
class Scalar:
    """A scalar per evaluation timestamp."""

    ts: IntArray
    values: FloatArray


@dataclass(frozen=True, slots=True)
class QueryResult:
    """An evaluated query.

    `kind` is the Prometheus `resultType`. For "vector" and "matrix" results `series` holds the
    rows (columns are `series.ts`); for "scalar", `scalar` does. Rows are sorted by labels.
    """

    kind: Literal["vector", "matrix", "scalar"]
    series: SeriesSet | None = None
    scalar: Scalar | None = None
    # Raw samples read from storage, and the metrics the query names (Sysdig's limits).
    samples: int = 0
    metrics: frozenset[str] = frozenset()


@dataclass(slots=True)
class _RangeArg:
    """Samples for a range function and the windows `(t - range, t]` to aggregate them over."""

    data: SeriesSet
    lo: IntArray
    hi: IntArray


Value = SeriesSet | Scalar
Signature = tuple[tuple[str, str], ...] | frozenset[tuple[str, str]]


def parse(query: str) -> Any:
    """Parse PromQL; raises `QueryParseError` with the parser's one-line message."""
    if not query.strip():
        raise QueryParseError("empty query")
    try:
        return pp.parse(query)
    except (ValueError, RuntimeError) as exc:
        raise QueryParseError(f"parse error: {str(exc).splitlines()[0]}") from exc


def _ms(delta: timedelta | None) -> int:
    return 0 if delta is None else delta // timedelta(milliseconds=1)


class Engine:
    """Evaluates PromQL against a storage. Thread-safe if the storage is.

    `timer` is a monotonic clock used only to enforce query timeouts.
    """

    def __init__(self, storage: Storage, timer: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self._timer = timer

    def instant(self, query: str, t: float, timeout: float | None = None) -> QueryResult:
        """Evaluate at one instant `t` (epoch seconds)."""
        expr = parse(query)
        ctx = _Context(self.storage, self._deadline(timeout), self._timer)
        ts = np.array([round(t * 1000)], dtype=np.int64)
        node = _unwrap(expr)
        if isinstance(node, pp.MatrixSelector | pp.SubqueryExpr):
            arg = ctx.range_arg(node, ts)
            return QueryResult("matrix", _sorted(_window_matrix(arg)), **ctx.cost())
        value = ctx.eval(expr, ts)
        if isinstance(value, Scalar):
            return QueryResult("scalar", scalar=value, **ctx.cost())
        return QueryResult("vector", _sorted(_drop_empty(value)), **ctx.cost())

    def range(self, query: str, start: float, end: float, step: float,
              timeout: float | None = None) -> QueryResult:
        """Evaluate at `start + k*step <= end` (epoch seconds); the result is a matrix."""
        expr = parse(query)
        node = _unwrap(expr)
        if isinstance(node, pp.MatrixSelector | pp.SubqueryExpr | pp.StringLiteral):
            raise QueryParseError(
                "invalid expression type \"range vector\" for range query, must be Scalar or "
                "instant Vector")
        start_ms, step_ms = round(start * 1000), round(step * 1000)
        if step_ms <= 0:
            raise QueryParseError("zero or negative query resolution step widths are not accepted")
        if end < start:
            raise QueryParseError("end timestamp must not be before start time")
        count = (round(end * 1000) - start_ms) // step_ms + 1
        ts = start_ms + step_ms * np.arange(count, dtype=np.int64)
        ctx = _Context(self.storage, self._deadline(timeout), self._timer)
        per_chunk = max(1, (CHUNK_BUDGET_MS - _reach(expr)) // step_ms + 1)
        rows: dict[LabelKey, tuple[Labels, FloatArray]] = {}
        for lo in range(0, count, per_chunk):
            chunk = ts[lo:lo + per_chunk]
            value = ctx.eval(expr, chunk)
            ctx.memo.clear()
            if isinstance(value, Scalar):
                value = SeriesSet([{}], chunk, value.values[None, :])
            for labels, row in zip(value.labels, value.values, strict=True):
                if np.isnan(row).all():
                    continue
                key = label_key(labels)
                if key not in rows:
                    rows[key] = (labels, np.full(count, np.nan))
                rows[key][1][lo:lo + len(chunk)] = row
        out = SeriesSet([r[0] for r in rows.values()], ts,
                        np.array([r[1] for r in rows.values()]).reshape(len(rows), count))
        return QueryResult("matrix", _sorted(out), **ctx.cost())

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self._timer() + timeout


def _match_op(op: Any) -> MatchOp:
    # The parser's MatchOp enum is comparable but not hashable.
    for candidate, text in ((pp.MatchOp.Equal, "="), (pp.MatchOp.NotEqual, "!="),
                            (pp.MatchOp.Re, "=~"), (pp.MatchOp.NotRe, "!~")):
        if op == candidate:
            return text  # type: ignore[return-value]
    raise QueryUnsupported(f"unknown matcher operator {op}")


def is_aggregation(query: str) -> bool:
    """Whether the outermost operation of `query` is an aggregation (`sum by (...) (...)`):
    what Sysdig's service limits call an aggregated query. Raises `QueryParseError`."""
    return isinstance(_unwrap(parse(query)), pp.AggregateExpr)


def _unwrap(node: Any) -> Any:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node


def _reach(node: Any) -> int:
    """How far back (ms) evaluating `node` at t reads raw data; sizes range-query chunks."""
    node = _unwrap(node)
    if isinstance(node, pp.VectorSelector):
        return LOOKBACK_MS + max(0, _ms(node.offset))
    if isinstance(node, pp.MatrixSelector):
        return _ms(node.range) + max(0, _ms(node.vector_selector.offset))
    if isinstance(node, pp.SubqueryExpr):
        step = _ms(node.step) or DEFAULT_SUBQUERY_STEP_MS
        return _ms(node.range) + max(0, _ms(node.offset)) + step + _reach(node.expr)
    children: list[Any] = []
    if isinstance(node, pp.AggregateExpr | pp.UnaryExpr):
        children = [node.expr]
    elif isinstance(node, pp.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif isinstance(node, pp.Call):
        children = list(node.args)
    return max((_reach(c) for c in children), default=0)


class _Context:
    """One evaluation: storage, deadline and a memo of already evaluated sub-expressions."""

    def __init__(self, storage: Storage, deadline: float | None,
                 timer: Callable[[], float]) -> None:
        self.storage = storage
        self.deadline = deadline
        self.timer = timer
        # Each value with the samples its evaluation scanned, counted again on every reuse: a
        # query scans the data of each selector it names, however the simulator computes it.
        self.memo: dict[tuple[str, bytes], tuple[Value, int]] = {}
        self.samples = 0
        self.metrics: set[str] = set()

    def cost(self) -> dict[str, Any]:
        """What the evaluation read: samples scanned and metrics named (`QueryResult` fields)."""
        return {"samples": self.samples, "metrics": frozenset(self.metrics)}

    def scanned(self, raw: SeriesSet) -> SeriesSet:
        """`raw`, fresh from storage, counted as scanned."""
        self.samples += int(np.count_nonzero(~np.isnan(raw.values)))
        return raw

    def check(self) -> None:
        if self.deadline is not None and self.timer() > self.deadline:
            raise QueryTimeout("query timed out in expression evaluation")

    def eval(self, node: Any, ts: IntArray) -> Value:
        self.check()
        node = _unwrap(node)
        key = (f"{type(node).__name__}:{node.prettify()}", ts.tobytes())
        hit = self.memo.get(key)
        if hit is None:
            before = self.samples
            value = self._eval(node, ts)
            self.memo[key] = (value, self.samples - before)
            return value
        self.samples += hit[1]
        return hit[0]

    def _eval(self, node: Any, ts: IntArray) -> Value:
        if isinstance(node, pp.NumberLiteral):
            return Scalar(ts, np.full(len(ts), float(node.val)))
        if isinstance(node, pp.VectorSelector):
            return self.selector(node, ts)
        if isinstance(node, pp.UnaryExpr):
            inner = self.eval(node.expr, ts)
            if isinstance(inner, Scalar):
                return Scalar(ts, -inner.values)
            return _without_names(inner, -inner.values)
        if isinstance(node, pp.AggregateExpr):
            return self.aggregate(node, ts)
        if isinstance(node, pp.Call):
            return self.call(node, ts)
        if isinstance(node, pp.BinaryExpr):
            return self.binary(node, ts)
        if isinstance(node, pp.MatrixSelector | pp.SubqueryExpr):
            raise QueryUnsupported("a range vector is only supported as a function argument")
        raise QueryUnsupported(f"{type(node).__name__} expressions are not supported")

    # ------------------------------------------------------------------ selectors
    def matchers(self, vs: Any) -> list[LabelMatcher]:
        if vs.at is not None:
            raise QueryUnsupported("the @ modifier is not supported")
        if vs.matchers.or_matchers:
            raise QueryUnsupported("'or' inside a selector is not supported")
        out = [LabelMatcher.of(METRIC_NAME, "=", vs.name)] if vs.name else []
        if vs.name:
            self.metrics.add(vs.name)
        for m in vs.matchers.matchers:
            if m.name == METRIC_NAME:
                self.metrics.add(m.value)
            try:
                out.append(LabelMatcher.of(m.name, _match_op(m.op), m.value))
            except ValueError as exc:
                raise QueryParseError(str(exc)) from exc
        return out

    def selector(self, vs: Any, ts: IntArray) -> SeriesSet:
        """Instant selector: the latest sample in `(t - 5m, t]` (after `offset`)."""
        at = ts - _ms(vs.offset)
        raw = self.scanned(self.storage.select(self.matchers(vs), int(at[0]) - LOOKBACK_MS + 1,
                                               int(at[-1])))
        lo, hi = _windows(raw.ts, at, LOOKBACK_MS)
        return _drop_empty(SeriesSet(raw.labels, ts, _last(raw.values, lo, hi)))

    def range_arg(self, node: Any, ts: IntArray) -> _RangeArg:
        self.check()
        node = _unwrap(node)
        if isinstance(node, pp.MatrixSelector):
            vs = node.vector_selector
            rng = _ms(node.range)
            at = ts - _ms(vs.offset)
            raw = self.scanned(self.storage.select(self.matchers(vs), int(at[0]) - rng + 1,
                                                   int(at[-1])))
            lo, hi = _windows(raw.ts, at, rng)
            return _RangeArg(raw, lo, hi)
        if isinstance(node, pp.SubqueryExpr):
            if node.at is not None:
                raise QueryUnsupported("the @ modifier is not supported")
            rng, step = _ms(node.range), _ms(node.step) or DEFAULT_SUBQUERY_STEP_MS
            at = ts - _ms(node.offset)
            inner_ts = _subquery_steps(at, rng, step)
            inner = self.eval(node.expr, inner_ts)
            if isinstance(inner, Scalar):
                raise QueryUnsupported("subquery of a scalar")
            lo, hi = _windows(inner.ts, at, rng)
            return _RangeArg(inner, lo, hi)
        raise QueryUnsupported(f"expected a range vector, got {type(node).__name__}")

    # ------------------------------------------------------------------ functions
    def call(self, node: Any, ts: IntArray) -> Value:
        name = node.func.name
        if name in _RANGE_FUNCS:
            arg = self.range_arg(node.args[0], ts)
            values = _range_function(name, arg)
            return _drop_empty(_without_names(SeriesSet(arg.data.labels, ts, values)))
        if name == "time":
            return Scalar(ts, ts / 1000.0)
        if name == "vector":
            s = self.eval(node.args[0], ts)
            assert isinstance(s, Scalar)
            return SeriesSet([{}], ts, s.values[None, :].copy())
        if name == "scalar":
            v = self.eval(node.args[0], ts)
            assert isinstance(v, SeriesSet)
            one = (~np.isnan(v.values)).sum(axis=0) == 1
            return Scalar(ts, np.where(one, np.nansum(v.values, axis=0) if len(v) else 0.0,
                                       np.nan))
        if name == "label_replace":
            v = self.eval(node.args[0], ts)
            assert isinstance(v, SeriesSet)  # the parser checks the argument types
            dst, repl, src, regex = (str(a.val) for a in node.args[1:])
            return _label_replace(v, dst, repl, src, regex)
        raise QueryUnsupported(f"function {name}() is not supported by the simulator")

    # ------------------------------------------------------------------ aggregation
    def aggregate(self, node: Any, ts: IntArray) -> SeriesSet:
        op = str(node.op)
        if op not in _AGGREGATIONS:
            raise QueryUnsupported(f"aggregation {op}() is not supported by the simulator")
        inner = self.eval(node.expr, ts)
        if not isinstance(inner, SeriesSet):
            raise QueryUnsupported(f"{op}() of a scalar")
        mod = node.modifier
        by = mod is None or mod.type == pp.AggModifierType.By
        names = list(mod.labels) if mod is not None else []
        groups: dict[LabelKey, int] = {}
        out_labels: list[Labels] = []
        index = np.empty(len(inner), dtype=np.int64)
        drop = set(names) | {METRIC_NAME}
        by_groups: dict[tuple[str | None, ...], int] = {}
        for i, labels in enumerate(inner.labels):
            if by:
                values_key = tuple(labels.get(k) for k in names)
                gi = by_groups.get(values_key)
                if gi is None:
                    gi = by_groups[values_key] = len(out_labels)
                    out_labels.append({k: v for k, v in zip(names, values_key, strict=True)
                                       if v is not None})
                index[i] = gi
                continue
            g = {k: v for k, v in labels.items() if k not in drop}
            key = label_key(g)
            if key not in groups:
                groups[key] = len(out_labels)
                out_labels.append(g)
            index[i] = groups[key]
        if not len(inner):
            return SeriesSet.empty(ts)
        if op in ("topk", "bottomk"):
            k = self.eval(node.param, ts)
            if not isinstance(k, Scalar):
                raise QueryUnsupported(f"{op}() needs a scalar parameter")
            return _select_k(inner, index, int(k.values[0]), op == "topk")
        if bool(np.all(index[1:] >= index[:-1])):
            values, sorted_index = inner.values, index  # groups already contiguous
        else:
            order = np.argsort(index, kind="stable")
            values, sorted_index = inner.values[order], index[order]
        present = ~np.isnan(values)
        starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
        count = np.add.reduceat(present.view(np.int8), starts, axis=0, dtype=np.int32)
        if op in ("sum", "avg"):
            result = np.add.reduceat(np.where(present, values, 0.0), starts, axis=0)
            if op == "avg":
                with np.errstate(invalid="ignore", divide="ignore"):
                    result = result / count
        elif op == "max":
            result = np.fmax.reduceat(values, starts, axis=0)
        elif op == "min":
            result = np.fmin.reduceat(values, starts, axis=0)
        elif op == "count":
            result = count.astype(np.float64)
        else:  # group
            result = np.ones_like(values[starts])
        result = np.where(count > 0, result, np.nan)
        grouped = [out_labels[int(sorted_index[s])] for s in starts]
        return _drop_empty(SeriesSet(grouped, ts, result))

    # ------------------------------------------------------------------ binary operators
    def binary(self, node: Any, ts: IntArray) -> Value:
        op = str(node.op)
        mod = node.modifier
        return_bool = bool(mod is not None and mod.return_bool)
        if op not in _ARITHMETIC | _COMPARISON | _SET:
            raise QueryUnsupported(f"operator {op} is not supported by the simulator")
        lhs = self.eval(node.lhs, ts)
        rhs = self.eval(node.rhs, ts)
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            value, keep = _elementwise(op, lhs.values, rhs.values)
            return Scalar(ts, np.where(keep, value, np.nan) if op in _COMPARISON else value)
        if isinstance(lhs, Scalar) or isinstance(rhs, Scalar):
            return _vector_scalar(op, lhs, rhs, return_bool, ts)
        assert isinstance(lhs, SeriesSet) and isinstance(rhs, SeriesSet)
        matching = mod.matching if mod is not None else None
        on = matching is not None and matching.type == pp.LabelModifierType.Include
        names = tuple(matching.labels) if matching is not None else ()
        if op in _SET:
            return _set_op(op, lhs, rhs, on, names)
        if mod is not None and mod.card in (pp.VectorMatchCardinality.ManyToOne,
                                            pp.VectorMatchCardinality.OneToMany):
            right = mod.card == pp.VectorMatchCardinality.OneToMany
            return _many_to_one(op, lhs, rhs, on, names, tuple(mod.group_labels or ()), right,
                                return_bool, ts)
        return _one_to_one(op, lhs, rhs, on, names, return_bool, ts)


# ---------------------------------------------------------------------- helpers
def _select_k(inner: SeriesSet, groups: IntArray, k: int, largest: bool) -> SeriesSet:
    """`topk`/`bottomk`: per group and timestamp, the `k` largest (smallest) samples.

    The series keep all their labels; ties go to the row sorted first.
    """
    values = inner.values
    keep = np.zeros(values.shape, dtype=bool)
    if k > 0:
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            block = values[rows]
            rank = np.where(np.isnan(block), np.inf, -block if largest else block)
            chosen = np.zeros(block.shape, dtype=bool)
            np.put_along_axis(chosen, np.argsort(rank, axis=0, kind="stable")[:k], True, axis=0)
            keep[rows] = chosen & ~np.isnan(block)
    return _drop_empty(SeriesSet(inner.labels, inner.ts, np.where(keep, values, np.nan)))


def _label_replace(data: SeriesSet, dst: str, repl: str, src: str, regex: str) -> SeriesSet:
    """Prometheus' `label_replace`: where `regex` matches all of `src` (absent: ""), `dst` is set
    to `repl` expanded (removed when that is empty); other series are unchanged, and the metric
    name stays. Series that end up with one label set are Prometheus' duplicate error."""
    try:
        pattern = re.compile(f"(?:{regex})")
    except re.error:
        raise QueryExecutionError(
            f"invalid regular expression in label_replace(): {regex}") from None
    if not _LABEL_NAME.fullmatch(dst):
        raise QueryExecutionError(f"invalid destination label name in label_replace(): {dst}")
    # Many series share a source value (every container of a name): expand each value once.
    expanded: dict[str, str | None] = {}
    out: list[Labels] = []
    for labels in data.labels:
        value = labels.get(src, "")
        if value not in expanded:
            m = pattern.fullmatch(value)
            expanded[value] = None if m is None else _expand(m, repl)
        new = expanded[value]
        if new is None:
            out.append(labels)
            continue
        relabelled = {k: v for k, v in labels.items() if k != dst}
        if new:
            relabelled[dst] = new
        out.append(relabelled)
    return _collapse(out, data.ts, data.values)


def _expand(m: re.Match[str], template: str) -> str:
    """Go's `Regexp.ExpandString`: `$name`, `${name}`, `$1`, `$$`; an unknown or unmatched
    group is empty, and a name is the longest run of letters, digits and `_` (`$1x` is the
    group named "1x")."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        brace = i < n and template[i] == "{"
        k = i + 1 if brace else i
        end = k
        while end < n and (template[end].isalpha() or template[end].isdecimal()
                           or template[end] == "_"):
            end += 1
        name = template[k:end]
        if not name or (brace and (end >= n or template[end] != "}")):
            out.append("$")  # malformed: a literal $
            continue
        i = end + 1 if brace else end
        group: int | str | None = None
        if name.isascii() and name.isdigit() and not (name[0] == "0" and len(name) > 1):
            group = int(name) if int(name) <= m.re.groups else None
        elif name in m.re.groupindex:
            group = name
        if group is not None:
            out.append(m.group(group) or "")
    return "".join(out)


def _subquery_steps(at: IntArray, rng: int, step: int) -> IntArray:
    """Absolute multiples of `step` in `[t - rng, t]` for every t, merged and sorted."""
    first = -(-(at - rng) // step) * step
    last = (at // step) * step
    if len(at) == 1 or bool(np.all(first[1:] <= last[:-1] + step)):
        return np.arange(int(first[0]), int(last[-1]) + 1, step, dtype=np.int64)
    parts = [np.arange(int(f), int(la) + 1, step, dtype=np.int64)
             for f, la in zip(first, last, strict=True)]
    return np.unique(np.concatenate(parts))


def _windows(raw_ts: IntArray, at: IntArray, rng: int) -> tuple[IntArray, IntArray]:
    """Column bounds `[lo, hi)` of each window `(t - rng, t]` in sorted `raw_ts`."""
    lo = np.searchsorted(raw_ts, at - rng, side="right").astype(np.int64)
    hi = np.searchsorted(raw_ts, at, side="right").astype(np.int64)
    return lo, hi


def _last(values: FloatArray, lo: IntArray, hi: IntArray) -> FloatArray:
    """Latest non-NaN value of each row within each window, NaN if there is none."""
    n, m = values.shape
    if m == 0 or n == 0:
        return np.full((n, len(lo)), np.nan)
    if (len(hi) == m and bool(np.all(hi == np.arange(1, m + 1)))
            and bool(np.all(lo == np.arange(m)))):
        return values  # each window holds exactly its own column (a subquery over the grid)
    if bool(np.all(hi - lo <= 1)):
        # Windows of at most one sample (e.g. `[5s]` on a 10 s grid): a single gather.
        picked = values[:, np.maximum(hi - 1, 0)]
        single: FloatArray = np.where((hi > lo)[None, :], picked, np.nan)
        return single
    present = ~np.isnan(values)
    latest = np.maximum.accumulate(np.where(present, np.arange(m), -1), axis=1)
    col = np.where(hi > 0, latest[:, np.maximum(hi - 1, 0)], -1)
    ok = col >= lo[None, :]
    picked = np.take_along_axis(values, np.maximum(col, 0), axis=1)
    out: FloatArray = np.where(ok, picked, np.nan)
    return out


def _window_reduce(ufunc: np.ufunc, values: FloatArray, lo: IntArray, hi: IntArray,
                   pad: float) -> FloatArray:
    """`ufunc.reduce` over each window's columns (garbage where a window is empty)."""
    n = values.shape[0]
    padded = np.concatenate([values, np.full((n, 1), pad)], axis=1)
    idx = np.empty(2 * len(lo), dtype=np.int64)
    idx[0::2], idx[1::2] = lo, hi
    out: FloatArray = ufunc.reduceat(padded, idx, axis=1)[:, 0::2]
    return out


def _kahan_sum(values: FloatArray, lo: IntArray, hi: IntArray) -> FloatArray:
    """Σ of each row over each window's columns, in time order with Neumaier's compensation,
    as Prometheus' `sum_over_time` adds (`kahanSumInc`): values that float64 does not hold
    exactly (a claim's capacity split in three) sum to the same last digit as there."""
    out = np.empty((values.shape[0], len(lo)))
    for w, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        total = np.zeros(values.shape[0])
        comp = np.zeros(values.shape[0])
        for j in range(a, b):
            inc = values[:, j]
            t = total + inc
            comp += np.where(np.abs(total) >= np.abs(inc), (total - t) + inc, (inc - t) + total)
            total = t
        out[:, w] = np.where(np.isinf(total), total, total + comp)
    return out


def _range_function(name: str, arg: _RangeArg) -> FloatArray:
    values, lo, hi = arg.data.values, arg.lo, arg.hi
    n, m = values.shape
    if n == 0:
        return np.full((0, len(lo)), np.nan)
    present = ~np.isnan(values)
    if name == "last_over_time":
        return _last(values, lo, hi)
    cum = np.concatenate([np.zeros((n, 1), dtype=np.int64),
                          np.cumsum(present, axis=1, dtype=np.int64)], axis=1)
    count = cum[:, hi] - cum[:, lo]
    if name == "count_over_time":
        result = count.astype(np.float64)
    elif name == "present_over_time":
        result = np.ones(count.shape)
    elif name in ("sum_over_time", "avg_over_time"):
        zeroed = np.where(present, values, 0.0)
        if int(np.sum(hi - lo)) > 8 * (m + 1):
            # Heavily overlapping windows: prefix sums (exact for the fleet's quantised values).
            csum = np.concatenate([np.zeros((n, 1)), np.cumsum(zeroed, axis=1)], axis=1)
            result = csum[:, hi] - csum[:, lo]
        elif name == "sum_over_time":
            result = _kahan_sum(zeroed, lo, hi)
        else:
            result = _window_reduce(np.add, zeroed, lo, hi, 0.0)
        if name == "avg_over_time":
            with np.errstate(invalid="ignore", divide="ignore"):
                result = result / count
    elif name == "max_over_time":
        result = _window_reduce(np.fmax, values, lo, hi, np.nan)
    else:  # min_over_time
        result = _window_reduce(np.fmin, values, lo, hi, np.nan)
    out: FloatArray = np.where(count > 0, result, np.nan)
    return out


def _window_matrix(arg: _RangeArg) -> SeriesSet:
    """The raw samples of a top-level range vector (instant query), one window."""
    lo, hi = int(arg.lo[0]), int(arg.hi[0])
    data = SeriesSet(arg.data.labels, arg.data.ts[lo:hi], arg.data.values[:, lo:hi])
    return _drop_empty(data)


def _without_names(data: SeriesSet, values: FloatArray | None = None) -> SeriesSet:
    """Drop `__name__` from every row; rows that become identical are merged (or an error)."""
    vals = data.values if values is None else values
    names = {lb.get(METRIC_NAME) for lb in data.labels}
    labels = [_drop_name(lb) for lb in data.labels]
    if len(names) <= 1:
        # Rows were distinct and shared one name, so they stay distinct without it.
        return SeriesSet(labels, data.ts, vals)
    return _collapse(labels, data.ts, vals)


def _drop_name(labels: Labels) -> Labels:
    if METRIC_NAME not in labels:
        return labels
    return {k: v for k, v in labels.items() if k != METRIC_NAME}


def _drop_empty(data: SeriesSet) -> SeriesSet:
    """Remove rows with no value at any timestamp."""
    if not len(data):
        return data
    keep = ~np.isnan(data.values).all(axis=1)
    if keep.all():
        return data
    idx = np.flatnonzero(keep)
    return SeriesSet([data.labels[i] for i in idx], data.ts, data.values[idx])


def _sorted(data: SeriesSet) -> SeriesSet:
    order = sorted(range(len(data)), key=lambda i: label_key(data.labels[i]))
    return SeriesSet([data.labels[i] for i in order], data.ts,
                     data.values[order] if order else data.values)


def _identity(labels: Labels) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def _collapse(labels: Sequence[Labels], ts: IntArray, values: FloatArray) -> SeriesSet:
    """Merge rows with identical labels; two values at one timestamp is Prometheus' error."""
    first: dict[frozenset[tuple[str, str]], int] = {}
    group = np.empty(len(labels), dtype=np.int64)
    for i, lb in enumerate(labels):
        group[i] = first.setdefault(_identity(lb), i)
    if len(first) == len(labels):
        return SeriesSet(list(labels), ts, values)
    dup = np.flatnonzero(group != np.arange(len(labels)))
    targets = np.unique(group[dup])
    members = np.concatenate([targets, dup])
    counts = _scatter_count(np.searchsorted(targets, group[members]), ~np.isnan(values[members]),
                            len(targets))
    if (counts > 1).any():
        raise QueryExecutionError("vector cannot contain metrics with the same labelset")
    keep = np.flatnonzero(group == np.arange(len(labels)))
    merged = values[keep]
    at = np.searchsorted(keep, targets)
    for row in dup:
        pos = at[np.searchsorted(targets, group[row])]
        merged[pos] = np.where(np.isnan(merged[pos]), values[row], merged[pos])
    return SeriesSet([labels[i] for i in keep.tolist()], ts, merged)


def _matched_values(op: str, a: FloatArray, b: FloatArray, return_bool: bool,
                    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """`a op b` for matched samples, and where the result has a sample: both sides present and,
    for a comparison without `bool`, the comparison true (`bool` gives 1 or 0 instead)."""
    value, keep = _elementwise(op, a, b)
    both = ~np.isnan(a) & ~np.isnan(b)
    if op in _COMPARISON:
        if return_bool:
            value = np.asarray(keep, dtype=np.float64)
        else:
            both &= np.asarray(keep, dtype=bool)
    return value, both


def _elementwise(op: str, a: FloatArray, b: FloatArray) -> tuple[FloatArray, Any]:
    """(value, keep) of `a op b`; keep is the comparison outcome (all True for arithmetic)."""
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b, True
        if op == "-":
            return a - b, True
        if op == "*":
            return a * b, True
        if op == "/":
            return a / b, True
        if op == "%":
            return np.fmod(a, b), True
        if op == "^":
            return np.power(a, b), True
        cmp = {"==": np.equal, "!=": np.not_equal, ">": np.greater, "<": np.less,
               ">=": np.greater_equal, "<=": np.less_equal}[op]
        return a, cmp(a, b)


def _vector_scalar(op: str, lhs: Value, rhs: Value, return_bool: bool, ts: IntArray) -> Value:
    if op in _SET:
        raise QueryExecutionError(f"set operator {op} not allowed with a scalar")
    swap = isinstance(lhs, Scalar)
    vec = rhs if swap else lhs
    sc = lhs if swap else rhs
    assert isinstance(vec, SeriesSet) and isinstance(sc, Scalar)
    s = np.broadcast_to(sc.values[None, :], vec.values.shape)
    a, b = (s, vec.values) if swap else (vec.values, s)
    value, keep = _elementwise(op, a, b)
    if op in _COMPARISON:
        if return_bool:
            out = np.where(np.isnan(vec.values), np.nan, np.asarray(keep, dtype=np.float64))
            return _without_names(vec, out)
        # The vector's own value is kept even when the scalar is on the left.
        return _drop_empty(SeriesSet(vec.labels, ts, np.where(keep, vec.values, np.nan)))
    return _without_names(vec, value)


def _signature(labels: Labels, on: bool, names: Sequence[str]) -> Signature:
    if on:
        return tuple((k, labels.get(k, "")) for k in names)
    if not names and METRIC_NAME not in labels:
        return frozenset(labels.items())
    skip = set(names) | {METRIC_NAME}
    return frozenset((k, v) for k, v in labels.items() if k not in skip)


def _signature_ids(labels: Sequence[Labels], on: bool, names: Sequence[str],
                   ids: dict[Signature, int]) -> IntArray:
    """Dense id of each row's matching signature, allocating new ids in `ids`."""
    out = np.empty(len(labels), dtype=np.int64)
    for i, lb in enumerate(labels):
        out[i] = ids.setdefault(_signature(lb, on, names), len(ids))
    return out


def _scatter_count(ids: IntArray, present: Any, groups: int) -> IntArray:
    """Per id and timestamp, how many rows with that id have a sample."""
    counts = np.zeros((groups, present.shape[1]), dtype=np.int64)
    if len(ids) and np.bincount(ids).max() == 1:
        counts[ids] = present  # ids are unique: a plain scatter
    elif len(ids):
        np.add.at(counts, ids, present.astype(np.int64))
    return counts


def _presence(ids: IntArray, values: FloatArray, groups: int) -> Any:
    """Per signature id and timestamp: does any row with that signature have a sample?"""
    return _scatter_count(ids, ~np.isnan(values), groups) > 0


def _set_op(op: str, lhs: SeriesSet, rhs: SeriesSet, on: bool, names: Sequence[str]) -> SeriesSet:
    ts = lhs.ts
    ids: dict[Signature, int] = {}
    lid = _signature_ids(lhs.labels, on, names, ids)
    rid = _signature_ids(rhs.labels, on, names, ids)
    if op == "or":
        lhas = _presence(lid, lhs.values, len(ids))
        rvals = np.where(lhas[rid], np.nan, rhs.values)
        plain = not names and not any(
            METRIC_NAME in lb for side in (lhs.labels, rhs.labels) for lb in side)
        if plain and len(set(lid.tolist())) == len(lid) and len(set(rid.tolist())) == len(rid):
            # Without names or matching modifiers, a row's signature is its label set: merge
            # both sides by signature id (their samples never coincide, by construction).
            merged = np.full((len(ids), len(ts)), np.nan)
            merged[rid] = rvals
            merged[lid] = np.where(np.isnan(lhs.values), merged[lid], lhs.values)
            out_labels: list[Labels | None] = [None] * len(ids)
            for i, lb in zip(rid.tolist(), rhs.labels, strict=True):
                out_labels[i] = lb
            for i, lb in zip(lid.tolist(), lhs.labels, strict=True):
                out_labels[i] = lb
            used = [i for i, lb in enumerate(out_labels) if lb is not None]
            return _drop_empty(SeriesSet([out_labels[i] for i in used], ts,  # type: ignore[misc]
                                         merged[used]))
        values = np.concatenate([lhs.values, rvals], axis=0)
        return _drop_empty(_collapse([*lhs.labels, *rhs.labels], ts, values))
    rhas = _presence(rid, rhs.values, len(ids))[lid]
    values = np.where(rhas if op == "and" else ~rhas, lhs.values, np.nan)
    return _drop_empty(SeriesSet(list(lhs.labels), ts, values))


def _one_to_one(op: str, lhs: SeriesSet, rhs: SeriesSet, on: bool, names: Sequence[str],
                return_bool: bool, ts: IntArray) -> SeriesSet:
    """Vector/vector arithmetic or comparison with one-to-one matching on a signature."""
    ids: dict[Signature, int] = {}
    rid = _signature_ids(rhs.labels, on, names, ids)
    nright = len(ids)
    lid = _signature_ids(lhs.labels, on, names, ids)
    rcount = _scatter_count(rid, ~np.isnan(rhs.values), nright)
    if (rcount > 1).any():
        raise QueryExecutionError(
            "found duplicate series for the match group on the right hand-side of the "
            "operation; many-to-many matching not allowed: matching labels must be unique on "
            "one side")
    right = np.full((nright, len(ts)), np.nan)
    if len(rid) == nright:
        right[rid] = rhs.values
    elif len(rid):
        # Rows sharing a signature never overlap in time (checked above), so fmax merges them.
        np.fmax.at(right, rid, rhs.values)
    matched = np.flatnonzero(lid < nright)
    a = lhs.values[matched]
    b = right[lid[matched]]
    if len(matched):
        lcount = _scatter_count(lid[matched], ~np.isnan(a), nright)
        if ((lcount > 1) & ~np.isnan(right)).any():
            raise QueryExecutionError(
                "multiple matches for labels: many-to-one matching must be explicit "
                "(group_left/group_right)")
    value, both = _matched_values(op, a, b, return_bool)
    drop_name = op in _ARITHMETIC or return_bool
    out_labels: list[Labels] = []
    for i in matched:
        labels = lhs.labels[i]
        if drop_name:
            labels = _drop_name(labels)
        if on:
            labels = {k: v for k, v in labels.items() if k in names}
        elif names:
            labels = {k: v for k, v in labels.items() if k not in names}
        out_labels.append(labels)
    values = np.where(both, value, np.nan).reshape(len(matched), len(ts))
    return _drop_empty(_collapse(out_labels, ts, values))


def _many_to_one(op: str, lhs: SeriesSet, rhs: SeriesSet, on: bool, names: Sequence[str],
                 include: Sequence[str], right: bool, return_bool: bool, ts: IntArray
                 ) -> SeriesSet:
    """`group_left` (`right` False: lhs is the "many" side) or `group_right`: each sample of
    the many side meets at most one of the other side with its signature at that instant.

    The result keeps the many side's labels (without `__name__` for arithmetic or `bool`),
    plus the `include` labels copied from the matched sample of the other side (removed where
    that has none); a comparison without `bool` keeps the left operand's value, as Prometheus.
    """
    many, one = (rhs, lhs) if right else (lhs, rhs)
    ids: dict[Signature, int] = {}
    oid = _signature_ids(one.labels, on, names, ids)
    if (_scatter_count(oid, ~np.isnan(one.values), len(ids)) > 1).any():
        raise QueryExecutionError(
            "found duplicate series for the match group on the "
            f"{'left' if right else 'right'} hand-side of the operation; many-to-many matching "
            "not allowed: matching labels must be unique on one side")
    mid = _signature_ids(many.labels, on, names, ids)
    rows_of: dict[int, list[int]] = {}
    for j, sig in enumerate(oid.tolist()):
        rows_of.setdefault(sig, []).append(j)
    drop_name = op in _ARITHMETIC or return_bool
    out_labels: list[Labels] = []
    out_values: list[FloatArray] = []
    # Per match group and result label set, the instants already filled: a second sample there
    # is Prometheus' error for this group (across groups, `_collapse` finds it).
    filled: dict[tuple[int, frozenset[tuple[str, str]]], npt.NDArray[np.bool_]] = {}
    for i, sig in enumerate(mid.tolist()):
        for j in rows_of.get(sig, ()):
            a, b = many.values[i], one.values[j]
            value, both = _matched_values(op, *((b, a) if right else (a, b)), return_bool)
            if not both.any():
                continue
            labels = _drop_name(many.labels[i]) if drop_name else dict(many.labels[i])
            if include:
                labels = dict(labels)
                for name in include:
                    got = one.labels[j].get(name, "")
                    if got:
                        labels[name] = got
                    else:
                        labels.pop(name, None)
            key = (sig, _identity(labels))
            seen = filled.get(key)
            if seen is not None and (seen & both).any():
                raise QueryExecutionError(
                    "multiple matches for labels: grouping labels must ensure unique matches")
            filled[key] = both if seen is None else seen | both
            out_labels.append(labels)
            out_values.append(np.where(both, value, np.nan))
    if not out_labels:
        return SeriesSet.empty(ts)
    return _drop_empty(_collapse(out_labels, ts, np.vstack(out_values)))
