"""Sysdig answering the same series twice, told apart by one label (two kube-state-metrics
replicas both collected, or a collector's failover): claims are billed once, never twice."""

from __future__ import annotations

from chargeback_simulator.allocations import CAPACITY, CLAIM_INFO, MOUNTS
from chargeback_simulator.localbroker import LocalBroker
from exporter.pricing import quantize_quantity
from exporter.wiring import build_codec
from tests.rigs.harness import read_committed
from tests.system.conftest import PERIOD, Sim, worker_for


def test_claim_series_answered_twice_bill_each_claim_once(claims_sim: Sim,
                                                         noida: LocalBroker) -> None:
    for metric in (CAPACITY, CLAIM_INFO, MOUNTS):
        claims_sim.hiding.duplicate_metric(metric, "instance", "kube-state-metrics-replica-2")
    claims_sim.clock.advance(-3600)  # only PERIOD is closed
    worker, cfg, _ = worker_for(claims_sim, noida)
    try:
        assert worker.export_due().exported == (PERIOD,)
    finally:
        worker.close()
    codec = build_codec(cfg)
    records = [codec.decode_record(m.value) for m in read_committed(cfg, cfg.kafka.topics.records)]
    got = {(r.cluster, r.namespace, r.workload_kind.lower(), r.workload_name, r.resource):
           r.chargeable_quantity for r in records if r.resource.startswith("storage.")}
    truth = claims_sim.fleet.ground_truth(PERIOD.start, PERIOD.end)
    want = {(k.cluster, k.namespace, k.kind, k.name, res): quantize_quantity(sums.chargeable)
            for k, per in truth.items() for res, sums in per.items()
            if res.startswith("storage.") and sums.chargeable}
    assert want and got == want
