from decimal import Decimal
from typing import Any, cast

import pytest

from exporter.clock import FakeClock
from exporter.errors import IncompleteDataError, SourceQueryError
from exporter.periods import Period
from exporter.queries import RECORD_GRAIN
from exporter.sysdig import SERIES_CAP, SysdigSource, parse_vector
from exporter.sysdig.answers import _result
from exporter.sysdig.source import _best_labels

AT = 1000.0
PERIOD = Period(1_767_225_600, 1_767_229_200)
SLOTS = ("cpu.usage", "cpu.request", "cpu.chargeable", "memory.usage", "memory.request",
         "memory.chargeable")


def series(value: str, **labels: str) -> dict[str, object]:
    return {"metric": labels, "value": [AT, value]}


def test_values_are_exact_decimals() -> None:
    got = parse_vector([series("0.1", a="x"), series("1e3", a="y")], AT, "q")
    assert [v for _, v in got] == [Decimal("0.1"), Decimal("1E+3")]
    assert [labels for labels, _ in got] == [{"a": "x"}, {"a": "y"}]


@pytest.mark.parametrize("bad", ["NaN", "+Inf", "-Inf", "-1", "abc", "1e31"])
def test_unusable_values_are_rejected(bad: str) -> None:
    with pytest.raises(SourceQueryError, match="q: "):
        parse_vector([series(bad, a="x")], AT, "q")


@pytest.mark.parametrize("item", [
    {"value": [AT, "1"]},
    {"metric": {"a": 1}, "value": [AT, "1"]},
    {"metric": {}, "value": [AT]},
    {"metric": {}, "value": ["x", "1"]},
    {"metric": {}, "value": [True, "1"]},
    {"metric": {}, "values": [[AT, "1"]]},
    {"metric": {}, "value": "nope"},
])
def test_malformed_series_are_rejected(item: dict[str, object]) -> None:
    with pytest.raises(SourceQueryError, match="malformed"):
        parse_vector([item], AT, "q")


def test_a_sample_stamped_at_another_instant_is_an_error_naming_both() -> None:
    # Before: such a point was skipped and the series read as absent (a silently empty bill).
    with pytest.raises(SourceQueryError) as err:
        parse_vector([{"metric": {}, "value": [960, "7"]}], AT, "q")
    assert "stamped at 960 (1970-01-01T00:16:00Z), asked for 1000 (1970-01-01T00:16:40Z)" in str(
        err.value)


def test_answer_envelope_checks() -> None:
    ok = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert _result(ok, "vector", "w") == []
    with pytest.raises(SourceQueryError, match="status"):
        _result({"status": "error"}, "vector", "w")
    with pytest.raises(SourceQueryError, match="resultType is not vector"):
        _result({"status": "success", "data": {"resultType": "matrix", "result": []}}, "vector",
                "w")


@pytest.mark.parametrize("warning", ["results truncated due to limit", "anything else at all"])
def test_any_warning_makes_the_answer_incomplete(warning: str) -> None:
    ok = {"status": "success", "data": {"resultType": "vector", "result": []}}
    with pytest.raises(IncompleteDataError, match="warning"):
        _result({**ok, "warnings": [warning]}, "vector", "w")


def test_an_answer_at_the_series_cap_is_incomplete() -> None:
    capped = {"status": "success", "data": {"resultType": "vector",
                                            "result": [{}] * SERIES_CAP}}
    with pytest.raises(IncompleteDataError, match="cap"):
        _result(capped, "vector", "w")


def test_label_combination_seen_longest_wins() -> None:
    base = {"kube_cluster_name": "c", "kube_namespace_name": "n", "kube_workload_type": "deployment",
            "kube_workload_name": "w"}
    cols = ["kube_deployment_label_team"]
    got = parse_vector([
        series("300", **base, kube_deployment_label_team="old"),
        series("60", **base, kube_deployment_label_team="new"),
    ], AT, "q")
    picked = _best_labels(got, cols)
    assert list(picked.values()) == [{"kube_deployment_label_team": "old"}]


def _answers(**slots: list[tuple[dict[str, str], Decimal]]
             ) -> dict[str, list[tuple[dict[str, str], Decimal]]]:
    out: dict[str, list[tuple[dict[str, str], Decimal]]] = {
        slot: [] for slot in (*SLOTS, "labels", "coverage", "requests.present")}
    out.update(slots)
    return out


def test_duplicate_series_add_up_exactly() -> None:
    """Two series of one workload add up exactly (the default context would round to 28
    digits)."""
    labels = dict.fromkeys(RECORD_GRAIN, "w")
    long = Decimal("123456789012345678901234567.891")
    source = SysdigSource(cast(Any, None), clock=FakeClock(0), label_columns=())
    got = source._assemble(PERIOD, 60, _answers(**{"cpu.usage": [
        (labels, long), ({**labels, "app": "x"}, Decimal("0.001"))]}), ("w",), 8, 123)
    (workload,) = got.workloads
    assert str(workload.sums["cpu"].usage) == "123456789012345678901234567.892"


def test_series_that_cannot_add_up_exactly_refuse_the_period() -> None:
    labels = dict.fromkeys(RECORD_GRAIN, "w")
    source = SysdigSource(cast(Any, None), clock=FakeClock(0), label_columns=())
    with pytest.raises(SourceQueryError, match=r"memory.request.*do not add up exactly"):
        source._assemble(PERIOD, 60, _answers(**{"memory.request": [
            (labels, Decimal("1e29")), ({**labels, "app": "x"}, Decimal("1e-200"))]}), ("w",), 8, 123)
