"""`chargeback-exporter report` end to end, and one clear line for every kind of bad input."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from exporter import cli, commands
from exporter.clock import FakeClock
from exporter.periods import iso
from tests.integration.conftest import T0, TOKEN, H, Sim

pytestmark = pytest.mark.integration
WINDOW = ["--from", iso(T0), "--to", iso(T0 + 3 * H)]


def write_config(tmp_path: Path, sim: Sim, **sysdig: object) -> Path:
    doc = {"sysdig": {"url": sim.server.url, "token": TOKEN, "retention_tiers": False,
                      "max_attempts": 2, "max_retry_time": 30, **sysdig},
           "logging": {"format": "text", "level": "ERROR"}}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> Callable[..., tuple[int, str, str]]:
    clock = FakeClock(T0 + 3 * H + 300)
    monkeypatch.setattr(commands, "SystemClock", lambda: clock)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_report_csv_has_every_group_and_exact_totals(sim: Sim, tmp_path: Path,
                                                     run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--by", "costcenter-workload",
                         "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    truth_keys = {(k.cluster, k.namespace, k.name) for k in sim.fleet.ground_truth(T0, T0 + 3 * H)}
    assert {(r["cluster"], r["namespace"], r["workload"]) for r in rows} == truth_keys
    assert len(rows) > 10  # no top-10 truncation
    total = sum(Decimal(r["cpu_chargeable"]) for r in rows)
    exact = sum(
        (per["cpu"].chargeable for h in range(3)
         for per in sim.fleet.ground_truth(T0 + h * H, T0 + (h + 1) * H).values()),
        Decimal(0))
    assert abs(total - exact) <= Decimal("0.000001") * len(rows)


def test_report_json_and_table(sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    code, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--by", "org", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["group_by"] == "org" and doc["from"] == iso(T0)
    assert any(r["businessunit"] == "__unallocated__" for r in doc["rows"])
    code, out, _ = run("report", "--config.file", str(cfg), *WINDOW)
    assert code == 0 and "TOTAL" in out and "costcenter" in out


def test_report_coverage(sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    code, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--coverage")
    assert code == 0 and "costcenter" in out


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert TOKEN not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_wrong_token(sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim, token="not-the-token")
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert_one_line(code, err, "HTTP 401", "wrong or expired token")
    assert "not-the-token" not in err


def test_forbidden_token(sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim, token="read-only-token")
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert_one_line(code, err, "HTTP 403")


def test_unreachable(sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim, url="http://127.0.0.1:9")
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert_one_line(code, err, "unreachable", "127.0.0.1:9")


@pytest.mark.parametrize(("status", "needle"), [(429, "rate limited"), (503, "HTTP 503"),
                                                (500, "HTTP 500")])
def test_throttled_or_failing_after_retries(sim: Sim, tmp_path: Path, status: int, needle: str,
                                            run: Callable[..., tuple[int, str, str]]) -> None:
    sim.server.faults.push("/prometheus", status=status, count=1000,
                           headers={"Retry-After": "1"} if status == 429 else None)
    cfg = write_config(tmp_path, sim)
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert_one_line(code, err, needle)


def test_transient_failures_are_retried(sim: Sim, tmp_path: Path,
                                        run: Callable[..., tuple[int, str, str]]) -> None:
    sim.server.faults.push("/prometheus", status=502, count=1)
    sim.server.faults.push("/prometheus", status=429, headers={"Retry-After": "2"}, count=1)
    cfg = write_config(tmp_path, sim, max_attempts=3)
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--format", "csv")
    assert code == 0, err
    assert out.startswith("cluster,costcenter")


@pytest.mark.parametrize(("raw", "needle"), [(b"<html>oops</html>", "not JSON"),
                                             (b'{"status":"success","data":', "not JSON"),
                                             (b'{"status":"success","data":{"resultType":"matrix"}}',
                                              "data.result")])
def test_malformed_response(sim: Sim, tmp_path: Path, raw: bytes, needle: str,
                            run: Callable[..., tuple[int, str, str]]) -> None:
    sim.server.faults.push("/prometheus", status=200, body=raw, count=1000)
    cfg = write_config(tmp_path, sim)
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert_one_line(code, err, "malformed", needle)


def test_one_truncated_body_is_retried(sim: Sim, tmp_path: Path,
                                       run: Callable[..., tuple[int, str, str]]) -> None:
    sim.server.faults.push("/prometheus", status=200, body=b"{\"status\":\"succ", count=1)
    cfg = write_config(tmp_path, sim)
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW, "--format", "json")
    assert code == 0, err


def test_rejected_query(sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    sim.server.faults.push("/prometheus", status=400, count=1,
                           body={"status": "error", "errorType": "bad_data", "error": "parse error"})
    cfg = write_config(tmp_path, sim)
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert_one_line(code, err, "query rejected", "HTTP 400", "parse error")


def test_unknown_config_key(sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    cfg.write_text(cfg.read_text() + "sysdgi:\n  x: 1\n")
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert code == 2
    assert_one_line(code, err, "sysdgi: unknown key", str(cfg))


def test_report_states_its_steps_and_warns_when_coarser_than_10s(
        sim_factory: Callable[..., Sim], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory(now=T0 + 6 * H + 300)
    monkeypatch.setattr(commands, "SystemClock", lambda: sim.clock)
    cfg = write_config(tmp_path, sim, retention_tiers=True)
    # Periods starting 5 h, 4 h and 3 h before now: Sysdig keeps 10 s data for 4 h only.
    window = ["--from", iso(T0 + H), "--to", iso(T0 + 4 * H)]
    steps = {T0 + H: 60, T0 + 2 * H: 60, T0 + 3 * H: 10}

    def report(*argv: str) -> tuple[str, str]:
        code = cli.main(["report", "--config.file", str(cfg), *window, *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out, err

    out, err = report("--format", "csv", "--by", "costcenter-workload")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and {r["step_seconds"] for r in rows} <= {"10", "60", "10 60"}
    assert "10 60" in {r["step_seconds"] for r in rows}
    # The same steps as the worker's retention choice: the totals are exact at those steps.
    total = sum(Decimal(r["cpu_chargeable"]) for r in rows)
    exact = sum((per["cpu"].chargeable for start, step in steps.items()
                 for per in sim.fleet.ground_truth(start, start + H, resolution=step).values()),
                Decimal(0))
    assert abs(total - exact) <= Decimal("0.000001") * len(rows)
    warning = [ln for ln in err.splitlines() if "coarser than 10s" in ln]
    assert warning == ["warning: 2 of 3 periods measured at 60s steps, coarser than 10s: "
                       "Sysdig keeps no 10s data for them any more (retention)"]

    out, err = report("--format", "json")
    doc = json.loads(out)
    assert doc["step_seconds"] == [10, 60]
    assert all(r["step_seconds"] for r in doc["rows"])
    assert "coarser than 10s" in err

    out, err = report()
    assert "at 10s and 60s steps" in out
    assert "coarser than 10s" in err


def test_report_at_10s_steps_does_not_warn(sim: Sim, tmp_path: Path,
                                           run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim, retention_tiers=True)
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["step_seconds"] == [10]
    assert "coarser" not in err
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert code == 0 and "at 10s steps" in out and "coarser" not in err


def test_a_window_error_names_the_command_once(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('sysdig: {token: t, url: "http://127.0.0.1:9"}\n')
    code = cli.main(["report", "--config.file", str(path), "--from", "2026-11-01T00:00:00Z"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.count("report:") == 1, err


@pytest.mark.parametrize("argv", [["report", "--format", "xml"], ["report", "--by", "team"],
                                  ["report", "--no-such-flag"], ["no-such-command"]])
def test_a_usage_error_is_one_line_without_the_usage_block(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith("chargeback-exporter") and ": error: " in err
