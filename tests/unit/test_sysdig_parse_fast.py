"""The fast path of the Sysdig answer parse gives exactly what the series-by-series parse gives.

`_ref_parse_series` (the module's series-by-series checks) and `_ref_assemble` below (the plain
assembly `exporter.sysdig` used before its fast path: dicts of Decimals per workload) are the
references. Properties compare them with the module on random answers by exact `repr`, so a
changed exponent, rounding, order or error message counts; the coverage shares run under random
decimal precisions, and sums must stay exact whatever the precision.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.clock import FakeClock
from exporter.errors import SourceQueryError
from exporter.model import PeriodUsage, Resource, SampleSums, WorkloadKey, WorkloadUsage
from exporter.periods import Period
from exporter.queries import RECORD_GRAIN
from exporter.sysdig import (
    NO_WORKLOAD,
    Series,
    SysdigSource,
    _checked_values,
    _common_values,
    _series_values,
    parse_series,
)

PERIOD = Period(1_767_225_600, 1_767_229_200)
STEP = 60
AT = float(PERIOD.end - STEP // 2)
SLOTS = ("cpu.usage", "cpu.request", "cpu.chargeable", "memory.usage", "memory.request",
         "memory.chargeable")
COLUMNS = ("kube_deployment_label_team", "kube_namespace_label_costcenter", "app")


# --- reference algorithms ----------------------------------------------------------------------

def _ref_parse_series(result: Sequence[Any], at: float, where: str) -> list[Series]:
    """The series-by-series parse: `_checked_values`, the original checks, kept unchanged in
    the module (its errors are pinned by tests/unit/test_sysdig_parse.py)."""
    return [Series(labels, value) for labels, value in _checked_values(result, at, where)]


# The exporter's contract for sums of one workload's series: exact in 120 digits, else refused.
_EXACT_SUM = Context(prec=120, Emax=999_999, Emin=-999_999, traps=[Inexact, InvalidOperation])


def _ref_key(labels: Mapping[str, str]) -> WorkloadKey:
    cluster, namespace, kind, name = (labels.get(n, "") for n in RECORD_GRAIN)
    return WorkloadKey(cluster, namespace, kind or "unknown", name or NO_WORKLOAD)


def _ref_pick_labels(series: Sequence[Series], columns: Sequence[str],
                     key_of: Callable[[Mapping[str, str]], WorkloadKey] = _ref_key,
                     ) -> dict[WorkloadKey, dict[str, str]]:
    wanted = frozenset(columns)
    best: dict[WorkloadKey, tuple[Decimal, tuple[tuple[str, str], ...]]] = {}
    for s in series:
        key = key_of(s.labels)
        combo = tuple(sorted([kv for kv in s.labels.items() if kv[0] in wanted]))
        current = best.get(key)
        if current is None or s.value > current[0] or (s.value == current[0] and combo < current[1]):
            best[key] = (s.value, combo)
    return {k: dict(v[1]) for k, v in best.items()}


def _ref_assemble(results: Mapping[str, list[Series]], clusters: Sequence[str]) -> PeriodUsage:
    sums: dict[WorkloadKey, dict[str, Decimal]] = {}
    for slot in SLOTS:
        for s in results[slot]:
            key = _ref_key(s.labels)
            got = sums.get(key)
            if got is None:
                sums[key] = {slot: s.value}
            else:
                prev = got.get(slot)
                # Exact, whatever the ambient context (a change from the original `+`).
                got[slot] = s.value if prev is None else _EXACT_SUM.add(prev, s.value)
    labels = _ref_pick_labels(results["labels"], COLUMNS)
    coverage: dict[str, Decimal] = {}
    expected = Decimal(PERIOD.length // STEP)
    for s in results["coverage"]:
        coverage[s.labels.get("kube_cluster_name", "")] = min(Decimal(1), s.value / expected)
    for key in sums:
        coverage.setdefault(key.cluster, Decimal(0))
    for cluster in clusters:
        coverage.setdefault(cluster, Decimal(0))
    workloads = []
    for key in sorted(sums):
        got = sums[key]
        per: dict[Resource, SampleSums] = {}
        for res in ("cpu", "memory"):
            per[res] = SampleSums(  # type: ignore[index]
                usage=got.get(f"{res}.usage", Decimal(0)),
                request=got.get(f"{res}.request", Decimal(0)),
                chargeable=got.get(f"{res}.chargeable", Decimal(0)),
            )
        workloads.append(WorkloadUsage(key, labels.get(key, {}), per))
    return PeriodUsage(period=PERIOD, step_seconds=STEP, grain="pod", workloads=tuple(workloads),
                       coverage=coverage, queries=8, bytes_fetched=123)


# --- strategies --------------------------------------------------------------------------------

# Grain values collide on purpose: "" and "unknown" kinds, "" and NO_WORKLOAD names share a key.
grain_values = {
    "kube_cluster_name": st.sampled_from(["c1", "c2", ""]),
    "kube_namespace_name": st.sampled_from(["ns", "ns2"]),
    "kube_workload_type": st.sampled_from(["deployment", "", "unknown"]),
    "kube_workload_name": st.sampled_from(["api", "", NO_WORKLOAD]),
}
texts = st.one_of(st.sampled_from(["a", "b", "", "x\ny", "ü"]), st.text(max_size=6))
good_values = st.one_of(
    st.sampled_from(["0", "-0", "0.00", "1e-300", "1E+29", "1e30", "0.015625", " 1", "1_000", "١٢٣",
                     "123456789012345678901234567.891", "999999999999999999999999999999"]),
    st.decimals(min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False).map(str),
    st.floats(min_value=0, max_value=1e12).map(repr),
    st.integers(0, 10**30).map(str),
)
bad_values = st.sampled_from(["NaN", "sNaN", "+Inf", "-Inf", "-1", "1e31", "abc", "", "0x10",
                              "1E+999999999", "-1e-300"])


@st.composite
def grain_labels(draw: st.DrawFn) -> dict[str, str]:
    labels = {n: draw(s) for n, s in grain_values.items() if draw(st.integers(0, 9))}
    labels.update(draw(st.dictionaries(st.sampled_from(COLUMNS), texts, max_size=3)))
    return labels


@st.composite
def plain_series(draw: st.DrawFn, values: st.SearchStrategy[str] = good_values) -> dict[str, Any]:
    """The shape of every real answer's series: one point at the evaluation instant."""
    ts = draw(st.sampled_from([AT, int(AT)]))
    return {"metric": draw(grain_labels()), "values": [[ts, draw(values)]]}


@st.composite
def odd_series(draw: st.DrawFn) -> Any:
    """Anything else an answer may hold, well- or ill-formed."""
    labels: Any = draw(st.one_of(
        grain_labels(),
        st.dictionaries(st.one_of(texts, st.integers()), st.one_of(texts, st.integers(), st.none()),
                        max_size=3),
        st.none(), st.lists(texts, max_size=2)))
    ts = draw(st.sampled_from([AT, int(AT), AT - STEP, AT + 0.0005, AT + 1.0, AT + 5.0, True, None,
                               "now", float("nan"), 10**400]))
    value = draw(st.one_of(good_values, bad_values, st.integers(), st.none()))
    point: Any = draw(st.sampled_from(["list", "tuple", "short", "long"]))
    point = {"list": [ts, value], "tuple": (ts, value), "short": [ts], "long": [ts, value, 1]}[point]
    points = draw(st.sampled_from(["one", "two", "none", "value", "str"]))
    item: dict[str, Any] = {"metric": labels}
    if points == "one":
        item["values"] = [point]
    elif points == "two":
        item["values"] = [[AT - STEP, "7"], point]
    elif points == "value":
        item["value"] = point
    elif points == "str":
        item["values"] = "nope"
    return draw(st.sampled_from([item, item, item, None, 3, "s", [1, 2]]))


answers = st.lists(st.one_of(plain_series(), plain_series(bad_values), odd_series()), max_size=6)


def outcome(fn: Callable[[], Sequence[Any]]) -> str:
    """What a parse gives, as text: every (labels, value) by repr, or the exception and message."""
    try:
        got = fn()
    except Exception as exc:  # any difference in what escapes counts
        return f"{type(exc).__name__}: {exc}"
    return repr([(s.labels, s.value) if isinstance(s, Series) else s for s in got])


# --- properties --------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(answers)
def test_parse_series_gives_what_the_series_by_series_parse_gives(result: list[Any]) -> None:
    assert outcome(lambda: parse_series(result, AT, "Sysdig (q)")) == outcome(
        lambda: _ref_parse_series(result, AT, "Sysdig (q)"))


@settings(max_examples=300, deadline=None)
@given(answers)
def test_decoded_json_answers_parse_the_same_without_the_name_check(result: list[Any]) -> None:
    """What `SysdigSource` parses comes from `json.loads`, whose object keys are always str."""
    decoded = json.loads(json.dumps(result))
    assert outcome(lambda: _series_values(decoded, AT, "Sysdig (q)", from_json=True)) == outcome(
        lambda: _ref_parse_series(decoded, AT, "Sysdig (q)"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(plain_series(), plain_series(), plain_series(bad_values), odd_series()),
                max_size=5))
def test_what_the_fast_path_accepts_the_checks_accept_identically(result: list[Any]) -> None:
    fast = _common_values(result, AT)
    if fast is not None:
        assert repr(fast) == repr(_checked_values(result, AT, "q"))


@settings(max_examples=100, deadline=None)
@given(st.lists(plain_series(), min_size=1, max_size=6))
def test_plain_answers_take_the_fast_path(result: list[Any]) -> None:
    assert _common_values(result, AT) is not None


@pytest.mark.parametrize("item", [
    {"metric": {1: "x"}, "values": [[AT, "1"]]},
    {"metric": {"a": 1}, "values": [[AT, "1"]]},
    {"metric": {"a": "x"}, "values": [[True, "1"]]},
    {"metric": {"a": "x"}, "values": [[AT + 0.0005, "1"]]},
    {"metric": {"a": "x"}, "values": [(AT, "1")]},
    {"metric": {"a": "x"}, "value": [AT, "1"]},
    {"metric": {"a": "x"}, "values": [[AT, "NaN"]]},
    {"metric": {"a": "x"}, "values": [[AT, "1e31"]]},
])
def test_anything_unusual_takes_the_checked_path(item: dict[str, Any]) -> None:
    assert _common_values([{"metric": {"a": "y"}, "values": [[AT, "2"]]}, item], AT) is None


answer_sets = st.fixed_dictionaries({
    **{slot: st.lists(plain_series(), max_size=6) for slot in SLOTS},
    "labels": st.lists(plain_series(st.sampled_from(["60", "60", "120", "0.5"])), max_size=6),
    "coverage": st.lists(st.builds(
        lambda c, v: {"metric": {"kube_cluster_name": c} if c else {}, "values": [[AT, v]]},
        st.sampled_from(["c1", "c2", "c3", ""]), st.sampled_from(["60", "30", "7", "59.5"])),
        max_size=3),
})


@settings(max_examples=120, deadline=None)
@given(answer_sets, st.integers(3, 40), st.lists(st.sampled_from(["c1", "c3", "c4"]), max_size=2))
def test_assemble_gives_what_the_series_objects_gave(
        bodies: dict[str, list[dict[str, Any]]], precision: int, clusters: list[str]) -> None:
    source = SysdigSource(cast(Any, None), clock=FakeClock(0), label_columns=COLUMNS,
                          clusters=clusters)
    with localcontext() as ctx:
        ctx.prec = precision
        parsed = {k: _series_values(v, AT, k) for k, v in bodies.items()}
        try:
            old = _ref_assemble({k: _ref_parse_series(v, AT, k) for k, v in bodies.items()},
                                clusters)
        except Inexact:
            with pytest.raises(SourceQueryError, match="do not add up exactly"):
                source._assemble(PERIOD, STEP, parsed, 8, 123)
            return
        new = source._assemble(PERIOD, STEP, parsed, 8, 123)
    assert repr(new) == repr(old)


def test_duplicate_series_add_up_exactly() -> None:
    """Two series of one workload in one answer add up exactly (the default context would
    round this sum to 28 digits)."""
    labels = dict.fromkeys(RECORD_GRAIN, "w")
    long = "123456789012345678901234567.891"
    bodies: dict[str, list[dict[str, Any]]] = {slot: [] for slot in (*SLOTS, "labels", "coverage")}
    bodies["cpu.usage"] = [{"metric": labels, "values": [[AT, long]]},
                           {"metric": {**labels, "app": "x"}, "values": [[AT, "0.001"]]}]
    source = SysdigSource(cast(Any, None), clock=FakeClock(0), label_columns=COLUMNS)
    got = source._assemble(PERIOD, STEP, {k: _checked_values(v, AT, k) for k, v in bodies.items()},
                           8, 123)
    (workload,) = got.workloads
    assert workload.sums["cpu"].usage == Decimal("123456789012345678901234567.892")
    assert str(workload.sums["cpu"].usage) == "123456789012345678901234567.892"


def test_series_that_cannot_add_up_exactly_refuse_the_period() -> None:
    labels = dict.fromkeys(RECORD_GRAIN, "w")
    bodies: dict[str, list[dict[str, Any]]] = {slot: [] for slot in (*SLOTS, "labels", "coverage")}
    bodies["memory.request"] = [{"metric": labels, "values": [[AT, "1e29"]]},
                                {"metric": {**labels, "app": "x"}, "values": [[AT, "1e-200"]]}]
    source = SysdigSource(cast(Any, None), clock=FakeClock(0), label_columns=COLUMNS)
    with pytest.raises(SourceQueryError, match=r"memory.request.*do not add up exactly"):
        source._assemble(PERIOD, STEP, {k: _checked_values(v, AT, k) for k, v in bodies.items()},
                         8, 123)
