from decimal import Decimal

import pytest

from exporter.errors import SourceQueryError
from exporter.sysdig import _best_labels, _matrix, parse_series, step_for_age

AT = 1000.0


def series(value: str, **labels: str) -> dict[str, object]:
    return {"metric": labels, "values": [[AT, value]]}


def test_values_are_exact_decimals() -> None:
    got = parse_series([series("0.1", a="x"), series("1e3", a="y")], AT, "q")
    assert [s.value for s in got] == [Decimal("0.1"), Decimal("1E+3")]


@pytest.mark.parametrize("bad", ["NaN", "+Inf", "-Inf", "-1", "abc"])
def test_unusable_values_are_rejected(bad: str) -> None:
    with pytest.raises(SourceQueryError, match="q: "):
        parse_series([series(bad, a="x")], AT, "q")


@pytest.mark.parametrize("item", [
    {"values": [[AT, "1"]]},
    {"metric": {"a": 1}, "values": [[AT, "1"]]},
    {"metric": {}, "values": [[AT]]},
    {"metric": {}, "values": [["x", "1"]]},
    {"metric": {}, "values": "nope"},
])
def test_malformed_series_are_rejected(item: dict[str, object]) -> None:
    with pytest.raises(SourceQueryError, match="malformed"):
        parse_series([item], AT, "q")


def test_points_at_other_instants_are_ignored() -> None:
    got = parse_series([{"metric": {}, "values": [[AT - 10, "5"], [AT, "7"]]}], AT, "q")
    assert got[0].value == Decimal(7)


def test_matrix_envelope_checks() -> None:
    ok = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    assert _matrix(ok, "w") == []
    with pytest.raises(SourceQueryError, match="status"):
        _matrix({"status": "error"}, "w")
    with pytest.raises(SourceQueryError, match="resultType"):
        _matrix({"status": "success", "data": {"resultType": "string"}}, "w")
    with pytest.raises(SourceQueryError, match="truncated"):
        _matrix({**ok, "warnings": ["results truncated due to limit"]}, "w")


def test_label_combination_seen_longest_wins() -> None:
    base = {"kube_cluster_name": "c", "kube_namespace_name": "n", "kube_workload_type": "deployment",
            "kube_workload_name": "w"}
    cols = ["kube_deployment_label_team"]
    got = parse_series([
        series("300", **base, kube_deployment_label_team="old"),
        series("60", **base, kube_deployment_label_team="new"),
    ], AT, "q")
    picked = _best_labels([(s.labels, s.value) for s in got], cols)
    assert list(picked.values()) == [{"kube_deployment_label_team": "old"}]


@pytest.mark.parametrize(("age", "step"), [(0, 10), (6 * 3600, 10), (6 * 3600 + 1, 60),
                                           (3 * 86400, 600), (20 * 86400, 3600), (200 * 86400, 86400)])
def test_retention_tiers(age: int, step: int) -> None:
    assert step_for_age(age, 10) == step
