"""Memoisation by value: equal label maps give the same objects, the memo is bounded, and the
conversion never leaves a negative zero."""

from __future__ import annotations

from decimal import Decimal

import pytest

import exporter.org as org_module
from exporter.config import load_config
from exporter.model import UNALLOCATED, Resource
from exporter.org import OrgModel
from exporter.units import to_unit_hours


def test_equal_labels_give_the_same_assignment_object() -> None:
    model = OrgModel(load_config(environ={}, overrides={"org": {"other_labels": ["env"]}}).org)
    labels = {"kube_namespace_label_team": "t1", "kube_deployment_label_env": "prod", "x": "y"}
    first = model.resolve("deployment", labels)
    # a different map with the same values of the columns read, and an unrelated label changed
    again = model.resolve("deployment", {**labels, "x": "z"})
    assert again is first and first.values["team"] == "t1"
    assert model.other_labels(dict(labels)) is model.other_labels({**labels, "x": "z"})
    assert model.other_labels(labels) == {"env": "prod"}
    # a value that matters, or a kind reading other columns, is resolved afresh
    other = model.resolve("deployment", {**labels, "kube_namespace_label_team": "t2"})
    assert other is not first and other.values["team"] == "t2"
    assert model.resolve("job", {"kube_deployment_label_team": "t3"}).values["team"] == UNALLOCATED
    assert model.resolve("pod", {"kube_deployment_label_team": "t3"}).values["team"] == "t3"


def test_memo_is_bounded_and_answers_stay_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(org_module, "_MEMO_LIMIT", 2)
    config = load_config(environ={}, overrides={"org": {"other_labels": ["env"]}}).org
    model = OrgModel(config)
    maps = [{"kube_job_label_team": f"t{i}", "kube_job_label_env": f"e{i}"} for i in range(5)]
    first = model.resolve("job", maps[0])
    first_other = model.other_labels(maps[0])
    for labels in maps[1:]:
        assert model.resolve("job", labels).values["team"] == labels["kube_job_label_team"]
        assert model.other_labels(labels) == {"env": labels["kube_job_label_env"]}
    # past the limit the memo started over: an equal, new object
    again = model.resolve("job", maps[0])
    assert again is not first and again == first
    other_again = model.other_labels(maps[0])
    assert other_again is not first_other and other_again == first_other


def test_negative_zero_becomes_zero() -> None:
    # Division keeps the sign of a zero; the conversion must not (records carry plain 0).
    cases: list[tuple[Decimal, Resource]] = [(Decimal("-0"), "memory"), (Decimal("-0E-3"), "cpu")]
    for value, resource in cases:
        got = to_unit_hours(value, resource, 10)
        assert got == 0 and not got.is_signed()
    assert str(to_unit_hours(Decimal("-0E-3"), "cpu", 10)) == "0.000"  # exponent kept
