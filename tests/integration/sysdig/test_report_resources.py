"""`report` over a fleet with GPUs, MIG slices and claims (`FleetSpec(allocations=True)`), with
idle capacity on: every resource has its columns in every format, and each row is what the
records bill, against the simulator's exact truth and the worker's own records."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from chargeback_simulator.allocations import GPU_RESOURCES
from exporter.model import resource_order, unit_of
from exporter.periods import Period, iso
from exporter.pricing import quantize_cost, quantize_quantity
from exporter.records import BILLABLE_ALLOCATIONS, kubernetes_kind
from exporter.report import columns_of
from exporter.wiring import build_pipeline
from tests.rigs.sim import T0, TOKEN, H, Run, Sim

WINDOW = ["--from", iso(T0), "--to", iso(T0 + 3 * H)]
PRICES = {"cpu": "0.031", "memory": "0.0042", "gpu": "2.48", "gpu.mig-1g.5gb": "0.37",
          "gpu.mig-3g.20gb": "1.09", "storage.standard": "0.00014",
          "storage.premium-ssd": "0.00031", "storage.<none>": "0.0001", "storage.nfs": "0.00022"}
NEW = ("gpu", "gpu.mig-1g.5gb", "gpu.mig-3g.20gb", "storage.<none>", "storage.nfs",
       "storage.premium-ssd", "storage.standard")


def sections(tmp_path: Path, idle: dict[str, Any] | None = None) -> dict[str, Any]:
    card = tmp_path / "card.yaml"
    doc: dict[str, Any] = {"currency": "EUR", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "default": PRICES}]}
    if idle is not None:
        doc["idle"] = idle
    card.write_text(yaml.safe_dump(doc))
    return {"resources": {"gpu": {"resources": GPU_RESOURCES}},
            "pricing": {"rate_card_file": str(card)}, "idle": {"enabled": True}}


def write_config(tmp_path: Path, sim: Sim, more: dict[str, Any]) -> Path:
    doc = {"sysdig": {"url": sim.server.url, "token": TOKEN, "retention_tiers": False,
                      "max_attempts": 2, "max_retry_time": 30},
           "logging": {"format": "text", "level": "ERROR"}, **more}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def gpu_sim(sim_factory: Callable[..., Sim]) -> Sim:
    return sim_factory(allocations=True)


def test_every_resource_has_its_columns_equal_to_the_truth(
        gpu_sim: Sim, tmp_path: Path, run: Run) -> None:
    cfg = write_config(tmp_path, gpu_sim, sections(tmp_path))
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--by",
                         "costcenter-workload", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    header = out.splitlines()[0].split(",")
    # cpu and memory first, as always, then GPUs and storage classes (model.resource_order).
    want_columns = [c for r in ("cpu", "memory", *sorted(NEW, key=resource_order))
                    for c in columns_of(r)]
    assert header[5:-3] == want_columns
    assert "storage.standard_usage_gib_hours" not in header  # claims have no usage measured
    truth: dict[tuple[str, str, str, str], dict[str, Decimal]] = {}
    cost: dict[tuple[str, str, str, str], Decimal] = {}
    for h in range(3):
        for key, per in gpu_sim.fleet.ground_truth(T0 + h * H, T0 + (h + 1) * H).items():
            k = (key.cluster, key.namespace, kubernetes_kind(key.kind), key.name)
            sums = truth.setdefault(k, {})
            for res, s in per.items():
                if not s.chargeable:
                    continue
                for column, value in zip(columns_of(res), (s.usage, s.request, s.chargeable)
                                         [-len(columns_of(res)):], strict=True):
                    sums[column] = sums.get(column, Decimal(0)) + quantize_quantity(value)
                cost[k] = cost.get(k, Decimal(0)) + quantize_cost(
                    quantize_quantity(s.chargeable) * Decimal(PRICES[res]))
    got = {(r["cluster"], r["namespace"], r["workload_kind"], r["workload"]): r for r in rows}
    idle = {k: r for k, r in got.items() if k[1] == "__idle__"}
    assert len(idle) == 2  # one per cluster, cpu and memory only (nodes offer no GPUs)
    assert {k: v for k, v in got.items() if k not in idle}.keys() == truth.keys()
    for k, sums in truth.items():
        for column in want_columns:
            assert got[k][column] == format(sums.get(column, Decimal(0)).quantize(
                Decimal("1e-9")), "f"), (k, column)
        assert got[k]["cost"] == format(cost[k], "f"), k
    assert {c for sums in truth.values() for c in sums if sums[c]} >= {
        columns_of(r)[-1] for r in NEW}
    for r in idle.values():
        assert Decimal(r["cpu_chargeable_core_hours"]) > 0
        assert all(Decimal(r[c]) == 0 for res in NEW for c in columns_of(res))
    # JSON: the same values, with a unit per column.
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--by",
                         "costcenter-workload", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc["units"]) == want_columns
    assert {c: u for c, u in doc["units"].items() if c.startswith(("gpu", "storage"))} == {
        c: unit_of(r) for r in NEW for c in columns_of(r)}
    for r in doc["rows"]:
        k = (r["cluster"], r["namespace"], r["workload_kind"], r["workload"])
        assert {c: r[c] for c in want_columns} == {c: got[k][c] for c in want_columns}
    # The table: a column per resource, its unit in the header.
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW)
    assert code == 0, err
    assert out.count("GPU-Hours") == 3 * 3 and "gpu.mig-1g.5gb" in out
    assert "storage.premium-ssd" in out and "storage.<none>" in out


@pytest.mark.parametrize("idle", [None, {"distribute": "proportional"}, {"distribute": "even"}])
def test_rows_by_costcenter_are_the_billable_records(
        gpu_sim: Sim, tmp_path: Path, run: Run, idle: dict[str, Any] | None) -> None:
    """Each (cluster, cost center) row's chargeable quantities and cost are the sums of its
    billable records (and the idle records nobody was billed), per resource, exactly."""
    more = sections(tmp_path, idle)
    cfg = write_config(tmp_path, gpu_sim, more)
    pipeline = build_pipeline(gpu_sim.config(sysdig={"retention_tiers": False}, **more),
                              gpu_sim.clock)
    want: dict[tuple[str, str], dict[str, Decimal]] = {}
    for h in range(3):
        for r in pipeline.compute(Period(T0 + h * H, T0 + (h + 1) * H)).records:
            if r.allocation not in (*BILLABLE_ALLOCATIONS, "idle"):
                continue
            row = want.setdefault((r.cluster, r.costcenter), {})
            column = columns_of(r.resource)[-1]
            row[column] = row.get(column, Decimal(0)) + r.chargeable_quantity
            row["cost"] = row.get("cost", Decimal(0)) + (r.cost or Decimal(0))
    code, out, err = run("report", "--config.file", str(cfg), *WINDOW, "--format", "json")
    assert code == 0, err
    got = {(r["cluster"], r["costcenter"]): {
        c: Decimal(v) for c, v in r.items() if c == "cost" or "_chargeable_" in c}
        for r in json.loads(out)["rows"]}
    got = {k: {c: v for c, v in row.items() if v or c in want.get(k, {})}
           for k, row in got.items()}
    assert got == want
    assert ("__idle__" in {cc for _, cc in got}) is (idle is None)
