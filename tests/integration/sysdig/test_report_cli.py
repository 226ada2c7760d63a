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

from exporter import cli
from exporter.periods import iso
from exporter.pricing import quantize_cost, quantize_quantity
from exporter.records import KINDS
from tests.rigs.rate_cards import JANUARY_2026
from tests.rigs.sim import T0, TOKEN, H, Sim

WINDOW = ["--from", iso(T0), "--to", iso(T0 + 3 * H)]


def write_config(tmp_path: Path, sim: Sim, **sysdig: object) -> Path:
    doc = {"sysdig": {"url": sim.server.url, "token": TOKEN, "retention_tiers": False,
                      "max_attempts": 2, "max_retry_time": 30, **sysdig},
           "logging": {"format": "text", "level": "ERROR"}}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


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
    total = sum(Decimal(r["cpu_chargeable_core_hours"]) for r in rows)
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
        sim_factory: Callable[..., Sim], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_factory(now=T0 + 6 * H + 300)
    cfg = write_config(tmp_path, sim, retention_tiers=True)
    # Periods starting 5 h, 4 h and 3 h before now: Sysdig keeps 10 s data for 4 h only.
    window = ["--from", iso(T0 + H), "--to", iso(T0 + 4 * H)]
    steps = {T0 + H: 60, T0 + 2 * H: 60, T0 + 3 * H: 10}

    def report(*argv: str) -> tuple[str, str]:
        code = cli.main(["report", "--config.file", str(cfg), *window, *argv], sim.clock)
        out, err = capsys.readouterr()
        assert code == 0, err
        return out, err

    out, err = report("--format", "csv", "--by", "costcenter-workload")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and {r["step_seconds"] for r in rows} <= {"10", "60", "10 60"}
    assert "10 60" in {r["step_seconds"] for r in rows}
    # The same steps as the worker's retention choice: the totals are exact at those steps.
    total = sum(Decimal(r["cpu_chargeable_core_hours"]) for r in rows)
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


QUANTITIES = ("cpu_usage_core_hours", "cpu_request_core_hours", "cpu_chargeable_core_hours",
              "mem_usage_gib_hours", "mem_request_gib_hours", "mem_chargeable_gib_hours")


def record_sums(sim: Sim, periods: int) -> dict[tuple[str, str, str], dict[str, Decimal]]:
    """Per (cluster, namespace, workload): the sums of the records' values (each line rounded
    to the records' 9 decimals), from the simulator's ground truth of each hour."""
    out: dict[tuple[str, str, str], dict[str, Decimal]] = {}
    for h in range(periods):
        for key, per in sim.fleet.ground_truth(T0 + h * H, T0 + (h + 1) * H).items():
            sums = out.setdefault((key.cluster, key.namespace, key.name),
                                  {c: Decimal(0) for c in QUANTITIES})
            for res, unit in (("cpu", "core_hours"), ("memory", "gib_hours")):
                prefix = "cpu" if res == "cpu" else "mem"
                for q in ("usage", "request", "chargeable"):
                    sums[f"{prefix}_{q}_{unit}"] += quantize_quantity(getattr(per[res], q))
    return out


def test_machine_formats_carry_the_records_full_precision(
        sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    truth = record_sums(sim, 3)
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--by",
                         "costcenter-workload", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    for r in rows:
        for c in QUANTITIES:
            assert r[c] == format(truth[(r["cluster"], r["namespace"], r["workload"])][c], "f"), c
            assert len(r[c].partition(".")[2]) == 9, r[c]
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--by",
                         "costcenter-workload", "--format", "json")
    assert code == 0, err
    for r in json.loads(out)["rows"]:
        for c in QUANTITIES:
            assert r[c] == format(truth[(r["cluster"], r["namespace"], r["workload"])][c], "f")
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert code == 0, err
    assert "rounded to 6 decimals" in out


def test_kinds_are_spelled_as_records_spell_them(
        sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    code, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--by",
                       "costcenter-workload", "--format", "csv")
    kinds = {r["workload_kind"] for r in csv.DictReader(io.StringIO(out))}
    assert code == 0 and "Deployment" in kinds and kinds <= set(KINDS.values()), kinds
    code, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--by",
                       "costcenter-workload", "--format", "json")
    assert {r["workload_kind"] for r in json.loads(out)["rows"]} == kinds
    code, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--by", "costcenter-workload")
    assert "Deployment" in out and "deployment" not in out


def test_every_format_names_its_units(sim: Sim, tmp_path: Path,
                                      run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    _, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--format", "csv")
    assert out.splitlines()[0] == "cluster,costcenter," + ",".join(QUANTITIES) + ",step_seconds"
    _, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--format", "json")
    doc = json.loads(out)
    assert doc["units"] == {c: "Core-Hours" if c.startswith("cpu") else "GiB-Hours"
                            for c in QUANTITIES}
    assert all(set(QUANTITIES) <= set(r) for r in doc["rows"])
    _, out, _ = run("report", "--config.file", str(cfg), *WINDOW)
    assert out.count("Core-Hours") == 3 and out.count("GiB-Hours") == 3, out


def test_cost_and_currency_with_a_rate_card_rounded_as_records(
        sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    card = tmp_path / "rate-card.yaml"
    card.write_text(JANUARY_2026)
    doc = yaml.safe_load(cfg.read_text())
    doc["pricing"] = {"rate_card_file": str(card)}
    cfg.write_text(yaml.safe_dump(doc))
    price = {"cpu": Decimal("0.0310"), "memory": Decimal("0.0042")}
    expected: dict[tuple[str, str, str], Decimal] = {}
    for h in range(3):
        for key, per in sim.fleet.ground_truth(T0 + h * H, T0 + (h + 1) * H).items():
            k = (key.cluster, key.namespace, key.name)
            for res in ("cpu", "memory"):
                cost = quantize_cost(quantize_quantity(per[res].chargeable) * price[res])
                expected[k] = expected.get(k, Decimal(0)) + cost
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--by",
                         "costcenter-workload", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and list(rows[0])[-3:] == ["cost", "currency", "step_seconds"]
    for r in rows:
        assert r["currency"] == "EUR"
        assert r["cost"] == format(expected[(r["cluster"], r["namespace"], r["workload"])], "f")
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--format", "json")
    doc = json.loads(out)
    assert doc["currency"] == "EUR" and all(r["currency"] == "EUR" for r in doc["rows"])
    assert sum(Decimal(r["cost"]) for r in doc["rows"]) == sum(expected.values())
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert code == 0 and "Cost (EUR)" in out and str(sum(expected.values())) in out


def test_no_cost_columns_without_a_rate_card(sim: Sim, tmp_path: Path,
                                            run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    _, out, _ = run("report", "--config.file", str(cfg), *WINDOW, "--format", "json")
    doc = json.loads(out)
    assert "currency" not in doc and all("cost" not in r for r in doc["rows"])
    _, out, _ = run("report", "--config.file", str(cfg), *WINDOW)
    assert "Cost" not in out


def test_coverage_follows_the_format(sim: Sim, tmp_path: Path,
                                     run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--coverage",
                         "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["from"] == iso(T0) and doc["to"] == iso(T0 + 3 * H) and doc["step_seconds"] == [10]
    clusters = {c["cluster"] for c in doc["clusters"]}
    assert clusters == {k.cluster for k in sim.fleet.ground_truth(T0, T0 + 3 * H)}
    first = doc["clusters"][0]
    assert {(s["org_key"], s["resource"]) for s in first["keys"]} == {
        (k, r) for k in ("costcenter", "businessunit", "department", "team")
        for r in ("cpu", "memory")}
    offenders = [o for c in doc["clusters"] for o in c["top_offenders"]]
    assert offenders and {o["workload_kind"] for o in offenders} <= set(KINDS.values())
    assert all(o["unit"] in ("Core-Hours", "GiB-Hours") and o["missing_keys"] for o in offenders)
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--coverage")
    assert code == 0, err
    assert "Label coverage" in out and "Top workloads without valid org labels" in out
    assert "at 10s steps" in out
    assert " Deployment " in out and "deployment" not in out
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--coverage",
                         "--format", "csv")
    assert_one_line(code, err, "--coverage", "csv")
    assert code == 2


def test_a_configured_coarse_resolution_is_not_blamed_on_retention(
        sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    cfg = write_config(tmp_path, sim)
    doc = yaml.safe_load(cfg.read_text())
    doc["periods"] = {"resolution": 60}
    cfg.write_text(yaml.safe_dump(doc))
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["step_seconds"] == [60]
    assert [ln for ln in err.splitlines() if "coarser than 10s" in ln] == [
        "warning: 3 of 3 periods measured at 60s steps, coarser than 10s: periods.resolution "
        "is 60s"]



def test_a_broken_rate_card_is_one_line_before_sysdig_is_asked(
        tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    card = tmp_path / "rate-card.yaml"
    card.write_text(JANUARY_2026.replace('"0.0310"', '"-1"'))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"sysdig": {"url": "http://127.0.0.1:9", "token": TOKEN},
                                   "pricing": {"rate_card_file": str(card)}}))
    code, _, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert_one_line(code, err, str(card))
    assert code == 2 and "127.0.0.1:9" not in err


def test_the_report_bills_as_the_records_do_with_shared_costs(
        sim: Sim, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    """With shared costs on, each cluster's cost center's chargeable quantities and cost are the
    sums of its billable records (direct and shared-distribution): the report distributes as the worker
    does."""
    from exporter.periods import Period
    from exporter.records import BILLABLE_ALLOCATIONS
    from exporter.wiring import build_pipeline

    shared_ns = sorted({w.key.namespace for w in sim.fleet.workloads()})[0]
    card = tmp_path / "rate-card.yaml"
    card.write_text(JANUARY_2026)
    cfg = write_config(tmp_path, sim)
    doc = yaml.safe_load(cfg.read_text())
    doc["pricing"] = {"rate_card_file": str(card)}
    doc["shared_costs"] = {"enabled": True, "namespaces": [shared_ns]}
    cfg.write_text(yaml.safe_dump(doc))
    want: dict[tuple[str, str], dict[str, Decimal]] = {}
    pipeline = build_pipeline(sim.config(pricing={"rate_card_file": str(card)},
                                         shared_costs={"enabled": True, "namespaces": [shared_ns]},
                                         sysdig={"retention_tiers": False}), sim.clock)
    for h in range(3):
        for r in pipeline.compute(Period(T0 + h * H, T0 + (h + 1) * H)).records:
            if r.allocation not in BILLABLE_ALLOCATIONS:
                continue
            row = want.setdefault((r.cluster, r.costcenter),
                                  {"cpu": Decimal(0), "memory": Decimal(0), "cost": Decimal(0)})
            row[r.resource] += r.chargeable_quantity
            row["cost"] += r.cost or Decimal(0)
    assert any(r.namespace == shared_ns for r in pipeline.compute(Period(T0, T0 + H)).records)
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--by", "costcenter",
                         "--format", "json")
    assert code == 0, err
    got = {(r["cluster"], r["costcenter"]): {"cpu": Decimal(r["cpu_chargeable_core_hours"]),
                             "memory": Decimal(r["mem_chargeable_gib_hours"]),
                             "cost": Decimal(r["cost"])} for r in json.loads(out)["rows"]}
    zero = {"cpu": Decimal(0), "memory": Decimal(0), "cost": Decimal(0)}
    # A cost center whose lines were all shared shows its usage where it was measured, and
    # bills nothing.
    only_shared = {k for k in got if k not in want}
    assert all(got[k] == zero for k in only_shared)
    assert {k: v for k, v in got.items() if k not in only_shared} == want
