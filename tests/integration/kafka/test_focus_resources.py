"""`export focus` of GPUs, MIG slices, claims and idle capacity: `run --once` against the
simulator's GPU and claim fleet through a real broker, the CSV held to the FOCUS column rules
(tests/rigs/focus_spec.py) and to the records a consumer holds."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from chargeback_simulator.allocations import GPU_RESOURCES
from chargeback_simulator.localbroker import LocalBroker
from exporter.config import load_config
from exporter.focus import CHARGEABLE_ALLOCATIONS, COLUMNS
from exporter.model import family, unit_of
from exporter.periods import iso
from tests.rigs.focus import Run, consumed, read_csv
from tests.rigs.focus_spec import validate
from tests.rigs.sim import T0, TOKEN, H, Sim

PRICES = {"cpu": "0.031", "memory": "0.0042", "gpu": "2.48", "gpu.mig-1g.5gb": "0.37",
          "gpu.mig-3g.20gb": "1.09", "storage.standard": "0.00014",
          "storage.premium-ssd": "0.00031", "storage.<none>": "0.0001", "storage.nfs": "0.00022"}
SPLITS = ("shared-distribution", "idle-distribution")


def configure(tmp_path: Path, sim: Sim, broker: LocalBroker, idle: dict[str, Any] | None) -> Path:
    tag = uuid.uuid4().hex[:8]
    card: dict[str, Any] = {"currency": "EUR", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "default": PRICES}]}
    if idle is not None:
        card["idle"] = idle
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    doc: dict[str, Any] = {
        "sysdig": {"url": sim.server.url, "token": TOKEN, "retention_tiers": False},
        "periods": {"length": "1h", "settle_delay": "2m", "start": iso(T0 + H)},
        "resources": {"gpu": {"resources": GPU_RESOURCES}},
        "pricing": {"rate_card_file": str(tmp_path / "card.yaml")},
        "idle": {"enabled": True},
        "web": {"enabled": False},
        "logging": {"format": "text", "level": "WARNING"},
        "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 1,
                  "replication_factor": 1, "transactional_id": f"focus-{tag}",
                  "transaction_timeout": 30, "connect_timeout": 10,
                  "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                             "checkpoint": f"c-{tag}"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("idle", [None, {"distribute": "proportional"}])
def test_gpus_claims_and_idle_in_focus(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path,
        run: Callable[..., tuple[int, str, str]], export: Callable[..., Run],
        idle: dict[str, Any] | None) -> None:
    sim = sim_factory(allocations=True)
    path = configure(tmp_path, sim, noida, idle)
    code, _, err = run("run", "--once", "--config.file", str(path))
    assert code == 0, err
    out = tmp_path / "focus.csv"
    result = export("--config.file", str(path), "--from", iso(T0 + H), "--to", iso(T0 + 3 * H),
                    "--output", str(out))
    assert result.code == 0, result.err
    header, rows = read_csv(out)
    assert header == list(COLUMNS)
    assert validate(header, rows, allocated=lambda r: r["x_Allocation"] in SPLITS,
                    origin=lambda r: (r["ChargePeriodStart"], r["x_Cluster"], r["x_Resource"],
                                      r["x_Revision"], r["BillingPeriodStart"],
                                      r["x_Allocation"])) == []
    held = {rid: r for rid, r in consumed(load_config(path, environ={})).items()
            if r.allocation in CHARGEABLE_ALLOCATIONS}
    assert {r["x_RecordId"] for r in rows} == set(held)
    seen: set[str] = set()
    for row in rows:
        rec = held[row["x_RecordId"]]
        res = rec.resource
        seen.add(family(res))
        assert row["PricingUnit"] == row["ConsumedUnit"] == unit_of(res) == rec.unit
        assert Decimal(row["PricingQuantity"]) == rec.chargeable_quantity
        assert Decimal(row["BilledCost"]) == rec.cost
        assert Decimal(row["x_UsageQuantity"]) == rec.usage_quantity
        if family(res) in ("cpu", "memory"):
            assert (row["ServiceCategory"], row["ServiceSubcategory"]) == ("Compute", "Containers")
            assert row["ConsumedQuantity"] == row["x_UsageQuantity"]
            assert row["x_GpuProfile"] == row["x_StorageClass"] == ""
        elif family(res) == "gpu":
            assert (row["ServiceCategory"], row["ServiceSubcategory"]) == ("Compute", "Containers")
            # Allocated exclusively: what was consumed is what was held; utilisation is x_.
            assert Decimal(row["ConsumedQuantity"]) == rec.request_quantity
            assert row["x_GpuProfile"] == ("" if res == "gpu" else res.removeprefix("gpu."))
            assert row["x_StorageClass"] == ""
            assert ("GPU" in row["ChargeDescription"]) and "max(request, usage)" not in \
                row["ChargeDescription"]
        else:
            assert (row["ServiceCategory"], row["ServiceSubcategory"]) == (
                "Storage", "Other (Storage)")
            assert Decimal(row["ConsumedQuantity"]) == rec.request_quantity
            assert row["x_StorageClass"] == res.removeprefix("storage.")
            assert row["x_GpuProfile"] == ""
            assert "storage class" in row["ChargeDescription"]
    assert seen == {"cpu", "memory", "gpu", "storage"}
    idle_rows = [r for r in rows if r["x_Allocation"] in ("idle", "idle-distribution")]
    if idle is None:
        assert {r["x_Allocation"] for r in idle_rows} == {"idle"}
        assert len(idle_rows) == 2 * 2 * 2  # periods x clusters x (cpu, memory)
        assert all(r["BillingAccountId"] == "__idle__" for r in idle_rows)
    else:
        assert {r["x_Allocation"] for r in idle_rows} == {"idle-distribution"}
        assert all(r["AllocatedMethodId"] == "idle-proportional/v1" for r in idle_rows)
    # The summary adds up each resource in its unit; memory and storage are not mixed.
    memory = sum(r.chargeable_quantity for r in held.values() if r.resource == "memory")
    assert f"; {memory:f} GiB-Hours;" in result.out
    slices = sum(r.chargeable_quantity for r in held.values() if r.resource == "gpu.mig-1g.5gb")
    assert f"; {slices:f} GPU-Hours gpu.mig-1g.5gb;" in result.out
    # What the file bills is what the records bill, per resource.
    for res in {r.resource for r in held.values()}:
        assert sum(Decimal(r["BilledCost"]) for r in rows if r["x_Resource"] == res) == sum(
            (r.cost or Decimal(0)) for r in held.values() if r.resource == res)
