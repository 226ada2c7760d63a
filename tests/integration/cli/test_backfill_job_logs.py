"""`backfill` as a Kubernetes Job runs it: a process without a terminal, read through its logs.

Without a TTY there is no progress bar; every period done is one structured log line (period,
status, records, corrections) and the run ends with one summary line, in the configured
`logging.format`. The fleet is on the real clock, so the process backfills real closed periods
against the simulator and a real broker; a second run after a relabelling shows corrections.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import SimulatorServer
from exporter.clock import SystemClock
from exporter.periods import align_down, iso
from tests.rigs.backfill import EditableStorage
from tests.rigs.campaign import tune_server
from tests.rigs.harness import ExporterProcess

TOKEN = "backfill-job-token-5d0e"
LENGTH = 600
PERIODS = 3


class Job:
    """A simulator on the real clock over an editable fleet, topics of its own, a config."""

    def __init__(self, broker: LocalBroker, tmp_path: Path) -> None:
        clock = SystemClock()
        history = 4 * 3600
        fleet = Fleet(FleetSpec(seed=3, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=2),
                      clock=clock, history=history, timelines=((10, history),))
        self.storage = EditableStorage(fleet)
        self.server = SimulatorServer(self.storage, clock, tokens=[TOKEN])
        self.server.start()
        tune_server(self.server)
        self.end = align_down(int(clock.time()) - 120, LENGTH)
        self.start = self.end - PERIODS * LENGTH
        tag = uuid.uuid4().hex[:8]
        self.doc: dict[str, Any] = {
            "sysdig": {"url": self.server.url, "token": TOKEN, "timeout": 10, "retention_tiers": False},
            "periods": {"length": "10m", "settle_delay": "1m"},
            "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 3, "replication_factor": 1,
                      "transactional_id": f"job-{tag}", "transaction_timeout": 30, "connect_timeout": 10,
                      "topics": {"records": f"records-{tag}", "manifests": f"manifests-{tag}",
                                 "checkpoint": f"checkpoint-{tag}"}},
        }
        self.path = tmp_path / "config.yaml"
        self.cluster, self.namespace = next(
            (w.key.cluster, w.key.namespace) for w in fleet.workloads())

    def run(self, fmt: str) -> ExporterProcess:
        self.doc["logging"] = {"format": fmt, "level": "INFO"}
        self.path.write_text(json.dumps(self.doc), encoding="utf-8")
        proc = ExporterProcess(["backfill", "--config.file", str(self.path), "--from", iso(self.start),
                                "--to", iso(self.end), "--format", "json"])
        assert proc.wait(240) == 0, proc.stderr[-3000:]
        return proc


@pytest.fixture
def job(noida: LocalBroker, tmp_path: Path) -> Iterator[Job]:
    j = Job(noida, tmp_path)
    try:
        yield j
    finally:
        j.server.stop()


def test_without_a_tty_each_period_is_one_log_line_then_a_summary(job: Job) -> None:
    first = job.run("json")
    lines = first.matching("backfill period")
    assert [d["period_start"] for d in lines] == list(range(job.start, job.end, LENGTH))
    report = json.loads(first.stdout)
    by_start = {d["period_start"]: d for d in report["details"]}
    for d in lines:
        assert d["level"] == "info" and d["logger"] == "exporter.backfill"
        assert d["status"] == "published" and d["corrections"] == 0 and d["new"] == 2
        assert d["records"] == by_start[iso(d["period_start"])]["records"] > 0
    [summary] = first.matching("backfill summary")
    assert summary["periods"] == PERIODS and summary["corrections"] == 0 and summary["exit_code"] == 0
    assert summary["records"] == report["records"] and summary["core_hours"] == report["core_hours"]
    assert "\x1b[" not in first.stderr  # no progress bar, no terminal codes

    # A correction at Sysdig: one namespace's cost center changes; the rerun republishes it.
    job.storage.relabel[(job.cluster, job.namespace)] = {"costcenter": "CC-CORRECTED"}
    second = job.run("text")
    text = [ln for ln in second.stderr_lines if "backfill period" in ln]
    assert len(text) == PERIODS and not second.events  # the text format, not JSON
    for ln in text:
        assert "status=published" in ln and "corrections=1" in ln and "records=" in ln
    [summary_line] = [ln for ln in second.stderr_lines if "backfill summary" in ln]
    assert f"corrections={PERIODS}" in summary_line and "exit_code=0" in summary_line
