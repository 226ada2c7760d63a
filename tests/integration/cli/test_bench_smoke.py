"""The benchmark harness on a tiny fleet: it runs and its results are well formed.

No timing is asserted: these tests only prove the harness measures what it says it measures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.__main__ import ROOT, _env
from bench.fleets import exporter_config, fleet_spec, period
from bench.record import Recording, record
from bench.replay import ReplayServer
from bench.report import render
from chargeback_simulator.fleet import Fleet
from exporter.clock import FakeClock
from exporter.wiring import build_source

TINY = 40


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rec")
    record(TINY, directory)
    return directory


@pytest.fixture
def replay_url(recording: Path) -> Iterator[str]:
    with ReplayServer(recording) as server:
        yield server.url


def test_recording_matches_the_fleet(recording: Path) -> None:
    rec = Recording.load(recording)
    fleet = Fleet(fleet_spec(TINY))
    p = period(0)
    assert rec.workloads == len(fleet.workloads())
    assert rec.pods == len(fleet.pods(p.start, p.end))
    assert sorted(rec.names.values()) == sorted(
        ["cpu.usage", "cpu.request", "cpu.chargeable", "memory.usage", "memory.request",
         "memory.chargeable", "labels", "coverage", "requests.present", "gpu.request",
         "gpu.usage", "storage.request", "series count"])
    assert rec.total_bytes == sum(len(b) for group in rec.bodies(recording).values() for b in group)


def test_replay_serves_any_period_through_the_real_source(recording: Path, replay_url: str,
                                                          tmp_path: Path) -> None:
    cfg = exporter_config(replay_url, "127.0.0.1:9", "t", None)
    truth = Fleet(fleet_spec(TINY)).ground_truth(period(0).start, period(0).end)
    for index in (0, 5, -3):
        p = period(index)
        usage = build_source(cfg, FakeClock(p.end + 600)).fetch(p)
        assert usage.period == p and usage.queries == 13  # the pre-count, then one group's 12
        assert usage.bytes_fetched == Recording.load(recording).total_bytes
        # Every period replays period 0's answers: the same workloads, full coverage.
        assert {w.key for w in usage.workloads} == set(truth)
        assert set(usage.coverage.values()) == {1}


@pytest.mark.timeout(240)
def test_harness_runs_end_to_end_on_a_tiny_fleet(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", str(TINY), "--periods", "1",
         "--backfill-periods", "2", "--backfill-size", str(TINY), "--avro-records", "500",
         "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    [size] = results["sizes"]
    assert size["target_pods"] == TINY and size["workloads"] > 0 and size["pods"] > 0
    [run] = size["runs"]
    assert run["requests"] == 13 and run["bytes_fetched"] > 0
    # Under Sysdig's latency, a period takes about as long as its slowest query.
    [wall] = [w for w in size["wall"]["runs"]]
    assert wall["queries"] == 13 and 0 < wall["slowest_query"] <= wall["period_wall"]
    assert wall["first"] is True  # a new source: its pre-count before its groups
    # cpu and memory per workload that had samples, one manifest per cluster, plus a checkpoint
    assert run["records"] == 2 * run["workloads"]
    assert run["messages"] == run["records"] + run["manifests"] + 1
    for phase in ("http", "parse", "json", "series", "compute", "encode", "produce", "total"):
        wall, cpu = run[phase]
        assert wall >= 0 and cpu >= 0, phase
    phases = sum(run[p][0] for p in ("fetch", "compute", "encode", "produce"))
    assert math.isclose(phases, run["total"][0], rel_tol=1e-6)
    assert 0 < run["own"] <= run["total"][0]
    assert all(v > 0 for v in (*size["ceiling_json"], size["ceiling_produce"][0]))
    # Each period is paired with a JSON ceiling and a floor taken right after it.
    assert all(v > 0 for v in (*run["ceiling_json"], *run["floor"]))
    # The floor wrote the exporter's very bodies and content hashes, from the same answers.
    assert size["floor"]["identical"] is True and size["floor"]["records"] == run["records"]
    assert size["floor"]["cpu"] > 0
    assert size["avro"]["records"] == run["records"]
    assert size["avro"]["generated_objects"] > 0 and size["avro"]["fastavro_naive"] > 0
    # warm-up + one measured period, every record read back by both consumers
    assert size["consumer"]["messages"] == 2 * run["records"]
    assert size["consumer"]["bare_messages"] == size["consumer"]["messages"]
    assert size["peak_rss_mib"] > 0
    base, more_pods, finer = results["shapes"]
    assert base["workloads"] == more_pods["workloads"] == finer["workloads"] == size["workloads"]
    assert more_pods["pods"] > base["pods"]
    assert 0 <= finer["pod_steps"] - 6 * base["pod_steps"] < 6  # base is rounded down
    # Server-side aggregation: one series per workload, whatever the pods and samples behind it.
    for other in (more_pods, finer):
        assert other["total_bytes"] < 1.5 * base["total_bytes"]
    assert "run_period" in results["profile"]
    many = results["backfill"]["many"]
    assert many["periods"] == 2 and len(many["rss_after_period_mib"]) == 2
    assert many["records"] == 2 * run["records"]
    text = proc.stdout
    assert text == render(results)
    for heading in ("## Fleets", "Same workloads, more pods", "## Per-period phases", "## Ceilings",
                    "## Avro encoding", "## Consumer side", "## Backfill RSS", "## Profile"):
        assert heading in text


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "ten"], "--sizes: expected comma-separated integers"),
    (["--sizes", "5"], "--sizes: each size must be in 10..200000"),
    (["--periods", "0"], "expected a positive integer"),
])
def test_bad_arguments_are_one_line(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", *argv], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
