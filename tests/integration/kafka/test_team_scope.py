"""A token whose Sysdig team is scoped sees part of the fleet: run, report and backfill refuse it.

The simulator gives `SCOPED` a team scoped to one cluster; its PromQL answers really see only
that cluster, so before the check `run --once` published a bill for part of the fleet.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import Team
from exporter.config import load_config
from exporter.periods import iso
from exporter.wiring import build_codec
from tests.rigs.harness import read_committed
from tests.rigs.sim import T0, TOKEN, H, Run, Sim

SCOPED = "scoped-token-51c2"


@pytest.fixture
def scoped(sim_factory: Callable[..., Sim]) -> tuple[Sim, str]:
    """A simulator with two clusters where `SCOPED` belongs to a team that sees only one."""
    probe = sim_factory(clusters=2)
    cluster = probe.fleet.workloads()[0].key.cluster
    sim = sim_factory(clusters=2, teams={SCOPED: Team.scoped(7, "payments", "kube_cluster_name",
                                                              cluster)})
    return sim, cluster


def write_config(tmp_path: Path, sim: Sim, token: str, broker: LocalBroker | None = None,
                 **sysdig: Any) -> Path:
    tag = uuid.uuid4().hex[:8]
    doc: dict[str, Any] = {
        "sysdig": {"url": sim.server.url, "token": token, "retention_tiers": False,
                   "max_attempts": 2, "max_retry_time": 30, **sysdig},
        "periods": {"length": "1h", "settle_delay": "2m", "start": iso(T0 + H)},
        "web": {"enabled": False},
        "logging": {"format": "text", "level": "WARNING"},
    }
    if broker is not None:
        doc["kafka"] = {"bootstrap_servers": broker.bootstrap, "partitions": 1,
                        "replication_factor": 1, "transactional_id": f"scope-{tag}",
                        "transaction_timeout": 30, "connect_timeout": 10,
                        "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                                   "checkpoint": f"c-{tag}"}}
    path = tmp_path / f"config-{tag}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def prometheus_requests(sim: Sim) -> int:
    return sum(1 for r in sim.server.requests if r.path.startswith("/prometheus/"))


def one_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"chargeback-exporter {command}: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_run_once_refuses_a_scoped_token_and_bills_nothing(
        scoped: tuple[Sim, str], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim, cluster = scoped
    code, _, err = run("run", "--once", "--config.file",
                          str(write_config(tmp_path, sim, SCOPED, noida)))
    assert code == 2, err
    line = one_line(err, "run")
    assert "'payments'" in line and f'kube_cluster_name = "{cluster}"' in line
    assert "sysdig.allow_scoped_team" in line and SCOPED not in err
    assert prometheus_requests(sim) == 0


def test_run_once_with_the_opt_in_warns_and_bills_what_the_team_sees(
        scoped: tuple[Sim, str], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim, cluster = scoped
    path = write_config(tmp_path, sim, SCOPED, noida, allow_scoped_team=True)
    code, _, err = run("run", "--once", "--config.file", str(path))
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning") and "'payments'" in ln]
    assert len(warnings) == 1 and f'kube_cluster_name = "{cluster}"' in warnings[0], err
    cfg = load_config(path, environ={})
    codec = build_codec(cfg)
    records = [codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)]
    assert records and {r.cluster for r in records} == {cluster}


def test_an_unscoped_token_passes_the_check(sim: Sim, tmp_path: Path, run: Run) -> None:
    window = ["--from", iso(T0 + H), "--to", iso(T0 + 2 * H), "--format", "csv"]
    code, out, err = run("report", "--config.file", str(write_config(tmp_path, sim, TOKEN)),
                            *window)
    assert code == 0, err
    assert "warning" not in err and len(out.splitlines()) > 2
    assert any(r.path == "/api/user/me" for r in sim.server.requests)


def test_report_and_backfill_refuse_a_scoped_token(
        scoped: tuple[Sim, str], tmp_path: Path, run: Run) -> None:
    sim, _ = scoped
    path = str(write_config(tmp_path, sim, SCOPED))
    window = ["--from", iso(T0 + H), "--to", iso(T0 + 2 * H)]
    code, _, err = run("report", "--config.file", path, *window)
    assert code == 2 and "'payments'" in one_line(err, "report")
    code, _, err = run("backfill", "--config.file", path, *window, "--dry-run")
    assert code == 2 and "'payments'" in one_line(err, "backfill")
    assert prometheus_requests(sim) == 0


@pytest.mark.parametrize("status", [403, 404])
def test_a_refused_user_api_is_unknown_and_refused_unless_allowed(
        sim: Sim, tmp_path: Path, run: Run, status: int) -> None:
    window = ["--from", iso(T0 + H), "--to", iso(T0 + 2 * H), "--format", "csv"]
    sim.server.faults.push("/api/user/me", status=status)
    code, _, err = run("report", "--config.file", str(write_config(tmp_path, sim, TOKEN)),
                          *window)
    line = one_line(err, "report")
    assert code == 2 and f"HTTP {status}" in line and "cannot tell" in line
    assert "sysdig.allow_scoped_team" in line and prometheus_requests(sim) == 0

    sim.server.faults.push("/api/user/me", status=status)
    path = write_config(tmp_path, sim, TOKEN, allow_scoped_team=True)
    code, out, err = run("report", "--config.file", str(path), *window)
    assert code == 0 and len(out.splitlines()) > 2, err
    assert any(ln.startswith("warning") and f"HTTP {status}" in ln for ln in err.splitlines()), err


def test_a_refused_team_lookup_falls_back_to_the_team_list(
        scoped: tuple[Sim, str], tmp_path: Path, run: Run) -> None:
    sim, cluster = scoped
    sim.server.faults.push("/api/teams/7", status=403)
    code, _, err = run("report", "--config.file", str(write_config(tmp_path, sim, SCOPED)),
                          "--from", iso(T0 + H), "--to", iso(T0 + 2 * H))
    assert code == 2
    assert f'kube_cluster_name = "{cluster}"' in one_line(err, "report")
    assert [r.path for r in sim.server.requests] == ["/api/user/me", "/api/teams/7", "/api/teams"]
