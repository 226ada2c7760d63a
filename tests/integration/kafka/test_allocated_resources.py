"""GPUs (whole and MIG slices) and persistent volume claims end to end: `run --once` against the
simulator's GPU and claim fleet, records read back from a real broker, held to the exact truth.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from chargeback_simulator.allocations import GPU_RESOURCES, Claim
from chargeback_simulator.localbroker import LocalBroker
from exporter.config import load_config
from exporter.model import ORG_KEYS, RESOURCES, UNALLOCATED
from exporter.money import CONTEXT
from exporter.periods import iso
from exporter.pricing import quantize_cost, quantize_quantity
from exporter.records import BillingRecord, PeriodManifest
from exporter.wiring import build_codec
from tests.rigs.harness import read_committed
from tests.rigs.sim import T0, TOKEN, H, Run, Sim

PRICES = {"cpu": "0.031", "memory": "0.0042", "gpu": "2.48", "gpu.mig-1g.5gb": "0.37",
          "gpu.mig-3g.20gb": "1.09", "storage.standard": "0.00014",
          "storage.premium-ssd": "0.00031", "storage.<none>": "0.0001", "storage.nfs": "0.00022"}


def write(tmp_path: Path, sim: Sim, broker: LocalBroker, prices: dict[str, str]) -> Path:
    tag = uuid.uuid4().hex[:8]
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"currency": "EUR", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "default": prices}]}))
    doc: dict[str, Any] = {
        "sysdig": {"url": sim.server.url, "token": TOKEN, "retention_tiers": False,
                   "max_attempts": 2, "max_retry_time": 30},
        "periods": {"length": "1h", "settle_delay": "2m", "start": iso(T0 + H)},
        "resources": {"gpu": {"resources": GPU_RESOURCES}},
        "pricing": {"rate_card_file": str(card)},
        "web": {"enabled": False},
        "logging": {"format": "text", "level": "WARNING"},
        "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 1,
                  "replication_factor": 1, "transactional_id": f"alloc-{tag}",
                  "transaction_timeout": 30, "connect_timeout": 10,
                  "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}",
                             "checkpoint": f"c-{tag}"}},
    }
    path = tmp_path / f"config-{tag}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def published(path: Path) -> tuple[list[BillingRecord], list[PeriodManifest]]:
    cfg = load_config(path, environ={})
    codec = build_codec(cfg)
    return ([codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)],
            [codec.decode_manifest(m.value)
             for m in read_committed(cfg, cfg.kafka.topics.manifests)])


@pytest.fixture
def gpu_sim(sim_factory: Callable[..., Sim]) -> Sim:
    return sim_factory(allocations=True)


def test_gpus_and_claims_are_billed_exactly_as_the_truth(
        gpu_sim: Sim, noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    code, _, err = run("run", "--once", "--config.file",
                       str(write(tmp_path, gpu_sim, noida, PRICES)))
    assert code == 0, err
    records, manifests = published(tmp_path / next(
        p.name for p in tmp_path.iterdir() if p.name.startswith("config-")))
    by_period: dict[int, dict[tuple[str, str, str, str, str], BillingRecord]] = {}
    for r in records:
        assert r.allocation == "direct"
        by_period.setdefault(r.period_start // 1000, {})[
            (r.cluster, r.namespace, r.workload_kind.lower(), r.workload_name, r.resource)] = r
    assert sorted(by_period) == [T0 + H, T0 + 2 * H]
    seen: set[str] = set()
    for start, got in by_period.items():
        truth = gpu_sim.fleet.ground_truth(start, start + H)
        want = {(k.cluster, k.namespace, k.kind, k.name, res): sums
                for k, per in truth.items() for res, sums in per.items()
                if res not in RESOURCES and sums.chargeable}
        mine = {k: r for k, r in got.items() if r.resource not in RESOURCES}
        assert mine.keys() == want.keys()
        for key, sums in want.items():
            r = mine[key]
            assert (r.usage_quantity, r.request_quantity, r.chargeable_quantity) == tuple(
                quantize_quantity(v) for v in (sums.usage, sums.request, sums.chargeable)), key
            assert r.unit == ("GPU-Hours" if r.resource.startswith("gpu") else "GiB-Hours")
            assert r.unit_price == Decimal(PRICES[r.resource])
            assert r.cost == quantize_cost(r.chargeable_quantity * r.unit_price)
            seen.add(r.resource)
        # cpu and memory of the same fleet are still the truth
        for k, per in truth.items():
            for res in RESOURCES:
                if res in per and (k.cluster, k.namespace, k.kind, k.name, res) in got:
                    r = got[(k.cluster, k.namespace, k.kind, k.name, res)]
                    assert r.chargeable_quantity == quantize_quantity(per[res].chargeable)
    assert seen == {"gpu", "gpu.mig-1g.5gb", "gpu.mig-3g.20gb", "storage.standard",
                    "storage.premium-ssd", "storage.<none>", "storage.nfs"}
    # A claim no pod mounts is charged on its own, to its namespace's labels.
    alone = [r for r in records if r.workload_kind == "PersistentVolumeClaim"]
    assert alone and all(r.org_label_sources.get("costcenter") in ("namespace", "unallocated")
                         for r in alone)
    # The seven-minute job's GPU is charged for its 42 running steps only, not while Completed.
    job = gpu_sim.fleet.special["seven_minute_job"]
    for got in by_period.values():
        r = got[(job.cluster, job.namespace, "job", job.name, "gpu")]
        assert r.request_quantity == quantize_quantity(Decimal(42 * 10) / 3600)
    # Manifests total every resource exactly.
    allocated_seen: set[str] = set()
    for m in manifests:
        recs = [r for r in records if r.cluster == m.cluster and r.period_start == m.period_start]
        for t in m.totals:
            assert t.chargeable_quantity == sum(
                (r.chargeable_quantity for r in recs if r.resource == t.resource), Decimal(0))
        assert {t.resource for t in m.totals} == {r.resource for r in recs}
        # Label coverage covers every resource as it covers cpu and memory.
        shares = {(s.org_key, s.resource): s for s in m.unallocated_share}
        assert shares.keys() == {(k, t.resource) for k in ORG_KEYS for t in m.totals}
        for (key, resource), s in shares.items():
            of = [r for r in recs if r.resource == resource]
            total = sum((r.chargeable_quantity for r in of), Decimal(0))
            missing = sum((r.chargeable_quantity for r in of
                           if getattr(r, key) == UNALLOCATED), Decimal(0))
            assert abs(s.unallocated_share - (missing / total if total else 0)) <= Decimal(
                "0.000001"), (m.cluster, key, resource)
        unallocated_claims = {r.resource for r in recs
                              if r.resource.startswith("storage.") and r.costcenter == UNALLOCATED}
        assert unallocated_claims <= {o.resource for o in m.top_offenders}
        allocated_seen.update(r for _, r in shares if not r.startswith(("cpu", "memory")))
    assert {"gpu", "storage.standard", "storage.<none>"} <= allocated_seen


def test_a_gpu_profile_without_a_price_bills_nothing(
        gpu_sim: Sim, noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    prices = {k: v for k, v in PRICES.items() if k != "gpu.mig-3g.20gb"}
    path = write(tmp_path, gpu_sim, noida, prices)
    code, _, err = run("run", "--once", "--config.file", str(path))
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("chargeback-exporter run: error:")]
    assert len(lines) == 1 and "no price for gpu.mig-3g.20gb" in lines[0], err
    assert published(path) == ([], [])


def test_a_claim_mounted_by_several_workloads_is_split_into_parts_that_add_up(
        gpu_sim: Sim, noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    path = write(tmp_path, gpu_sim, noida, PRICES)
    code, _, err = run("run", "--once", "--config.file", str(path))
    assert code == 0, err
    records, _ = published(path)
    assert gpu_sim.fleet.allocations is not None
    shared = [c for c in gpu_sim.fleet.allocations.claims if c.shared_by]
    assert shared
    uneven = 0
    for claim in shared:
        for start in (T0 + H, T0 + 2 * H):
            # The namespace's `nfs` lines are this claim's parts: its deployments' and its own.
            parts = {r.workload_name: r.chargeable_quantity for r in records
                     if (r.cluster, r.namespace, r.resource) == (claim.cluster, claim.namespace,
                                                                 "storage.nfs")
                     and r.period_start == start * 1000}
            assert set(parts) <= {w.name for w in claim.shared_by} | {claim.name}
            # Exact GiB-Hours of each part, step by step (capacity / holders at that step).
            exact = _exact_parts(gpu_sim, claim, start)
            assert set(parts) == set(exact)
            whole = quantize_quantity(_decimal(sum(exact.values(), Fraction(0))))
            assert sum(parts.values(), Decimal(0)) == whole, (claim.name, start)
            for name, part in parts.items():  # each part within one unit of its exact share
                assert abs(Fraction(part) - exact[name]) < Fraction(1, 10**9), (claim.name, name)
            uneven += any(quantize_quantity(_decimal(v)) != parts[n] for n, v in exact.items())
    assert uneven, "a split that rounds each part on its own would not add up: exercised"


def _decimal(value: Fraction) -> Decimal:
    return CONTEXT.divide(Decimal(value.numerator), Decimal(value.denominator))


def _exact_parts(sim: Sim, claim: Claim, start: int) -> dict[str, Fraction]:
    """GiB-Hours of each part of `claim` in the hour from `start`, step by step."""
    step = 10
    holders: dict[str, set[int]] = {}
    for pod in sim.fleet.pods(start, start + H):
        if pod.workload in claim.shared_by:
            lo, hi = max(pod.start, start), min(pod.end, start + H)
            holders.setdefault(pod.workload.name, set()).update(range(lo, hi, step))
    out: dict[str, Fraction] = {}
    for t in range(start, start + H, step):
        mounting = [n for n, ts in holders.items() if t in ts]
        for n in mounting or [claim.name]:
            out[n] = out.get(n, Fraction(0)) + Fraction(claim.gib * step,
                                                        3600 * len(mounting or [1]))
    return out
