"""429 storms slow a backfill down (Retry-After, lower concurrency) instead of failing it."""

from __future__ import annotations

from exporter.periods import iso
from exporter.wiring import build_pipeline
from tests.rigs.backfill import T0, H, Rig, hours

RANGE = ("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H))


def test_a_429_storm_slows_the_backfill_down_and_it_completes(rig: Rig) -> None:
    rig.sim.server.faults.push("/prometheus", status=429, headers={"Retry-After": "7"}, count=60)
    started = rig.clock.time()
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    rep = res.report
    assert rep["failed"] == 0 and rep["changed"] == 3
    assert rep["throttled"] > 0 and rep["lowest_concurrency"] < 3  # backfill.max_concurrency
    assert rig.sim.server.faults.pending() == 0
    assert 7.0 in rig.clock.sleeps, "Retry-After honoured, on the injected clock"
    assert rig.clock.time() - started >= 7.0
    # Throttling changes the pace, never the numbers.
    clean = build_pipeline(rig.cfg, rig.clock)
    expected = {(m.period, m.cluster): m.content_hash
                for p in hours(3, 6) for m in clean.compute(p).manifests}
    assert {(m.period, m.cluster): m.content_hash for m in rig.manifests()} == expected


def test_endless_throttling_gives_up_per_period_then_a_rerun_completes(rig: Rig) -> None:
    rig.configure(backfill={"period_timeout": "30s"})
    rig.sim.server.faults.push("/prometheus", status=429, headers={"Retry-After": "5"}, count=100_000)
    res = rig.backfill(*RANGE)
    assert res.code == 3
    assert res.report["failed"] == 3 and res.report["records"] == 0
    errors = [ln for ln in res.error_lines if ln.startswith("chargeback-exporter backfill: error:")]
    assert len(errors) == 1
    assert "3 of 3 period(s) failed" in errors[0] and "gave up on period" in errors[0]
    assert "run the same command again to resume" in errors[0]
    assert rig.records() == []

    rig.sim.server.faults.clear()
    again = rig.backfill(*RANGE)
    assert again.code == 0, again.err
    assert again.report["changed"] == 3 and again.report["resumed_from"] is None
