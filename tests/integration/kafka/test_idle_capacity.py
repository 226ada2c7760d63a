"""Idle capacity end to end: `run --once` through a real broker against the simulator's nodes.

The simulator's nodes come and go inside the periods; its ground truth gives every period's
allocatable exactly, and the workloads' chargeable exactly. Per period, cluster and resource:

- the manifest's `allocatable_quantity` is the truth rounded to 9 decimals;
- the `__idle__` record is that minus the truth's charges, each rounded as its record is;
- the cluster's billable records plus its idle, minus the overcommit, equal its allocatable to
  the last decimal (the identity of exporter/idle.py).

With GPUs (`FleetSpec(allocations=True)`), the same holds for every GPU resource that
`idle.resources` maps to the nodes' allocatable: whole GPUs and each MIG profile.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import yaml

from chargeback_simulator.allocations import GPU_RESOURCES
from chargeback_simulator.localbroker import LocalBroker
from exporter.config import load_config
from exporter.consumer import latest_records, read_manifests, read_records
from exporter.periods import iso
from exporter.records import BILLABLE_ALLOCATIONS, BillingRecord, PeriodManifest
from exporter.wiring import build_codec
from tests.rigs.rate_cards import JANUARY_2026
from tests.rigs.sim import T0, TOKEN, H, Run, Sim

NANO = Decimal("1e-9")
PERIODS = (T0 + H, T0 + 2 * H)


def _q(value: Decimal) -> Decimal:
    return value.quantize(NANO, ROUND_HALF_EVEN)


def _config(tmp_path: Path, sim: Sim, broker: LocalBroker, **sections: Any) -> Path:
    tag = uuid.uuid4().hex[:8]
    doc: dict[str, Any] = {
        "sysdig": {"url": sim.server.url, "token": TOKEN, "retention_tiers": False},
        "periods": {"length": "1h", "settle_delay": "2m", "start": iso(T0 + H)},
        "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 1, "replication_factor": 1,
                  "transactional_id": f"idle-{tag}", "transaction_timeout": 30,
                  "connect_timeout": 10,
                  "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                             "checkpoint": f"c-{tag}"}},
        "web": {"enabled": False},
        "logging": {"format": "text", "level": "WARNING"},
        **sections,
    }
    path = tmp_path / f"config-{tag}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _export(tmp_path: Path, sim: Sim, broker: LocalBroker, run: Run, **sections: Any
            ) -> tuple[list[BillingRecord], list[PeriodManifest]]:
    path = _config(tmp_path, sim, broker, **sections)
    code, _, err = run("run", "--once", "--config.file", str(path))
    assert code == 0, err
    cfg = load_config(environ={}, path=path)
    codec = build_codec(cfg)
    records = list(latest_records(read_records(cfg.kafka, codec)).values())
    return records, list(read_manifests(cfg.kafka, codec))


def _check_against_truth(sim: Sim, records: list[BillingRecord], manifests: list[PeriodManifest],
                         resources: tuple[str, ...] = ("cpu", "memory"),
                         unseen: frozenset[str] = frozenset()) -> tuple[int, int]:
    """Assert the module docstring's rules for `resources` (those of `unseen` are mapped to
    an allocatable name no node offers: allocatable 0); returns (idle figures > 0, overcommit
    figures > 0)."""
    idle_positive = over_positive = 0
    for start in PERIODS:
        allocatable = sim.fleet.allocatable_truth(start, start + H)
        truth = sim.fleet.ground_truth(start, start + H)
        for cluster in sim.fleet.clusters():
            [manifest] = [m for m in manifests
                          if m.cluster == cluster and m.period_start == start * 1000]
            assert [c.resource for c in manifest.capacity] == list(resources)
            for cap in manifest.capacity:
                res = cap.resource
                charged = sum((_q(per[res].chargeable) for key, per in truth.items()
                               if key.cluster == cluster and res in per), Decimal(0))
                expected_a = Decimal(0) if res in unseen else _q(allocatable[cluster][res])
                assert cap.allocatable_quantity == expected_a
                assert cap.charged_quantity == charged
                assert cap.idle_quantity == max(Decimal(0), expected_a - charged)
                assert cap.overcommit_quantity == max(Decimal(0), charged - expected_a)
                mine = [r for r in records if r.cluster == cluster and r.resource == res
                        and r.period_start == start * 1000]
                [idle] = [r for r in mine if r.allocation in ("idle", "idle-source")]
                assert (idle.namespace, idle.workload_kind, idle.workload_name) == (
                    "__idle__", "__idle__", "__idle__")
                assert idle.costcenter == "__idle__" and idle.usage_quantity == 0
                assert idle.chargeable_quantity == cap.idle_quantity
                billable = sum((r.chargeable_quantity for r in mine
                                if r.allocation in ("direct", "shared-distribution")), Decimal(0))
                # The identity, exactly at the record scale.
                assert billable + idle.chargeable_quantity - cap.overcommit_quantity \
                    == cap.allocatable_quantity
                idle_positive += cap.idle_quantity > 0
                over_positive += cap.overcommit_quantity > 0
    return idle_positive, over_positive


def test_idle_capacity_is_the_nodes_allocatable_less_the_charges(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim = sim_factory(clusters=2)
    records, manifests = _export(tmp_path, sim, noida, run, idle={"enabled": True})
    idle_positive, over_positive = _check_against_truth(sim, records, manifests)
    assert idle_positive == 2 * 2 * 2 and over_positive == 0  # periods x clusters x resources
    # Nodes really came and went inside the periods, so the integration per step mattered.
    assert any(T0 + H < n.start < T0 + 3 * H and n.start % H for n in sim.fleet.nodes(T0, T0 + 3 * H))


def test_overcommitted_nodes_give_zero_idle_and_an_overcommit_figure(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim = sim_factory(clusters=2, node_cores=4)  # far less than the workloads are charged
    records, manifests = _export(tmp_path, sim, noida, run, idle={"enabled": True})
    idle_positive, over_positive = _check_against_truth(sim, records, manifests)
    assert (idle_positive, over_positive) == (0, 2 * 2 * 2)
    assert all(r.chargeable_quantity >= 0 for r in records)


def test_without_idle_the_records_are_those_of_before(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim = sim_factory(clusters=2)
    with_idle, _ = _export(tmp_path, sim, noida, run, idle={"enabled": True})
    without, manifests = _export(tmp_path, sim, noida, run)
    assert all(m.capacity == () for m in manifests)
    assert {r.allocation for r in without} == {"direct"}
    # Every record but the idle ones is the same, field for field (same revision and method).
    assert sorted(without, key=lambda r: r.record_id) == sorted(
        (r for r in with_idle if r.allocation != "idle"), key=lambda r: r.record_id)


def test_a_distributed_idle_is_billed_to_cost_centers_in_full(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim = sim_factory(clusters=2)
    card = tmp_path / "card.yaml"
    card.write_text(JANUARY_2026.replace("2026-01-01", "2026-11-01") + "idle: {distribute: proportional}\n")
    records, manifests = _export(tmp_path, sim, noida, run, idle={"enabled": True},
                                 pricing={"rate_card_file": str(card)})
    _check_against_truth(sim, records, manifests)
    for m in manifests:
        for cap in m.capacity:
            mine = [r for r in records if r.cluster == m.cluster and r.resource == cap.resource
                    and r.period_start == m.period_start]
            [idle] = [r for r in mine if r.allocation == "idle-source"]
            shares = [r for r in mine if r.allocation == "idle-distribution"]
            assert {r.costcenter for r in shares} <= {r.costcenter for r in mine
                                                      if r.allocation == "direct"}
            assert sum(r.chargeable_quantity for r in shares) == idle.chargeable_quantity > 0
            assert idle.cost is not None and idle.unit_price == Decimal("0.0310") * (
                cap.resource == "cpu") + Decimal("0.0042") * (cap.resource == "memory")
            assert sum(r.cost for r in shares if r.cost is not None) == idle.cost
            # A team bill (billable records) of the cluster is its whole allocatable.
            bill = sum(r.chargeable_quantity for r in mine if r.allocation in BILLABLE_ALLOCATIONS)
            assert bill == cap.allocatable_quantity
            [total] = [t for t in m.totals if t.resource == cap.resource]
            assert total.chargeable_quantity == bill


GPU_IDLE = {"cpu": "cpu", "memory": "memory", **{v: k for k, v in GPU_RESOURCES.items()}}
GPU_ORDER = ("cpu", "memory", "gpu", "gpu.mig-1g.5gb", "gpu.mig-3g.20gb")


def test_gpu_idle_capacity_is_the_gpu_nodes_allocatable_less_the_gpu_charges(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim = sim_factory(clusters=2, allocations=True)
    gpus = {"resources": {"gpu": {"resources": GPU_RESOURCES}}}
    records, manifests = _export(tmp_path, sim, noida, run, idle={
        "enabled": True, "resources": GPU_IDLE}, **gpus)
    idle_positive, over_positive = _check_against_truth(sim, records, manifests, GPU_ORDER)
    assert idle_positive == 2 * 2 * 5 and over_positive == 0  # periods x clusters x resources
    charged = {r.resource for r in records if r.allocation == "direct"}
    assert set(GPU_ORDER) <= charged
    # GPU nodes came and went inside the periods: idle devices counted per step.
    assert any(n.gpus and T0 + H < n.start < T0 + 3 * H and n.start % H
               for n in sim.fleet.nodes(T0, T0 + 3 * H))
    # cpu and memory, idle included, are those of an export that measures their idle alone.
    plain, _ = _export(tmp_path, sim, noida, run, idle={"enabled": True}, **gpus)
    assert sorted((r for r in records if r.resource in ("cpu", "memory")),
                  key=lambda r: r.record_id) == sorted(
        (r for r in plain if r.resource in ("cpu", "memory")), key=lambda r: r.record_id)


def test_gpu_charges_without_allocatable_are_overcommit_never_dropped(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    """A GPU resource mapped to a name no node offers (a misspelled MIG profile): the
    charges have allocatable 0, so they are overcommit, and the identity still holds."""
    sim = sim_factory(clusters=2, allocations=True)
    names = {**GPU_IDLE, "gpu.mig-3g.20gb": "nvidia_com_mig_3g_40gb"}
    records, manifests = _export(tmp_path, sim, noida, run, idle={
        "enabled": True, "resources": names}, resources={"gpu": {"resources": GPU_RESOURCES}})
    idle_positive, over_positive = _check_against_truth(
        sim, records, manifests, GPU_ORDER, unseen=frozenset({"gpu.mig-3g.20gb"}))
    assert (idle_positive, over_positive) == (2 * 2 * 4, 2 * 2)
