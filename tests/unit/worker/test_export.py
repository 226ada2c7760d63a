"""Which periods the worker exports, in what order, and what stops it: driven by `export_due`."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from exporter.config import WorkerConfig
from exporter.errors import ExporterError, FencedError, IncompleteDataError, RetentionError, SinkUnavailable
from exporter.model import PeriodUsage
from exporter.periods import Period
from tests.fakes.memory import MemorySink

from .conftest import HOUR, INSTANCE, SETTLE, T0, make_rig


def hours(first: int, count: int) -> list[int]:
    return [first + i * HOUR for i in range(count)]


def test_no_checkpoint_no_start_exports_only_the_last_closed_period() -> None:
    r = make_rig()
    r.worker.start()
    assert r.worker.next_period_start == T0 - HOUR
    outcome = r.worker.export_due()
    assert outcome.exported == (Period(T0 - HOUR, T0),)
    assert outcome.error is None and not outcome.more_due
    assert r.published_periods() == [T0 - HOUR]
    assert r.broker.checkpoint_ends() == [T0]
    assert r.worker.export_due().exported == ()


def test_nothing_is_due_before_the_settle_delay_has_passed() -> None:
    r = make_rig()
    r.worker.start()
    r.worker.export_due()
    r.clock.advance(HOUR - 1)  # T0 + 1h + settle - 1: [T0, T0+1h) is not settled yet
    assert r.worker.export_due().exported == ()
    r.clock.advance(1)
    assert r.worker.export_due().exported == (Period(T0, T0 + HOUR),)


def test_catch_up_after_six_hour_outage_in_bounded_batches() -> None:
    r = make_rig(worker_cfg=WorkerConfig(max_batch_periods=4))
    r.worker.start()
    assert r.worker.export_due().exported == (Period(T0 - HOUR, T0),)
    r.clock.advance(6 * HOUR + 1)

    first = r.worker.export_due()
    assert [p.start for p in first.exported] == hours(T0, 4)
    assert first.more_due and first.error is None
    second = r.worker.export_due()
    assert [p.start for p in second.exported] == hours(T0 + 4 * HOUR, 2)
    assert not second.more_due
    assert r.worker.export_due().exported == ()

    # Every period exactly once, in order, no gap; one transaction and one checkpoint each.
    assert r.published_periods() == hours(T0 - HOUR, 7)
    assert r.broker.checkpoint_ends() == hours(T0, 7)
    assert r.sample("chargeback_periods_exported_total", mode="live") == 7
    assert r.sample("chargeback_records_produced_total", mode="live") == 7 * 4
    assert r.sample("chargeback_last_closed_period_end_seconds") == T0 + 6 * HOUR


def test_restart_continues_at_the_period_after_the_checkpoint() -> None:
    r = make_rig(start=T0 - 3 * HOUR)
    r.worker.start()
    r.worker.export_due()
    assert r.broker.checkpoint_ends() == hours(T0 - 2 * HOUR, 3)

    r.worker.close()
    r.clock.advance(2 * HOUR)
    r2 = r.restart()
    r2.worker.start()
    assert r2.worker.next_period_start == T0
    assert r2.worker.export_due().exported == (Period(T0, T0 + HOUR), Period(T0 + HOUR, T0 + 2 * HOUR))
    assert r.published_periods() == hours(T0 - 3 * HOUR, 5)


def test_checkpoint_wins_over_configured_start() -> None:
    r = make_rig(start=T0 - 10 * HOUR)
    r.seed_checkpoint(T0 - 2 * HOUR)
    r.worker.start()
    assert r.worker.next_period_start == T0 - 2 * HOUR
    assert [p.start for p in r.worker.export_due().exported] == hours(T0 - 2 * HOUR, 2)


def test_no_checkpoint_starts_at_configured_start() -> None:
    r = make_rig(start=T0 - 5 * HOUR)
    r.worker.start()
    assert r.worker.next_period_start == T0 - 5 * HOUR
    r.worker.export_due()
    assert r.published_periods() == hours(T0 - 5 * HOUR, 5)


def test_misaligned_checkpoint_is_refused_not_skipped() -> None:
    r = make_rig()
    r.seed_checkpoint(T0 - 20 * 60, period_seconds=600)
    match = r"checkpoint 2026-11-02T11:40:00Z .* not aligned to periods.length 1h"
    with pytest.raises(ExporterError, match=match):
        r.worker.start()


def test_failing_publish_does_not_advance_and_a_later_run_publishes_once() -> None:
    r = make_rig(start=T0 - 2 * HOUR)
    r.worker.start()
    r.sink.unavailable = True
    outcome = r.worker.export_due()
    assert outcome.exported == ()
    assert outcome.held == Period(T0 - 2 * HOUR, T0 - HOUR)
    assert isinstance(outcome.error, SinkUnavailable)
    assert r.worker.next_period_start == T0 - 2 * HOUR
    assert r.broker.transactions == []
    assert r.sink.attempts == 3  # retried within the run, each attempt aborted
    assert r.sample("chargeback_transaction_aborts_total") == 3
    assert r.sample("chargeback_period_failures_total", reason="unavailable") == 1

    r.sink.unavailable = False
    r.clock.advance(HOUR)
    assert [p.start for p in r.worker.export_due().exported] == hours(T0 - 2 * HOUR, 3)
    assert r.published_periods() == hours(T0 - 2 * HOUR, 3)


def test_one_failed_attempt_is_retried_in_the_same_run_without_duplicate() -> None:
    r = make_rig(start=T0 - 2 * HOUR)
    r.worker.start()
    r.sink.fail_nth_publish(2)
    outcome = r.worker.export_due()
    assert [p.start for p in outcome.exported] == hours(T0 - 2 * HOUR, 2)
    assert r.published_periods() == hours(T0 - 2 * HOUR, 2)
    assert r.sink.attempts == 3 and r.sink.aborts == ["SinkUnavailable"]
    assert r.clock.sleeps, "the retry waited on the injected clock"


@pytest.mark.parametrize("landed", [True, False], ids=["committed", "not-committed"])
def test_a_lost_commit_answer_is_settled_and_each_period_published_once(landed: bool) -> None:
    r = make_rig(start=T0 - 3 * HOUR)
    r.worker.start()
    r.sink.lose_commit_answer(2, committed=landed)
    assert [p.start for p in r.worker.export_due().exported] == hours(T0 - 3 * HOUR, 3)
    assert r.published_periods() == hours(T0 - 3 * HOUR, 3)
    assert r.broker.checkpoint_ends() == hours(T0 - 2 * HOUR, 3)
    assert r.sink.recoveries == 1
    assert r.sink.attempts == (3 if landed else 4)  # the batch is sent again only if it was lost


def test_incomplete_data_is_held_in_order_and_retried() -> None:
    r = make_rig(start=T0 - 3 * HOUR)
    held = T0 - 2 * HOUR
    r.source.coverage[held] = Decimal("0.5")
    r.worker.start()
    outcome = r.worker.export_due()
    assert [p.start for p in outcome.exported] == [T0 - 3 * HOUR]
    assert outcome.held == Period(held, held + HOUR)
    assert isinstance(outcome.error, IncompleteDataError)
    assert r.worker.next_period_start == held
    assert r.sample("chargeback_period_failures_total", reason="incomplete") == 1

    # The next run tries the same period again; once the data is complete it goes out, once.
    assert r.worker.export_due().held == Period(held, held + HOUR)
    r.source.coverage.pop(held)
    assert [p.start for p in r.worker.export_due().exported] == [held, held + HOUR]
    assert r.published_periods() == hours(T0 - 3 * HOUR, 3)
    assert r.sample("chargeback_period_failures_total", reason="incomplete") == 2


def test_source_unavailable_holds_the_period() -> None:
    r = make_rig()
    r.source.unavailable.add(T0 - HOUR)
    r.worker.start()
    outcome = r.worker.export_due()
    assert outcome.exported == () and outcome.held == Period(T0 - HOUR, T0)
    assert r.broker.transactions == []
    assert r.sample("chargeback_period_failures_total", reason="unavailable") == 1


def test_fenced_instance_stops_with_exit_code_4() -> None:
    r = make_rig(start=T0 - 2 * HOUR)
    r.worker.start()
    rival = MemorySink(r.broker, transactional_id=INSTANCE)
    rival.start()  # a newer instance with the same transactional.id
    with pytest.raises(FencedError, match="fenced") as caught:
        r.worker.export_due()
    assert caught.value.exit_code == 4
    assert r.broker.transactions == []
    assert r.worker.next_period_start == T0 - 2 * HOUR
    assert r.health.readiness() == (False, "sink not started")
    assert r.sample("chargeback_period_failures_total", reason="fenced") == 1


def test_period_beyond_the_last_retention_tier_raises_retention_error() -> None:
    r = make_rig(start=T0 - 460 * 24 * HOUR)
    r.worker.start()
    with pytest.raises(RetentionError, match=r"beyond Sysdig's longest retention \(450d"):
        r.worker.export_due()
    assert r.broker.transactions == []
    assert r.source.fetched == []  # refused before Sysdig is asked


def test_period_older_than_resolution_retention_is_reported_with_its_coarser_step(
        caplog: pytest.LogCaptureFixture) -> None:
    r = make_rig(start=T0 - 10 * 24 * HOUR, worker_cfg=WorkerConfig(max_batch_periods=2))
    r.worker.start()
    with caplog.at_level(logging.WARNING, logger="exporter.worker"):
        outcome = r.worker.export_due()
    assert len(outcome.exported) == 2  # exported, not skipped
    assert r.sample("chargeback_coarse_periods_total", step="600") == 2
    warned = [rec for rec in caplog.records if rec.getMessage().startswith("period older than")]
    assert [rec.__dict__["step_seconds"] for rec in warned] == [600, 600]
    methods = {rec.method for rec in r.records()}
    assert methods == {"max-request-usage/pod/600s/v1"}


def test_fresh_periods_use_the_configured_resolution() -> None:
    r = make_rig()
    r.worker.start()
    r.worker.export_due()
    methods = {rec.method for rec in r.records()}
    assert methods == {"max-request-usage/pod/10s/v1"}
    assert r.sample("chargeback_coarse_periods_total", step="600") is None


def test_unallocated_share_and_lag_metrics_after_an_export() -> None:
    r = make_rig()
    r.worker.start()
    assert r.sample("chargeback_export_lag_seconds") != r.sample("chargeback_export_lag_seconds")  # NaN
    r.worker.export_due()
    assert r.sample("chargeback_export_lag_seconds") == SETTLE
    # Of the two equal workloads only one carries a costcenter: half is unallocated.
    def share(key: str, resource: str) -> float | None:
        return r.sample("chargeback_unallocated_share", cluster="prod", org_key=key, resource=resource)

    assert share("costcenter", "cpu") == 0.5
    assert share("team", "memory") == 0.5
    assert share("department", "cpu") == 1.0


def test_export_before_start_is_an_error() -> None:
    r = make_rig()
    with pytest.raises(ExporterError, match=r"before start\(\)"):
        r.worker.export_due()


def test_export_all_runs_batches_until_current_and_raises_a_held_period() -> None:
    r = make_rig(start=T0 - 5 * HOUR, worker_cfg=WorkerConfig(max_batch_periods=2))
    r.worker.start()
    assert [p.start for p in r.worker.export_all()] == hours(T0 - 5 * HOUR, 5)

    r2 = make_rig(start=T0 - 5 * HOUR, worker_cfg=WorkerConfig(max_batch_periods=2))
    r2.source.coverage[T0 - 2 * HOUR] = Decimal("0.1")
    r2.worker.start()
    with pytest.raises(IncompleteDataError, match="coverage below"):
        r2.worker.export_all()
    assert r2.published_periods() == hours(T0 - 5 * HOUR, 3)


def test_period_log_event_carries_period_counts_and_durations(caplog: pytest.LogCaptureFixture) -> None:
    r = make_rig()
    r.worker.start()
    with caplog.at_level(logging.INFO, logger="exporter.worker"):
        r.worker.export_due()
    [event] = [rec for rec in caplog.records if rec.getMessage() == "period exported"]
    fields = event.__dict__
    assert fields["period_start"] == T0 - HOUR and fields["period_end"] == T0
    assert fields["records"] == 4 and fields["step_seconds"] == 10
    assert fields["export_seconds"] == 0


def test_the_collector_stays_on_while_a_period_is_computed_and_published() -> None:
    """The worker never switches the garbage collector off: it is process-wide, and other
    threads (metrics, backfill) would run without it."""
    import gc

    r = make_rig()
    seen: list[tuple[str, bool]] = []
    fetch = r.source.fetch

    def watched_fetch(period: Period) -> PeriodUsage:
        seen.append(("compute", gc.isenabled()))
        return fetch(period)

    r.source.fetch = watched_fetch  # type: ignore[method-assign]
    r.sink.in_transaction = lambda: seen.append(("publish", gc.isenabled()))
    assert gc.isenabled()
    r.worker.start()
    assert r.worker.export_due().exported == (Period(T0 - HOUR, T0),)
    assert seen == [("compute", True), ("publish", True)]
    assert gc.isenabled()
