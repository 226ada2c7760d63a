"""Cluster groups sized to Sysdig's service limits (`exporter.limits`)."""

from __future__ import annotations

import pytest

from exporter.limits import Limits, check_metrics, group_clusters, halves, selectors
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
