"""Pricing and shared costs through the real pipeline on simulator data: totals conserved."""

from __future__ import annotations

from decimal import Decimal

from exporter.periods import Period
from exporter.records import BILLABLE_ALLOCATIONS
from exporter.wiring import build_pipeline
from tests.rigs.paths import ROOT
from tests.rigs.sim import T0, H, Sim

CARD = ROOT / "examples" / "rate-card.yaml"


def test_shared_namespace_is_distributed_and_totals_conserved(sim: Sim) -> None:
    shared_ns = sorted({w.key.namespace for w in sim.fleet.workloads()})[0]
    period = Period(T0 + H, T0 + 2 * H)
    plain = build_pipeline(sim.config(), sim.clock).compute(period)
    cfg = sim.config(pricing={"rate_card_file": str(CARD)},
                     shared_costs={"enabled": True, "namespaces": [shared_ns]})
    result = build_pipeline(cfg, sim.clock).compute(period)
    recs = result.records
    sources = [r for r in recs if r.allocation == "shared-source"]
    shares = [r for r in recs if r.allocation == "shared-distribution"]
    assert sources and shares
    assert all(r.namespace == shared_ns for r in sources)
    assert all(r.namespace != shared_ns for r in shares)
    for cluster in {r.cluster for r in sources}:
        for res in ("cpu", "memory"):
            before = sum((r.chargeable_quantity for r in plain.records
                          if r.cluster == cluster and r.resource == res), Decimal(0))
            billable = [r for r in recs if r.cluster == cluster and r.resource == res
                        and r.allocation in BILLABLE_ALLOCATIONS]
            after = sum((r.chargeable_quantity for r in billable), Decimal(0))
            assert after == before, (cluster, res)  # exact, to the last decimal
            src_cost = sum((r.cost or Decimal(0) for r in sources
                            if r.cluster == cluster and r.resource == res), Decimal(0))
            dist_cost = sum((r.cost or Decimal(0) for r in shares
                             if r.cluster == cluster and r.resource == res), Decimal(0))
            assert dist_cost == src_cost
    # manifests sum the billable records only
    for m in result.manifests:
        for t in m.totals:
            billable = [r for r in recs if r.cluster == m.cluster and r.resource == t.resource
                        and r.allocation in BILLABLE_ALLOCATIONS]
            assert t.chargeable_quantity == sum((r.chargeable_quantity for r in billable), Decimal(0))
            assert t.cost == sum((r.cost or Decimal(0) for r in billable), Decimal(0))
    assert {r.currency for r in recs} == {"EUR"}
