"""Outages: the broker down for 60 s during an export, Sysdig down for 10 simulated minutes.

Either way nothing is lost and nothing is doubled: held periods are exported later, in order,
each once, and equal the fleet's ground truth.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker, free_port
from chargeback_simulator.server import SimulatorServer
from exporter.clock import FakeClock, SystemClock
from exporter.config import Config, load_config
from exporter.errors import SinkUnavailable, SourceUnavailable
from exporter.kafka import KafkaPeriodSink
from exporter.metrics import Metrics
from exporter.periods import Period
from exporter.run import assemble
from exporter.wiring import build_pipeline, build_sink, build_worker_parts
from tests.fakes.memory import FakeSource
from tests.rigs.campaign import Campaign, CampaignSpec, tune_server, write_config
from tests.rigs.harness import (
    ExporterProcess,
    check_ledger,
    is_event,
    last_checkpoint,
    read_committed,
)

OUTAGE = 60.0
M = 60
TOKEN = "outage-token"


def assert_one_line_error(proc: ExporterProcess) -> None:
    err = [ln for ln in proc.stderr_lines if not ln.startswith("{")]
    assert "Traceback" not in proc.stderr
    assert len(err) == 1 and err[0].startswith("chargeback-exporter run: error: "), err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_broker_down_for_60s_during_export(fresh_noida: LocalBroker, tmp_path: Path) -> None:
    """`run --once` as a supervisor would run it: restarted whenever it exits, broker down 60 s.

    Measured behaviour (docs/reliability.md): the run in flight fails its publish after its
    retries and exits 1 with one line; restarts ride out the rest of the outage in the sink's
    start-up retries; once the broker is back the export continues where the checkpoint says.
    """
    spec = CampaignSpec(seed=11, hours=4, producer_extra=())
    camp = Campaign(spec, tmp_path, fresh_noida)
    camp.server.start()
    tune_server(camp.server)
    try:
        cfg = write_config(camp.config_path, sysdig_url=camp.server.url, bootstrap=fresh_noida.bootstrap,
                           start=camp.start, spec=spec, tag="outage")
        argv = ["run", "--once", "--config.file", str(camp.config_path)]
        proc = ExporterProcess(argv)
        assert proc.wait_event(is_event("period exported"), count=5, timeout=120) is not None
        fresh_noida.stop()
        down_at = time.monotonic()
        exits: list[tuple[float, int, str]] = []
        runs = 1
        # While the broker is down, a supervisor restarts the exporter whenever it exits.
        while (left := down_at + OUTAGE - time.monotonic()) > 0:
            if proc.finished(left):
                exits.append((round(time.monotonic() - down_at, 1), proc.proc.returncode,
                              proc.stderr_lines[-1][:300]))
                assert proc.proc.returncode != 0
                assert_one_line_error(proc)
                proc = ExporterProcess(argv)
                runs += 1
        fresh_noida.start()
        up_at = time.monotonic()
        for _ in range(5):
            code = proc.wait(300)
            if code == 0:
                break
            exits.append((round(time.monotonic() - down_at, 1), code, proc.stderr_lines[-1][:300]))
            assert_one_line_error(proc)
            proc = ExporterProcess(argv)
            runs += 1
        assert proc.proc.returncode == 0, proc.stderr[-2000:]
        recovered = time.monotonic() - up_at
        end = last_checkpoint(cfg)
        assert end is not None
        ledger = check_ledger(cfg, camp.fleet, camp.start, end)
    finally:
        camp.server.stop()
    summary = {"outage_seconds": OUTAGE, "runs": runs, "exits": exits,
               "caught_up_after_restart_seconds": round(recovered, 1), **ledger.summary()}
    print(json.dumps(summary))
    assert ledger.problems == [], ledger.problems
    assert (ledger.duplicates, ledger.gaps, ledger.wrong_quantities, ledger.manifest_problems) == (0, 0, 0, 0)
    assert ledger.periods >= 20
    # The outage was felt: the run in flight failed within its bounds (exits) or waited it out.
    assert all(code == 1 for _, code, _ in exits), exits


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sink_publishes_again_after_a_commit_timeout(fresh_noida: LocalBroker) -> None:
    """The broker vanishes between the last record's ack and EndTxn: commit_transaction times
    out ("retry call to resume"). Once the broker is back, the sink must publish again (and the
    period must appear once): the in-doubt producer is replaced, which settles its transaction."""
    tag = uuid.uuid4().hex[:8]
    cfg = load_config(environ={}, overrides={
        "sysdig": {"url": "http://127.0.0.1:1", "token": "unused"},
        "kafka": {"bootstrap_servers": fresh_noida.bootstrap, "partitions": 1, "replication_factor": 1,
                  "transactional_id": f"commit-timeout-{tag}", "transaction_timeout": 5,
                  "connect_timeout": 5, "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                                                   "checkpoint": f"c-{tag}"}},
    })
    clock = SystemClock()  # the sink's commit deadline is measured on its clock
    period = Period(1_794_000_000 - 1_794_000_000 % 3600, 1_794_000_000 - 1_794_000_000 % 3600 + 3600)
    pipeline = build_pipeline(cfg, clock, source=FakeSource(FakeClock(period.end + 3600)))
    sink = build_sink(cfg, clock)
    assert isinstance(sink, KafkaPeriodSink)
    sink.start()
    real_commit = sink._commit

    def broker_gone_before_end_txn(producer: Any) -> None:
        # Fault injection at an exact point of the real sink: records acked, then no broker.
        sink._commit = real_commit  # type: ignore[method-assign]
        assert producer.flush(5) == 0
        fresh_noida.stop()
        real_commit(producer)

    sink._commit = broker_gone_before_end_txn  # type: ignore[method-assign]
    try:
        with pytest.raises(SinkUnavailable, match="_TIMED_OUT"):
            pipeline.export(period, sink, cfg.kafka.transactional_id)
        fresh_noida.start()
        last: SinkUnavailable | None = None
        for _ in range(3):  # the worker's publish attempts
            try:
                pipeline.export(period, sink, cfg.kafka.transactional_id)
                last = None
                break
            except SinkUnavailable as exc:
                last = exc
        if last is not None:
            raise last
    finally:
        sink.close()
    records = read_committed(cfg, cfg.kafka.topics.records)
    assert len(records) == len(pipeline.compute(period).records)


def sysdig_requests(metrics: Metrics) -> int:
    """Requests the exporter's Sysdig client made, answered or not (its latency histogram)."""
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "chargeback_sysdig_request_seconds_count":
                total += sample.value
    return int(total)


def sysdig_outage_config(server: SimulatorServer, bootstrap: str, start: int) -> Config:
    tag = uuid.uuid4().hex[:8]
    return load_config(environ={}, overrides={
        "sysdig": {"url": server.url, "token": TOKEN, "timeout": 10, "max_attempts": 3,
                   "max_retry_time": 60, "retention_tiers": False},
        "periods": {"length": "10m", "settle_delay": "2m", "start": start},
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 3, "replication_factor": 1,
                  "transactional_id": f"sysdig-outage-{tag}", "transaction_timeout": 30,
                  "connect_timeout": 10, "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                                                    "checkpoint": f"c-{tag}"}},
        "web": {"enabled": False},
    })


def test_sysdig_outage_of_ten_minutes_is_held_then_caught_up(noida: LocalBroker) -> None:
    """Simulated time: Sysdig answers 503 for 5 minutes, then refuses connections for 5 more.

    The worker wakes at its scheduled times (period boundary + 2 min settle) on a fake clock. It
    holds the due periods, with a bounded number of requests per wake-up, publishes nothing,
    and catches every missed period up at the first wake-up after the outage.
    """
    t0 = 1_794_009_600  # an aligned hour
    clock = FakeClock(t0 + 2 * 3600 + 2 * M)
    fleet = Fleet(FleetSpec(seed=5, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=4),
                  clock=clock, history=6 * 3600)
    server = SimulatorServer(fleet, clock, tokens=[TOKEN], port=free_port()).start()
    tune_server(server)
    cfg = sysdig_outage_config(server, noida.bootstrap, t0 + 3600)
    metrics = Metrics(CollectorRegistry())
    worker = assemble(cfg, clock, metrics, build_worker_parts, serve_http=False).worker
    try:
        worker.start()
        assert len(worker.export_due().exported) == 6  # [t0+1h, t0+2h)
        wakes = []

        def wake_at(t: int) -> Any:
            clock.set(t)
            before, seen = sysdig_requests(metrics), len(server.requests)
            out = worker.export_due()
            wakes.append((sysdig_requests(metrics) - before, len(server.requests) - seen))
            return out

        # 2h12: [2h, 2h10) is due; Sysdig answers 503 from 2h11 to 2h16.
        server.faults.push("/prometheus", status=503, count=10_000)
        out = wake_at(t0 + 2 * 3600 + 12 * M)
        assert out.exported == () and out.held == Period(t0 + 7200, t0 + 7200 + 600)
        assert isinstance(out.error, SourceUnavailable) and "HTTP 503" in str(out.error)
        # 2h16: connection refused until 2h21:30. Stopping the listener does not end the client's
        # kept-alive connections, so those are closed on their next request (no response).
        server.stop()
        server.faults.clear()
        server.faults.push("/prometheus", raw=b"", count=cfg.sysdig.max_concurrency)
        out = wake_at(t0 + 2 * 3600 + 16 * M)  # a manual wake-up during the outage
        assert isinstance(out.error, SourceUnavailable) and "unreachable" in str(out.error)
        assert last_checkpoint(cfg) == t0 + 2 * 3600  # nothing published while Sysdig is down
        clock.set(t0 + 2 * 3600 + 21 * M + 30)
        server.faults.clear()
        server.start()
        tune_server(server)
        out = wake_at(t0 + 2 * 3600 + 22 * M)  # first scheduled wake-up after the outage
        assert [p.start for p in out.exported] == [t0 + 7200, t0 + 7200 + 600]
        out = wake_at(t0 + 2 * 3600 + 32 * M)
        assert [p.start for p in out.exported] == [t0 + 7200 + 1200]
    finally:
        worker.close()
        server.stop()
    # Bounded retries: per wake-up at least one query retried to the limit, at most 10 queries x
    # sysdig.max_attempts requests; and the simulator saw no more than that while answering 503.
    print(json.dumps({"wakes (requests sent, requests the simulator saw)": wakes}))
    sent = [client for client, _ in wakes]
    queries = 13  # per period: the pre-count of series, then the plan's 12 queries
    assert all(3 <= n <= queries * cfg.sysdig.max_attempts for n in sent[:2]), wakes
    assert wakes[0][1] == sent[0]  # what the simulator saw: no retries hidden below ours
    assert sent[2:] == [2 * queries, queries]
    assert [served for _, served in wakes[2:]] == [2 * queries, queries]
    assert metrics.registry.get_sample_value("chargeback_period_failures_total",
                                             {"reason": "unavailable"}) == 2
    ledger = check_ledger(cfg, fleet, t0 + 3600, t0 + 2 * 3600 + 1800)
    assert ledger.problems == [], ledger.problems
    assert (ledger.periods, ledger.duplicates, ledger.gaps) == (9, 0, 0)
