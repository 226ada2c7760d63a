"""Backfill over a real broker and the Sysdig simulator: skips, corrections, resumption, dry run."""

from __future__ import annotations

import os
import signal
from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from chargeback_simulator.allocations import CAPACITY, GPU_RESOURCES, GPU_UTIL
from exporter.backfill.state import BackfillCheckpoint, read_backfill_checkpoint, resolve_ids
from exporter.consumer import latest_records
from exporter.periods import iso
from exporter.pricing import QUANTITY_SCALE
from exporter.records import BillingRecord
from exporter.sink import Batch, PeriodSink
from exporter.wiring import build_checkpoints, build_codec, build_pipeline, build_sink
from tests.rigs.backfill import T0, H, Rig, hours

FIXED = ("staging-eu-central-02", "analytics-3")  # a namespace whose costcenter gets corrected
QUANTUM = Decimal(1).scaleb(-QUANTITY_SCALE)  # one unit of the records' quantity scale
RANGE = ("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H))


def latest(records: list[tuple[BillingRecord, bytes]]) -> dict[str, BillingRecord]:
    """The consumer rule (`exporter.consumer.latest_records`) over the rig's (record, bytes)."""
    return latest_records(r for r, _ in records)


def totals_by_costcenter(records: list[BillingRecord]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for r in records:
        out[(r.costcenter, r.resource)] += r.chargeable_quantity
    return dict(out)


def test_unchanged_range_publishes_nothing_and_force_republishes_identical_bytes(rig: Rig) -> None:
    rig.live_export(hours(3, 6))
    live = rig.records()
    live_manifests = [m.value for m in rig.messages(rig.cfg.kafka.topics.manifests)]
    before = rig.end_offsets()

    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    rep = res.report
    assert (rep["periods"], rep["skipped"], rep["changed"], rep["records"]) == (3, 3, 0, 0)
    changes = [c for d in rep["details"] for c in d["clusters"]]
    assert len(changes) == 6  # 3 periods x 2 clusters
    assert {(c["change"], c["revision_before"], c["revision"], c["published"]) for c in changes} == {
        ("unchanged", 0, 0, False)}
    assert rig.end_offsets() == before, "no --force: nothing at all is written"

    res = rig.backfill(*RANGE, "--force")
    assert res.code == 0, res.err
    assert (res.report["forced"], res.report["records"]) == (3, len(live))
    values: dict[str, list[bytes]] = defaultdict(list)
    for r, raw in rig.records():
        values[r.record_id].append(raw)
    assert set(values) == {r.record_id for r, _ in live}
    assert all(len(v) == 2 and v[0] == v[1] for v in values.values()), "payloads byte-identical"
    manifests = [m.value for m in rig.messages(rig.cfg.kafka.topics.manifests)]
    assert Counter(manifests) == Counter({v: 2 for v in live_manifests})
    # The live checkpoint is the worker's alone.
    assert build_checkpoints(rig.cfg, rig.clock).read().last_period_end == T0 + 6 * H


def test_corrected_labels_republish_changed_clusters_with_revision_1(rig: Rig) -> None:
    rig.live_export(hours(3, 6))
    live = rig.records()
    rig.sim.storage.relabel[FIXED] = {"costcenter": "CC-FIXED"}

    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    rep = res.report
    assert (rep["periods"], rep["changed"], rep["skipped"], rep["failed"]) == (3, 3, 0, 0)
    for d in rep["details"]:
        by_cluster = {c["cluster"]: c for c in d["clusters"]}
        assert by_cluster[FIXED[0]] | {"records": 0} == {
            "cluster": FIXED[0], "change": "changed", "revision_before": 0, "revision": 1,
            "records": 0, "published": True}
        assert by_cluster["prod-us-east-01"]["change"] == "unchanged"
        assert not by_cluster["prod-us-east-01"]["published"]

    records = rig.records()
    corrections = [r for r, _ in records if r.revision == 1]
    assert len(corrections) == len(records) - len(live) == rep["records"] > 0
    assert {r.cluster for r in corrections} == {FIXED[0]}
    assert {r.revision for r in corrections} == {1}
    assert {r.period for r in corrections} == set(hours(3, 6))
    live_ids = {r.record_id for r, _ in live}
    assert {r.record_id for r in corrections} <= live_ids, "corrections replace, by record_id"
    revs = Counter((m.period, m.cluster, m.revision) for m in rig.manifests())
    for p in hours(3, 6):
        assert revs[(p, FIXED[0], 0)] == revs[(p, FIXED[0], 1)] == 1
        assert revs[(p, "prod-us-east-01", 0)] == 1 and revs[(p, "prod-us-east-01", 1)] == 0

    # A consumer keeping the highest revision per record_id sees the corrected data exactly.
    seen = latest(records)
    pipeline = build_pipeline(rig.cfg, rig.clock)
    expected = [r for p in hours(3, 6) for r in pipeline.compute(p).records]
    assert totals_by_costcenter(list(seen.values())) == totals_by_costcenter(expected)
    assert any(r.costcenter == "CC-FIXED" for r in seen.values())
    assert not any(r.costcenter == "CC-FIXED" for r, _ in live)

    # Once corrected, the same range is unchanged.
    again = rig.backfill(*RANGE)
    assert again.code == 0 and again.report["skipped"] == 3 and again.report["records"] == 0


class Crash(BaseException):
    """The process dies (as under SIGKILL): nothing runs after it, not even an abort."""


class CrashingSink:
    """The real Kafka sink, killed in the middle of its `n`-th transaction."""

    def __init__(self, inner: PeriodSink, n: int) -> None:
        self.inner = inner
        self.n = n
        self.calls = 0
        self.dead = False

    def start(self) -> None:
        self.inner.start()

    def publish(self, batch: Batch) -> None:
        self.calls += 1
        if self.calls == self.n:
            messages = list(batch.messages())
            producer = self.inner._producer  # type: ignore[attr-defined]
            producer.begin_transaction()
            for m in messages[: len(messages) // 2]:
                producer.produce(m.topic, m.value, m.key)
            producer.flush(10)
            self.dead = True
            raise Crash
        self.inner.publish(batch)

    def close(self) -> None:
        if not self.dead:
            self.inner.close()


def test_interrupted_backfill_resumes_after_its_checkpoint(rig: Rig) -> None:
    periods = hours(1, 6)
    rig.live_export(periods)
    rig.sim.storage.relabel[FIXED] = {"costcenter": "CC-FIXED"}
    span = ("--from", iso(T0 + H), "--to", iso(T0 + 6 * H))

    def crash_on_third(cfg, clock, instance):  # type: ignore[no-untyped-def]
        return CrashingSink(build_sink(cfg, clock, transactional_id=instance), 3)

    with pytest.raises(Crash):
        rig.backfill(*span, sink_factory=crash_on_third)
    _, instance = resolve_ids(rig.cfg)
    mine = read_backfill_checkpoint(rig.cfg, build_codec(rig.cfg), rig.clock, instance)
    assert mine == BackfillCheckpoint(T0 + 3 * H, T0 + H, T0 + 6 * H)

    res = rig.backfill(*span)
    assert res.code == 0, res.err
    assert res.report["resumed_from"] == iso(T0 + 3 * H)
    assert [d["period_start"] for d in res.report["details"]] == [iso(p.start) for p in hours(3, 6)]

    records = rig.records()
    assert set(Counter((r.record_id, r.revision) for r, _ in records).values()) == {1}, \
        "each record exactly once per revision; the dead transaction is invisible"
    corrected = {r.period for r, _ in records if r.revision == 1}
    assert corrected == set(periods), "no gap"
    manifests = Counter((m.period, m.cluster, m.revision) for m in rig.manifests())
    assert all(manifests[(p, FIXED[0], 1)] == 1 for p in periods)
    assert set(manifests.values()) == {1}
    done = read_backfill_checkpoint(rig.cfg, build_codec(rig.cfg), rig.clock, instance)
    assert done is not None and done.end == T0 + 6 * H
    live = build_checkpoints(rig.cfg, rig.clock).read()
    assert live is not None and live.last_period_end == T0 + 6 * H, "live checkpoint untouched"


def test_a_completed_range_starts_afresh_when_run_again(rig: Rig) -> None:
    rig.live_export(hours(3, 6))
    rig.sim.storage.relabel[FIXED] = {"costcenter": "CC-FIXED"}
    assert rig.backfill(*RANGE).code == 0
    rig.sim.storage.relabel[FIXED] = {"costcenter": "CC-FIXED-AGAIN"}
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    assert res.report["resumed_from"] is None and res.report["changed"] == 3
    revisions = {c["revision"] for d in res.report["details"] for c in d["clusters"] if c["published"]}
    assert revisions == {2}


def test_dry_run_publishes_nothing_and_shows_what_would_change(rig: Rig) -> None:
    rig.live_export(hours(3, 6))
    rig.sim.storage.relabel[FIXED] = {"costcenter": "CC-FIXED"}
    before = rig.end_offsets()

    def no_producer(cfg, clock, instance):  # type: ignore[no-untyped-def]
        raise AssertionError("a dry run must not start a producer")

    res = rig.backfill(*RANGE, "--dry-run", sink_factory=no_producer)
    assert res.code == 0, res.err
    rep = res.report
    assert rep["dry_run"] is True and rep["changed"] == 3 and rep["records"] > 0
    per_cluster = {(d["period_start"], c["cluster"]): (c["change"], c["revision_before"], c["revision"])
                   for d in rep["details"] for c in d["clusters"]}
    for p in hours(3, 6):
        assert per_cluster[(iso(p.start), FIXED[0])] == ("changed", 0, 1)
        assert per_cluster[(iso(p.start), "prod-us-east-01")] == ("unchanged", 0, 0)

    table = rig.backfill(*RANGE, "--dry-run", sink_factory=no_producer, fmt="table")
    assert table.code == 0
    assert "nothing published" in table.out and "0 → 1" in table.out and "changed" in table.out
    assert rig.end_offsets() == before


class SignallingSink:
    """The real sink; right after its first commit the process receives SIGTERM."""

    def __init__(self, inner: PeriodSink) -> None:
        self.inner = inner
        self.sent = False

    def start(self) -> None:
        self.inner.start()

    def publish(self, batch: Batch) -> None:
        self.inner.publish(batch)
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def close(self) -> None:
        self.inner.close()


def test_sigterm_stops_after_the_period_in_flight_and_the_rerun_resumes(rig: Rig) -> None:
    rig.live_export(hours(3, 6))
    rig.sim.storage.relabel[FIXED] = {"costcenter": "CC-FIXED"}
    previous = signal.getsignal(signal.SIGTERM)

    def factory(cfg, clock, instance):  # type: ignore[no-untyped-def]
        return SignallingSink(build_sink(cfg, clock, transactional_id=instance))

    res = rig.backfill(*RANGE, sink_factory=factory)
    assert signal.getsignal(signal.SIGTERM) is previous, "handlers restored"
    assert res.code == 3
    assert res.report["changed"] == 1 and res.report["not_reached"] == 2
    assert "stopped after 1 of 3 periods" in res.error_lines[-1]
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    assert res.report["resumed_from"] == iso(T0 + 4 * H) and res.report["changed"] == 2
    assert set(Counter((r.record_id, r.revision) for r, _ in rig.records()).values()) == {1}


def test_a_cluster_without_data_now_is_reported_missing_and_left_alone(rig: Rig) -> None:
    rig.live_export(hours(5, 6))
    rig.sim.storage.hidden.add(FIXED[0])
    res = rig.backfill("--from", iso(T0 + 5 * H), "--to", iso(T0 + 6 * H))
    assert res.code == 0, res.err
    [period] = res.report["details"]
    assert {c["cluster"]: (c["change"], c["revision"], c["published"]) for c in period["clusters"]} == {
        FIXED[0]: ("missing", 0, False), "prod-us-east-01": ("unchanged", 0, False)}
    assert res.report["skipped"] == 1 and res.report["records"] == 0


def test_summary_totals_equal_the_published_records(rig: Rig, tmp_path: Path) -> None:
    card = tmp_path / "rate-card.yaml"
    card.write_text(
        "currency: EUR\nversions:\n  - effective_from: 2026-01-01T00:00:00Z\n"
        "    default: {cpu: \"0.0310\", memory: \"0.0042\"}\n", encoding="utf-8")
    rig.configure(pricing={"rate_card_file": str(card)})
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    records = [r for r, _ in rig.records()]
    assert len(records) == res.report["records"] > 0
    cpu = sum((r.chargeable_quantity for r in records if r.resource == "cpu"), Decimal(0))
    mem = sum((r.chargeable_quantity for r in records if r.resource == "memory"), Decimal(0))
    cost = sum((r.cost for r in records if r.cost is not None), Decimal(0))
    assert (Decimal(res.report["core_hours"]), Decimal(res.report["gib_hours"])) == (cpu, mem)
    assert res.report["cost"] == {"EUR": str(cost)} and cost > 0

    table = rig.backfill(*RANGE, "--dry-run", "--force", fmt="table")  # would republish it all
    assert table.code == 0
    assert "cost (EUR)" in table.out and f"{cost}" in table.out and f"{cpu}" in table.out


def test_changed_gpu_and_claim_data_republish_exactly_the_changed_cluster(
        rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(allocations=True)
    rig.configure(resources={"gpu": {"resources": dict(GPU_RESOURCES)}})
    rig.live_export(hours(3, 6))
    live = latest(rig.records())
    clusters = sorted({r.cluster for r in live.values()})
    assert len(clusters) == 2
    resized, busier = clusters

    def backfill_changes() -> dict[tuple[int, str], tuple[str, int]]:
        res = rig.backfill(*RANGE)
        assert res.code == 0, res.err
        return {(d_period, c["cluster"]): (c["change"], c["revision"])
                for d_period, d in enumerate(res.report["details"]) for c in d["clusters"]}

    # A claim resized (twice the capacity) in one cluster: only that cluster is corrected.
    rig.sim.storage.scale[(resized, CAPACITY)] = 2.0
    changes = backfill_changes()
    assert {k: v for k, v in changes.items() if k[1] == resized} == {
        (i, resized): ("changed", 1) for i in range(3)}
    assert {v for k, v in changes.items() if k[1] == busier} == {("unchanged", 0)}
    now = latest(rig.records())
    fixed = [r for r in now.values() if r.revision == 1]
    assert fixed and {r.cluster for r in fixed} == {resized}
    for r in fixed:
        before = live[r.record_id]
        if r.resource.startswith("storage."):
            # twice the capacity, at the records' scale: each claim's parts are rounded (to
            # add up to its whole), so a part may move by up to 3 units of that scale
            assert abs(r.chargeable_quantity - 2 * before.chargeable_quantity) <= 3 * QUANTUM
            assert r.chargeable_quantity > before.chargeable_quantity, r.record_id
        else:  # the cluster's other lines are republished unchanged, with the bump
            assert r.chargeable_quantity == before.chargeable_quantity, r.record_id
    assert any(r.resource.startswith("storage.") for r in fixed)

    # GPU utilisation changes (information only): the other cluster's GPU records change
    # their usage, never their charge, and only that cluster is bumped.
    rig.sim.storage.scale[(busier, GPU_UTIL)] = 0.5
    changes = backfill_changes()
    assert {v for k, v in changes.items() if k[1] == busier} == {("changed", 1)}
    assert {v for k, v in changes.items() if k[1] == resized} == {("unchanged", 1)}
    after = latest(rig.records())
    gpus = [r for r in after.values() if r.cluster == busier and r.resource.startswith("gpu")]
    assert gpus and all(r.revision == 1 for r in gpus)
    for r in gpus:
        before = live[r.record_id]
        assert abs(r.usage_quantity - before.usage_quantity / 2) <= QUANTUM, r.record_id
        assert r.usage_quantity < before.usage_quantity
        assert r.chargeable_quantity == before.chargeable_quantity
    assert {r.revision for r in after.values() if r.cluster == resized} == {1}
    revs = Counter((m.period, m.cluster, m.revision) for m in rig.manifests())
    for p in hours(3, 6):
        assert revs[(p, resized, 1)] == revs[(p, busier, 1)] == 1
        assert revs[(p, resized, 2)] == revs[(p, busier, 2)] == 0


def test_claims_missing_from_a_replay_fail_the_period_instead_of_correcting_them_to_zero(
        rig_factory: Callable[..., Rig]) -> None:
    """A backfill of periods whose claims were billed, against a Sysdig that shows the cluster's
    cpu and memory but no claim series any more: never a correction that bills the storage as
    zero; the period fails, loudly, until the operator says the claims are gone."""
    rig = rig_factory(allocations=True)
    rig.live_export(hours(3, 6))
    live = latest(rig.records())
    cluster = sorted({r.cluster for r in live.values() if r.resource.startswith("storage.")})[0]
    before = rig.end_offsets()
    rig.sim.storage.hidden_metrics.add((cluster, CAPACITY))

    res = rig.backfill(*RANGE)
    assert res.code == 3 and res.report["failed"] == 3 and res.report["records"] == 0
    errors = [ln for ln in res.error_lines if ln.startswith("chargeback-exporter backfill: error:")]
    assert len(errors) == 1 and "3 of 3 period(s) failed" in errors[0], res.err
    details = " ".join(str(d.get("error")) for d in res.report["details"])
    assert f"cluster {cluster}" in details and "no claim series" in details
    assert rig.end_offsets() == before, "nothing published"

    rig.configure(resources={"storage": {"clusters_without_claims": [cluster]}})
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    assert res.report["changed"] == 3
    corrected = [m for m in rig.manifests() if m.cluster == cluster and m.revision == 1]
    assert len(corrected) == 3
    assert all(t.resource in ("cpu", "memory") or t.resource.startswith("gpu")
               for m in corrected for t in m.totals)
