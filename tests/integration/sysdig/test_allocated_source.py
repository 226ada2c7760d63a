"""GPUs through the real sdcclient against the simulator: other vendors' resource names through
the configured mapping, and requests of pods that do not run (Pending, Completed) never billed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal

import pytest

from chargeback_simulator.allocations import GPU_RESOURCES, STEP
from chargeback_simulator.fleet import Fleet
from chargeback_simulator.series import LabelMatcher, SeriesSet
from chargeback_simulator.server import SimulatorServer
from exporter.model import ChargeLine, WorkloadKey
from exporter.money import CONTEXT
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pipeline import charge_lines
from exporter.wiring import build_source
from tests.rigs.sim import T0, TOKEN, H, Sim


class OtherVendor:
    """The fleet with its whole GPUs requested as AMD's (`amd.com/gpu`, in kube-state-metrics
    v2 spelling `amd_com_gpu`): the same series under another `resource` name."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        # The simulator knows NVIDIA's name: ask it for that, answer with AMD's.
        asked = [LabelMatcher.of(m.name, m.op, _to_nvidia(m.value)) if m.name == "resource"
                 else m for m in matchers]
        data = self.fleet.select(asked, start_ms, end_ms)
        labels = [{**lb, "resource": "amd_com_gpu"} if lb.get("resource") == "nvidia_com_gpu"
                  else lb for lb in data.labels]
        keep = [i for i, lb in enumerate(labels)
                if all(m.matches(lb.get(m.name)) for m in matchers)]
        return SeriesSet([labels[i] for i in keep], data.ts, data.values[keep])


def _to_nvidia(value: str) -> str:
    return value.replace("amd_com_gpu", "nvidia_com_gpu")


@pytest.fixture
def gpu_sim(sim_factory: Callable[..., Sim]) -> Sim:
    return sim_factory(allocations=True)


@pytest.fixture
def amd(gpu_sim: Sim) -> Iterator[SimulatorServer]:
    with SimulatorServer(OtherVendor(gpu_sim.fleet), gpu_sim.clock, tokens=[TOKEN]) as server:
        yield server


def lines(sim: Sim, period: Period, url: str | None = None,
          gpus: dict[str, str] | None = None) -> dict[tuple[WorkloadKey, str], ChargeLine]:
    cfg = sim.config(sysdig={"url": url or sim.server.url},
                     resources={"gpu": {"resources": gpus or dict(GPU_RESOURCES)}})
    usage = build_source(cfg, sim.clock).fetch(period)
    return {(ln.workload, ln.resource): ln for ln in charge_lines(usage, OrgModel(cfg.org))}


PERIOD = Period(T0 + H, T0 + 2 * H)


def test_another_vendors_gpus_are_billed_through_the_configured_name(
        gpu_sim: Sim, amd: SimulatorServer) -> None:
    nvidia = lines(gpu_sim, PERIOD)
    whole = {k: ln for k, ln in nvidia.items() if k[1] == "gpu"}
    assert whole, "the fleet has whole GPUs in the period"
    mapping = {**{k: v for k, v in GPU_RESOURCES.items() if k != "nvidia_com_gpu"},
               "amd_com_gpu": "gpu.amd-mi300x"}
    got = lines(gpu_sim, PERIOD, amd.url, mapping)
    amd_lines = {k: ln for k, ln in got.items() if k[1] == "gpu.amd-mi300x"}
    assert {w for w, _ in amd_lines} == {w for w, _ in whole}
    for (w, _), ln in amd_lines.items():
        same = whole[(w, "gpu")]
        assert (ln.usage, ln.request, ln.chargeable) == (same.usage, same.request,
                                                         same.chargeable), w
    assert not any(r == "gpu" for _, r in got), "no NVIDIA name left to bill"
    # The other lines (cpu, memory, MIG slices, claims) are the same.
    assert {k: ln.chargeable for k, ln in got.items() if k[1] != "gpu.amd-mi300x"} == {
        k: ln.chargeable for k, ln in nvidia.items() if k[1] != "gpu"}
    # A resource the mapping does not name is not selected, so not billed: check-sysdig's
    # `gpu names` row is what reports it (tests/integration/sysdig/test_check_sysdig.py).
    unmapped = lines(gpu_sim, PERIOD, amd.url, {"nvidia_com_gpu": "gpu"})
    assert not any(r.startswith("gpu") for _, r in unmapped)


def test_a_pending_or_completed_pods_gpu_request_is_not_billed(gpu_sim: Sim) -> None:
    fleet, period = gpu_sim.fleet, Period(T0, T0 + H)
    assert fleet.allocations is not None
    grants = fleet.allocations.grants
    pods = [p for p in fleet.pods(period.start, period.end, requested=True)
            if p.workload in grants]

    def steps(lo: int, hi: int) -> int:
        lo, hi = max(lo, period.start), min(hi, period.end)
        return max(0, -(-(hi - lo) // STEP))

    waiting = [p for p in pods if p.requests_start < p.start and steps(p.requests_start, p.start)]
    assert waiting, "a GPU pod is Pending in the period"
    got = lines(gpu_sim, period)
    for workload in {p.workload for p in waiting}:
        grant = grants[workload]
        mine = [p for p in pods if p.workload == workload]
        running = sum(steps(p.start, p.end) for p in mine) * grant.count
        requested = sum(steps(p.requests_start, p.requests_end) for p in mine) * grant.count
        assert running < requested  # the request series outlasts the run
        ln = got[(workload, GPU_RESOURCES[grant.resource])]
        hours = CONTEXT.divide(Decimal(running * STEP), Decimal(3600))
        assert ln.request == ln.chargeable == hours, workload
