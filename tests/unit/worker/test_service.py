"""The service around `export_due`: schedule alignment, catch-up at start, graceful shutdown.

Threads are coordinated with events and bounded joins; nothing waits for a scheduler interval.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest

from exporter.clock import FakeClock
from exporter.config import PeriodsConfig, WorkerConfig
from exporter.errors import FencedError
from exporter.worker import build_scheduler, build_trigger, first_fire_time
from tests.fakes.memory import MemorySink
from tests.rigs.paths import ROOT

from .conftest import HOUR, INSTANCE, SETTLE, T0, Rig, make_rig

WAIT = 10.0  # upper bound for any cross-thread hand-off; normally microseconds


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


# --- schedule -------------------------------------------------------------------------------

@pytest.mark.parametrize(("now", "expected"), [
    (T0 + 10, T0 + SETTLE),            # before this hour's settle point
    (T0 + SETTLE, T0 + SETTLE),        # exactly on it
    (T0 + SETTLE + 1, T0 + HOUR + SETTLE),
    (T0 - 1, T0 + SETTLE),
])
def test_first_fire_time_is_a_period_boundary_plus_settle(now: int, expected: int) -> None:
    assert first_fire_time(now, HOUR, SETTLE) == at(expected)


@pytest.mark.parametrize(("length", "settle"), [(600, 90), (3600, 300), (86400, 1800)])
def test_trigger_fires_on_every_boundary_plus_settle(length: int, settle: int) -> None:
    clock = FakeClock(T0 + 12_345)
    trigger = build_trigger(clock, PeriodsConfig(length=length, settle_delay=settle))
    now = at(int(clock.time()))
    fire = trigger.get_next_fire_time(None, now)
    assert fire >= now
    fires = [fire]
    for _ in range(3):
        fires.append(trigger.get_next_fire_time(fires[-1], fires[-1]))
    for f in fires:
        assert (int(f.timestamp()) - settle) % length == 0
    assert [int((b - a).total_seconds()) for a, b in itertools.pairwise(fires)] == [length] * 3
    assert int(fire.timestamp()) - int(clock.time()) <= length


def test_scheduler_job_coalesces_and_never_overlaps() -> None:
    woken: list[int] = []
    scheduler = build_scheduler(lambda: woken.append(1), FakeClock(T0), PeriodsConfig())
    [job] = scheduler.get_jobs()
    assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time is None
    job.func()
    assert woken == [1]


# --- serve and shutdown ---------------------------------------------------------------------

def serve_in_thread(r: Rig) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def target() -> None:
        try:
            result.append(r.worker.serve())
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def hold_first_transaction(r: Rig) -> tuple[threading.Event, threading.Event]:
    """Publishes block mid-transaction until `release` is set; `entered` says one is open."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        assert release.wait(WAIT)

    r.sink.in_transaction = hold
    return entered, release


def test_serve_catches_up_at_start_then_waits_for_wakeups() -> None:
    r = make_rig(start=T0 - 3 * HOUR)
    done = threading.Event()
    r.sink.in_transaction = lambda: done.set() if len(r.broker.transactions) == 2 else None
    t, result = serve_in_thread(r)
    assert done.wait(WAIT)
    r.clock.advance(HOUR)
    committed = threading.Event()
    r.sink.in_transaction = committed.set
    r.worker.wake()  # what the scheduler does on the next boundary + settle
    assert committed.wait(WAIT)
    r.worker.request_stop()
    t.join(WAIT)
    assert result == [0]
    assert r.published_periods() == [T0 - 3 * HOUR + i * HOUR for i in range(4)]
    assert r.sink.closed


def test_stop_lets_the_in_flight_period_commit_then_exits_0() -> None:
    r = make_rig(start=T0 - 3 * HOUR, worker_cfg=WorkerConfig(shutdown_grace=30))
    entered, release = hold_first_transaction(r)
    t, result = serve_in_thread(r)
    assert entered.wait(WAIT)
    r.worker.request_stop()  # SIGTERM arrives while period 1 of 3 is being published
    release.set()
    t.join(WAIT)
    assert not t.is_alive()
    assert result == [0]
    assert r.published_periods() == [T0 - 3 * HOUR]  # it committed; nothing after it started
    assert r.sink.closed and r.sink.aborts == []
    assert r.health.readiness() == (False, "sink not started")


def test_in_flight_period_past_the_grace_is_aborted_and_exit_is_0() -> None:
    r = make_rig(start=T0 - 3 * HOUR, worker_cfg=WorkerConfig(shutdown_grace=0))
    entered, release = hold_first_transaction(r)
    t, result = serve_in_thread(r)
    try:
        assert entered.wait(WAIT)
        r.worker.request_stop()
        t.join(WAIT)
        assert result == [0]
        assert r.sink.closed and r.sink.aborts == ["close"]
        assert r.sample("chargeback_transaction_aborts_total") == 1
    finally:
        release.set()
    assert r.broker.transactions == []  # the late commit attempt finds its transaction aborted


def test_fenced_while_serving_stops_with_fenced_error() -> None:
    r = make_rig(start=T0 - 3 * HOUR)
    rival = MemorySink(r.broker, transactional_id=INSTANCE)  # a newer instance takes over
    r.sink.in_transaction = rival.start
    t, result = serve_in_thread(r)
    t.join(WAIT)
    [error] = result
    assert isinstance(error, FencedError) and error.exit_code == 4
    assert r.broker.transactions == []
    assert r.sink.closed


def test_unexpected_exception_in_the_loop_becomes_one_line_error() -> None:
    r = make_rig()

    def boom() -> None:
        raise ZeroDivisionError("division by zero")

    r.sink.in_transaction = boom
    t, result = serve_in_thread(r)
    t.join(WAIT)
    [error] = result
    assert str(error) == "worker: unexpected ZeroDivisionError: division by zero"
    assert r.broker.transactions == []


def test_catch_up_continues_past_a_full_batch_without_waiting_for_the_next_interval() -> None:
    r = make_rig(start=T0 - 10 * HOUR, worker_cfg=WorkerConfig(max_batch_periods=3))
    done = threading.Event()
    r.sink.in_transaction = (
        lambda: done.set() if len(r.broker.transactions) == 9 else None)
    t, result = serve_in_thread(r)
    assert done.wait(WAIT)
    r.worker.request_stop()
    t.join(WAIT)
    assert result == [0]
    assert r.published_periods() == [T0 - 10 * HOUR + i * HOUR for i in range(10)]


CHILD = """
import sys
from exporter.logs import setup
from exporter.run import Service, execute
from tests.unit.worker.conftest import HOUR, T0, make_rig

setup("INFO", "json")
r = make_rig(start=T0 - 3 * HOUR)

def hold():
    print("in-flight", flush=True)
    sys.stdin.readline()

r.sink.in_transaction = hold
rc = execute(Service(r.worker, None, r.metrics), once=False)
print("committed", len(r.broker.transactions), "closed", r.sink.closed, flush=True)
sys.exit(rc)
"""


@pytest.mark.timeout(60)
def test_sigterm_in_a_real_process_finishes_the_period_in_flight_and_exits_0() -> None:
    repo = ROOT
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=repo, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "in-flight"
        proc.send_signal(signal.SIGTERM)
        for line in proc.stderr:  # bounded by the child's lifetime
            if '"event":"stop requested"' in line:
                assert '"signal":"SIGTERM"' in line
                break
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out.strip() == "committed 1 closed True"


def test_serve_closes_the_sink_when_start_fails() -> None:
    r = make_rig()
    r.seed_checkpoint(T0 - 20 * 60)  # misaligned: start refuses it
    t, result = serve_in_thread(r)
    t.join(WAIT)
    [error] = result
    assert "not aligned" in str(error)
    assert r.sink.closed and r.health.readiness() == (False, "sink not started")
