"""`run --once` through a real broker is exact whichever way Sysdig stamps its answers.

The simulator aligns range answers to the step as Sysdig does (`sysdig`), or stamps them at
`start + k*step` as Prometheus does (`prometheus`). Either way every (period, workload, resource)
of the ground truth is published once, with its exact quantities and one manifest per cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import SimulatorServer
from exporter.clock import SystemClock
from exporter.periods import align_down
from tests.rigs.campaign import TOKEN, CampaignSpec, tune_server, write_config
from tests.rigs.harness import ExporterProcess, check_ledger, last_checkpoint

HOURS = 2
PERIOD = 600


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stamping", ["sysdig", "prometheus"])
def test_run_once_totals_are_exact_under_either_stamping(stamping: str, noida: LocalBroker,
                                                          tmp_path: Path) -> None:
    clock = SystemClock()
    spec = CampaignSpec(seed=7, hours=HOURS, period=PERIOD, producer_extra=(),
                        fleet=FleetSpec(seed=11, clusters=2, namespaces_per_cluster=3,
                                        workloads_per_namespace=4))
    history = (HOURS + 3) * 3600
    fleet = Fleet(spec.fleet, clock=clock, history=history, timelines=((10, history),))
    server = SimulatorServer(fleet, clock, tokens=[TOKEN], stamping=stamping)
    server.start()
    tune_server(server)
    try:
        start = align_down(int(clock.time()) - HOURS * 3600, PERIOD)
        cfg = write_config(tmp_path / "config.yaml", sysdig_url=server.url,
                           bootstrap=noida.bootstrap, start=start, spec=spec,
                           tag=f"stamping-{stamping}")
        proc = ExporterProcess(["run", "--once", "--config.file", str(tmp_path / "config.yaml")],
                               log_path=tmp_path / "exporter.log")
        assert proc.wait(240) == 0, proc.stderr[-2000:]
    finally:
        server.stop()
    end = last_checkpoint(cfg)
    assert end is not None and end - start >= (HOURS - 1) * 3600, (start, end)
    ledger = check_ledger(cfg, fleet, start, end)
    assert ledger.problems == [], ledger.problems[:10]
    assert ledger.records > 0 and ledger.manifests == ledger.periods * 2
