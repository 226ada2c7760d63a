"""`run --once` through a real broker against a Sysdig whose service limits a whole-fleet query
exceeds: the exporter splits its queries by cluster group and publishes exactly the ground truth,
or holds the period when one cluster alone is beyond a limit; it never publishes a short bill."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import SimulatorServer
from exporter.config import load_config
from tests.integration.kafka.test_team_scope import one_line, write_config
from tests.rigs.harness import check_ledger, read_committed
from tests.rigs.sim import T0, TOKEN, H, LateCluster, Run, Sim

PRECOUNT = "sum by (kube_cluster_name) (count by (kube_cluster_name)"


def fleet_over_the_cap(sim_factory: Callable[..., Sim]) -> tuple[Sim, int]:
    """Four clusters; Sysdig caps answers (silently, as it does) at twice the workloads of the
    largest cluster: below what a query over the whole fleet returns."""
    sim = sim_factory(seed=11, clusters=4, namespaces_per_cluster=2, workloads_per_namespace=3)
    per_cluster = Counter(w.key.cluster for w in sim.fleet.workloads())
    assert len(per_cluster) == 4
    cap = 2 * max(per_cluster.values())
    assert sum(per_cluster.values()) > cap
    sim.server.segment_cap = cap
    return sim, cap


def test_run_once_splits_what_a_whole_fleet_query_would_have_cut_and_bills_exactly(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim, cap = fleet_over_the_cap(sim_factory)
    # The pre-count answers as if every cluster were tiny (late data, say): one group is made,
    # its answers are cut at the cap, and the source must notice and split.
    counts = {w.key.cluster for w in sim.fleet.workloads()}
    for hour in (1, 2):
        at = T0 + (hour + 1) * H - 5
        sim.server.faults.push("/prometheus", status=200, query=PRECOUNT, body={
            "status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"kube_cluster_name": c}, "value": [at, "1"]} for c in sorted(counts)]}})
    path = write_config(tmp_path, sim, TOKEN, noida, limits={"segments": cap, "margin": 0.05},
                        group_series=int(cap * 0.95))
    code, _, err = run("run", "--once", "--config.file", str(path))
    assert code == 0, err
    assert sim.server.faults.pending() == 0
    capped = [s for s in sim.server.stats if s.series > cap]
    assert capped, "a group's answer reached the cap: the split was needed"
    cfg = load_config(path, environ={})
    ledger = check_ledger(cfg, sim.fleet, T0 + H, T0 + 3 * H)
    assert ledger.problems == [] and ledger.periods == 2 and ledger.records > 0


def test_run_once_holds_a_period_when_one_cluster_alone_is_past_a_limit(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    sim, _ = fleet_over_the_cap(sim_factory)
    # Above the pre-count's one series per cluster, below any one cluster's workloads.
    sim.server.segment_cap = 5
    path = write_config(tmp_path, sim, TOKEN, noida, limits={"segments": 5, "margin": 0.5},
                        group_series=1)
    code, _, err = run("run", "--once", "--config.file", str(path))
    assert code != 0
    line = one_line(err, "run")
    assert "alone reaches a Sysdig service limit" in line and "held" in line
    cfg = load_config(path, environ={})
    assert read_committed(cfg, cfg.kafka.topics.records) == []


def test_run_once_bills_a_cluster_that_joins_between_its_periods_exactly(
        sim_factory: Callable[..., Sim], noida: LocalBroker, tmp_path: Path, run: Run) -> None:
    """The second period's groups are planned from the first period's pre-count, which did not
    show the new cluster: its own pre-count does, and the cluster gets a group of its own."""
    sim = sim_factory(seed=11, clusters=3, namespaces_per_cluster=2, workloads_per_namespace=2)
    late = sorted(sim.fleet.clusters())[0]
    sim.fleet = LateCluster(sim.fleet, late, since=T0 + 2 * H)  # type: ignore[assignment]
    with SimulatorServer(sim.fleet, sim.clock, tokens=[TOKEN]) as server:
        sim.server = server
        path = write_config(tmp_path, sim, TOKEN, noida)
        code, _, err = run("run", "--once", "--config.file", str(path))
        assert code == 0, err
        cfg = load_config(path, environ={})
        ledger = check_ledger(cfg, sim.fleet, T0 + H, T0 + 3 * H)  # type: ignore[arg-type]
        # The second period's plan had no room for it: it was asked for in a group of its own.
        assert any(f'kube_cluster_name=~"{late}"' in s.query for s in server.stats)
    # Exactly the ground truth: nothing of the cluster in the first period, all of it after.
    assert ledger.problems == [] and ledger.periods == 2 and ledger.records > 0
    assert any(k.cluster == late for k in sim.fleet.ground_truth(T0 + 2 * H, T0 + 3 * H))
    assert not any(k.cluster == late for k in sim.fleet.ground_truth(T0 + H, T0 + 2 * H))
