"""An empty or partial Sysdig never yields a final period.

Sysdig answers `success` with no series when a metric is renamed, an agent stops or a token's
team sees nothing, and with fewer series when one cluster's agent or kube-state-metrics is gone.
The worker holds such periods, names the reason in one log line and a metric, and publishes a
manifest for every expected cluster once the data is there.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from chargeback_simulator.allocations import CAPACITY
from chargeback_simulator.fleet import REQUESTS
from chargeback_simulator.localbroker import LocalBroker
from exporter.errors import IncompleteDataError
from exporter.periods import Period
from exporter.shards import shard_of
from exporter.wiring import build_codec
from tests.rigs.harness import check_ledger, read_committed
from tests.system.conftest import PERIOD, Sim, worker_for

NEXT = Period(PERIOD.end, PERIOD.end + 3600)


def clusters_of(sim: Sim) -> list[str]:
    return sorted({w.key.cluster for w in sim.fleet.workloads()})


def test_an_always_empty_sysdig_holds_the_first_period(sim: Sim, noida: LocalBroker,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    sim.hiding.hide_all()
    worker, cfg, metrics = worker_for(sim, noida)
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.worker"):
            out = worker.export_due()
    finally:
        worker.close()
    assert out.exported == () and out.held == PERIOD
    assert isinstance(out.error, IncompleteDataError)
    assert "no series at all" in str(out.error) and "\n" not in str(out.error)
    assert read_committed(cfg, cfg.kafka.topics.checkpoint) == []
    assert metrics.registry.get_sample_value("chargeback_period_held", {"reason": "incomplete"}) == 1
    assert metrics.registry.get_sample_value("chargeback_held_period_age_seconds") == (
        sim.clock.time() - PERIOD.end)
    held = [r for r in caplog.records if r.getMessage() == "period held for retry"]
    assert held and "no series at all" in held[0].__dict__["error"]


def test_empty_periods_are_published_only_when_the_user_opts_in(sim: Sim,
                                                                noida: LocalBroker) -> None:
    sim.hiding.hide_all()
    worker, cfg, _ = worker_for(sim, noida, periods={"publish_empty": True})
    try:
        out = worker.export_due()
    finally:
        worker.close()
    assert out.error is None and out.exported[0] == PERIOD
    assert read_committed(cfg, cfg.kafka.topics.records) == []


def lose_a_cluster_after_the_first_period(sim: Sim, noida: LocalBroker) -> tuple[str, str]:
    """Export PERIOD with every cluster, then hide one for NEXT; returns that cluster and the
    tag of the worker that exported PERIOD (a worker with it is that worker restarted)."""
    gone = clusters_of(sim)[0]
    tag = uuid.uuid4().hex[:8]
    sim.clock.advance(-3600)  # only PERIOD is closed
    worker, _, _ = worker_for(sim, noida, tag)
    try:
        assert worker.export_due().exported == (PERIOD,)
    finally:
        worker.close()
    sim.clock.advance(3600)
    sim.hiding.hide_clusters([gone])
    return gone, tag


def test_a_cluster_seen_before_and_missing_now_holds_until_it_returns_or_is_retired(
        sim: Sim, noida: LocalBroker, caplog: pytest.LogCaptureFixture) -> None:
    gone, tag = lose_a_cluster_after_the_first_period(sim, noida)
    # A restarted worker remembers the cluster through the checkpoint.
    worker, cfg, metrics = worker_for(sim, noida, tag)
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.worker"):
            out = worker.export_due()
        assert out.held == NEXT and isinstance(out.error, IncompleteDataError)
        assert f"cluster {gone}" in str(out.error) and "\n" not in str(out.error)
        assert "retired_clusters" in str(out.error)
        for what in ("usage", "requests"):
            assert metrics.registry.get_sample_value(
                "chargeback_cluster_missing", {"cluster": gone, "what": what}) == 1
        assert metrics.registry.get_sample_value("chargeback_expected_clusters") == 2
        sim.hiding.reset()  # its agent is back
        assert worker.export_due().exported == (NEXT,)
        assert metrics.registry.get_sample_value(
            "chargeback_cluster_missing", {"cluster": gone, "what": "usage"}) == 0
        assert metrics.registry.get_sample_value("chargeback_period_held",
                                                 {"reason": "incomplete"}) == 0
    finally:
        worker.close()
    ledger = check_ledger(cfg, sim.fleet, PERIOD.start, NEXT.end)
    assert ledger.problems == [] and ledger.statuses == {"final": 4}


def test_retiring_a_cluster_releases_the_period(sim: Sim, noida: LocalBroker) -> None:
    gone, tag = lose_a_cluster_after_the_first_period(sim, noida)
    worker, cfg, _ = worker_for(sim, noida, tag, sysdig={"retired_clusters": [gone]})
    try:
        assert worker.export_due().exported == (NEXT,)
    finally:
        worker.close()
    codec = build_codec(cfg)
    manifests = [codec.decode_manifest(m.value) for m in read_committed(cfg, cfg.kafka.topics.manifests)]
    assert sorted(m.cluster for m in manifests if m.period == NEXT) == clusters_of(sim)[1:]


@pytest.mark.parametrize("policy", ["hold", "publish-flagged"])
def test_a_cluster_without_request_series_holds_whatever_the_coverage_policy(
        sim: Sim, noida: LocalBroker, policy: str) -> None:
    broken = clusters_of(sim)[1]
    sim.hiding.hide_metric(broken, REQUESTS)
    worker, cfg, metrics = worker_for(sim, noida, periods={"incomplete_policy": policy})
    try:
        out = worker.export_due()
    finally:
        worker.close()
    assert out.held == PERIOD and isinstance(out.error, IncompleteDataError)
    assert f"cluster {broken}" in str(out.error) and "no request series" in str(out.error)
    assert metrics.registry.get_sample_value(
        "chargeback_cluster_missing", {"cluster": broken, "what": "requests"}) == 1
    assert read_committed(cfg, cfg.kafka.topics.records) == []


def test_a_configured_cluster_with_no_series_gets_no_final_period(sim: Sim,
                                                                   noida: LocalBroker) -> None:
    worker, _, _ = worker_for(sim, noida, sysdig={"clusters": [*clusters_of(sim), "prod-new-99"]})
    try:
        out = worker.export_due()
    finally:
        worker.close()
    assert out.held == PERIOD and "cluster prod-new-99" in str(out.error)


def _report(sim: Sim, tmp_path: Any, *extra: str) -> tuple[int, str, str]:
    import contextlib
    import io

    import yaml

    from exporter import cli
    from exporter.periods import iso
    from tests.system.conftest import TOKEN

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "sysdig": {"url": sim.server.url, "token": TOKEN, "retention_tiers": False,
                   "max_attempts": 2},
        "logging": {"format": "text", "level": "ERROR"}}))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["report", "--config.file", str(config), "--from", iso(PERIOD.start),
                         "--to", iso(NEXT.end), *extra], sim.clock)
    return code, out.getvalue(), err.getvalue()


def test_a_report_over_an_empty_sysdig_is_an_error_not_zeros(sim: Sim, tmp_path: Any) -> None:
    """`report` applies the worker's rule: an answer with no series at all is never shown as a
    consumption of zero."""
    sim.hiding.hide_all()
    code, out, err = _report(sim, tmp_path, "--format", "json")
    assert code != 0 and out == ""
    [line] = err.strip().splitlines()
    assert "no series" in line and "Traceback" not in err
    sim.hiding.reset()
    code, out, err = _report(sim, tmp_path, "--format", "json")
    assert code == 0, err


def test_a_hash_shard_holds_its_own_vanished_cluster_and_ignores_the_others(
        sim: Sim, noida: LocalBroker, caplog: pytest.LogCaptureFixture) -> None:
    """A hash shard lists its clusters from Sysdig each period; one of them that vanishes is
    not listed, but the shard's checkpoint still expects it: held, never silently dropped."""
    mine, other = clusters_of(sim)
    shard = {"name": "h0", "index": 0, "count": 3}
    assert (shard_of(mine, 3), shard_of(other, 3)) == (0, 2)  # the fleet of SPEC
    tag = uuid.uuid4().hex[:8]
    sim.clock.advance(-3600)  # only PERIOD is closed
    worker, cfg, _ = worker_for(sim, noida, tag, shard=shard)
    try:
        assert worker.export_due().exported == (PERIOD,)
    finally:
        worker.close()
    codec = build_codec(cfg)
    records = [codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)]
    assert records and {r.cluster for r in records} == {mine}
    sim.clock.advance(3600)
    sim.hiding.hide_clusters([mine])
    worker, cfg, metrics = worker_for(sim, noida, tag, shard=shard)  # restarted
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.sysdig"):
            out = worker.export_due()
        assert out.held == NEXT and isinstance(out.error, IncompleteDataError)
        assert f"expected cluster(s) {mine}; held" in str(out.error)
        assert metrics.registry.get_sample_value(
            "chargeback_cluster_missing", {"cluster": mine, "what": "usage"}) == 1
        warned = [r for r in caplog.records if r.getMessage() == "no cluster of the shard in the period"]
        assert warned and warned[0].__dict__["clusters_seen"] == [other]
        sim.hiding.reset()
        assert worker.export_due().exported == (NEXT,)
    finally:
        worker.close()
    records = [codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)]
    assert {(r.cluster, r.period) for r in records} == {(mine, PERIOD), (mine, NEXT)}


def test_a_hash_shard_that_owns_no_cluster_publishes_nothing(sim: Sim, noida: LocalBroker) -> None:
    assert {shard_of(c, 3) for c in clusters_of(sim)} == {0, 2}
    worker, cfg, _ = worker_for(sim, noida, shard={"name": "h1", "index": 1, "count": 3})
    try:
        out = worker.export_due()
    finally:
        worker.close()
    assert out.held == PERIOD and "no series at all" in str(out.error)
    assert read_committed(cfg, cfg.kafka.topics.records) == []


def claims_vanish_after_the_first_period(sim: Sim, noida: LocalBroker) -> tuple[str, str]:
    """Export PERIOD with every claim, then hide one cluster's claim capacity series for NEXT
    (a renamed metric, as an agent upgrade on that cluster would leave); returns that cluster
    and the tag of the worker that exported PERIOD."""
    assert sim.fleet.allocations is not None
    cluster = sorted({c.cluster for c in sim.fleet.allocations.claims})[0]
    tag = uuid.uuid4().hex[:8]
    sim.clock.advance(-3600)  # only PERIOD is closed
    worker, cfg, _ = worker_for(sim, noida, tag)
    try:
        assert worker.export_due().exported == (PERIOD,)
    finally:
        worker.close()
    codec = build_codec(cfg)
    records = [codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)]
    assert any(r.cluster == cluster and r.resource.startswith("storage.") for r in records)
    sim.clock.advance(3600)
    sim.hiding.hide_metric(cluster, CAPACITY)
    return cluster, tag


def test_claims_billed_before_and_missing_now_hold_the_period_until_they_return(
        claims_sim: Sim, noida: LocalBroker) -> None:
    """Sysdig answers the claim query with success and no series for a cluster whose claims
    were billed the period before: storage billed as zero is never published."""
    cluster, tag = claims_vanish_after_the_first_period(claims_sim, noida)
    worker, cfg, metrics = worker_for(claims_sim, noida, tag)  # restarted: the checkpoint knows
    try:
        out = worker.export_due()
        assert out.held == NEXT and isinstance(out.error, IncompleteDataError)
        message = str(out.error)
        assert f"cluster {cluster}" in message and "claim" in message and "\n" not in message
        assert "resources.storage.clusters_without_claims" in message
        assert metrics.registry.get_sample_value(
            "chargeback_cluster_missing", {"cluster": cluster, "what": "claims"}) == 1
        codec = build_codec(cfg)
        records = [codec.decode_record(m.value)
                   for m in read_committed(cfg, cfg.kafka.topics.records)]
        assert {r.period for r in records} == {PERIOD}
        claims_sim.hiding.reset()  # the claims are back
        assert worker.export_due().exported == (NEXT,)
        assert metrics.registry.get_sample_value(
            "chargeback_cluster_missing", {"cluster": cluster, "what": "claims"}) == 0
    finally:
        worker.close()
    records = [codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)]
    assert any(r.period == NEXT and r.cluster == cluster and r.resource.startswith("storage.")
               for r in records)


def test_a_cluster_listed_without_claims_is_published_and_forgotten(
        claims_sim: Sim, noida: LocalBroker) -> None:
    cluster, tag = claims_vanish_after_the_first_period(claims_sim, noida)
    worker, cfg, _ = worker_for(claims_sim, noida, tag,
                                resources={"storage": {"clusters_without_claims": [cluster]}})
    try:
        assert worker.export_due().exported == (NEXT,)
    finally:
        worker.close()
    codec = build_codec(cfg)
    records = [codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)]
    assert not any(r.period == NEXT and r.cluster == cluster and r.resource.startswith("storage.")
                   for r in records)
    [checkpoint] = [codec.decode_checkpoint(m.value)
                    for m in read_committed(cfg, cfg.kafka.topics.checkpoint)][-1:]
    assert cluster not in checkpoint.claims and checkpoint.claims  # the other cluster's stay
