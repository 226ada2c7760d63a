"""Cluster groups sized to Sysdig's service limits (`exporter.limits`)."""

from __future__ import annotations

import pytest

from exporter.limits import (
    Limits,
    check_metrics,
    fits,
    group_clusters,
    halves,
    regroup,
    selectors,
)
from exporter.queries import plan

HOUR = 3600


def test_groups_are_contiguous_runs_of_sorted_clusters_within_the_series_budget() -> None:
    limits = Limits(segments=1000, margin=0.2, group_series=800)  # 800 series per group
    counts = {"c": 300, "a": 500, "b": 200, "d": 900, "e": 100}
    groups = group_clusters(counts, limits=limits, period_seconds=HOUR, scans=1)
    assert groups == [("a", "b"), ("c",), ("d",), ("e",)]
    for group in groups:
        assert len(group) == 1 or sum(counts[c] for c in group) <= 800


def test_a_cluster_over_the_budget_alone_is_a_group_of_its_own() -> None:
    limits = Limits(segments=100, margin=0.5, group_series=50)
    groups = group_clusters({"big": 10_000, "small": 1}, limits=limits, period_seconds=HOUR, scans=1)
    assert groups == [("big",), ("small",)]


def test_the_samples_budget_is_shared_by_the_queries_in_flight() -> None:
    # 360 samples per series per hour, 4 selectors: 1440 samples per series and query.
    limits = Limits(samples_per_minute=1_440_000, margin=0.5, concurrency=2)  # 360,000 per query
    groups = group_clusters({"a": 200, "b": 150, "c": 100}, limits=limits, period_seconds=HOUR,
                            scans=4)
    assert groups == [("a",), ("b", "c")]  # 250 series at most: 360,000 / 1,440


def test_the_clusters_per_group_stay_below_the_unaggregated_series_limit() -> None:
    limits = Limits(raw_series=10, margin=0.5)  # coverage answers one series per cluster
    counts = {f"c{i:02}": 1 for i in range(12)}
    groups = group_clusters(counts, limits=limits, period_seconds=HOUR, scans=1)
    assert [len(g) for g in groups] == [5, 5, 2]


def test_no_clusters_no_groups_and_halves_split_in_order() -> None:
    assert group_clusters({}, limits=Limits(), period_seconds=HOUR, scans=4) == []
    assert halves(("a", "b", "c")) == (("a",), ("b", "c"))


def test_every_query_of_the_plan_names_few_metrics_and_counts_its_selectors() -> None:
    for grain in ("pod", "container"):
        for name, query in plan(HOUR, 10, grain, ("a", "b")).all():
            check_metrics(name, query, Limits())
            assert 1 <= len(selectors(query)) <= 6, (grain, name)
    with pytest.raises(ValueError, match="3 metrics, more than Sysdig's limit of 2"):
        check_metrics("q", 'a{x="1"} + b{x="1"} + c{x="1"}', Limits(metrics=2))


def _regroup(planned: list[tuple[str, ...]], counts: dict[str, int], limits: Limits,
             ) -> list[tuple[str, ...]]:
    return regroup(planned, counts, limits=limits, period_seconds=HOUR, scans=1)


def test_planned_groups_that_still_fit_are_kept_and_new_clusters_get_groups_of_their_own() -> None:
    limits = Limits(segments=1000, margin=0.2, group_series=800)
    planned = group_clusters({"a": 300, "c": 400, "e": 700}, limits=limits, period_seconds=HOUR,
                             scans=1)
    assert planned == [("a", "c"), ("e",)]
    # "b" and "f" are new; "a" and "c" still fit together (750 series), "e" grew but is alone.
    counts = {"a": 350, "b": 10, "c": 400, "e": 5_000, "f": 20}
    groups = _regroup(planned, counts, limits)
    assert groups == [("a", "c"), ("b", "f"), ("e",)]  # by first cluster
    flat = sorted(c for g in groups for c in g)
    assert flat == sorted(counts)  # every counted cluster in exactly one group


def test_a_planned_group_that_grew_past_a_budget_is_regrouped_from_this_periods_counts() -> None:
    limits = Limits(segments=1000, margin=0.2, group_series=800)
    planned = [("a", "b", "c")]
    counts = {"a": 500, "b": 200, "c": 300}  # 1,000 series now, over the 800 of a group
    assert not fits(planned[0], counts, limits=limits, period_seconds=HOUR, scans=1)
    groups = _regroup(planned, counts, limits)
    assert groups == [("a", "b"), ("c",)]
    assert all(fits(g, counts, limits=limits, period_seconds=HOUR, scans=1) for g in groups)
    # The samples budget counts too: 4 selectors at 360 samples per series and hour.
    scans = Limits(samples_per_minute=1_440_000, margin=0.5, concurrency=2)
    assert fits(("a", "b"), {"a": 100, "b": 150}, limits=scans, period_seconds=HOUR, scans=4)
    assert not fits(("a", "b"), {"a": 100, "b": 151}, limits=scans, period_seconds=HOUR, scans=4)


def test_groups_whose_clusters_all_vanished_are_dropped_and_no_plan_is_a_fresh_grouping() -> None:
    limits = Limits(segments=1000, margin=0.2, group_series=800)
    assert _regroup([("a",), ("b", "c")], {"c": 10, "d": 10}, limits) == [("b", "c"), ("d",)]
    assert _regroup([("a",)], {}, limits) == []
    counts = {"x": 700, "y": 200, "z": 1}
    assert _regroup([], counts, limits) == group_clusters(counts, limits=limits,
                                                          period_seconds=HOUR, scans=1)
