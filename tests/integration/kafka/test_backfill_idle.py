"""Backfill with idle capacity on, over a real broker and the Sysdig simulator.

- A period published with its idle distributed to cost centers (`idle-distribution` records,
  method `idle-<method>/v1`) is planned and republished like any other.
- Allocatable capacity that changes after the live export (a node's series Sysdig had not
  served yet) republishes exactly the clusters it changed, one revision up, and on the new
  revision the cluster's charges plus its idle less its overcommit are its allocatable, exactly,
  the nodes' truth.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import cast

import pytest

from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.promql import LabelMatcher, SeriesSet
from chargeback_simulator.server import SimulatorServer
from exporter.consumer import latest_records
from exporter.periods import iso
from exporter.records import BillingRecord, PeriodManifest
from tests.rigs.backfill import T0, EditableSim, EditableStorage, H, Rig, hours
from tests.rigs.rate_cards import JANUARY_2026
from tests.rigs.sim import TOKEN

RANGE = ("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H))
NANO = Decimal("1e-9")


class LateNodes(EditableStorage):
    """The fleet, with the allocatable series of the nodes in `late` not served (yet)."""

    def __init__(self, fleet: object) -> None:
        super().__init__(fleet)
        self.late: set[str] = set()

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        data = super().select(matchers, start_ms, end_ms)
        keep = [i for i, labels in enumerate(data.labels)
                if labels.get("kube_node_name") not in self.late]
        if len(keep) == len(data.labels):
            return data
        return SeriesSet([data.labels[i] for i in keep], data.ts, data.values[keep])


class LateSim(EditableSim):
    """`EditableSim` serving `LateNodes`."""

    def __init__(self, now: int) -> None:
        super().__init__(now)
        self.storage = self.late = LateNodes(self.fleet)
        self.server = SimulatorServer(self.storage, self.clock, tokens=[TOKEN])


@pytest.fixture
def rig(noida: LocalBroker, tmp_path: Path) -> Iterator[Rig]:
    sim = LateSim(T0 + 6 * H + 300)
    with sim.server:
        yield Rig(sim, noida, tmp_path / "config.yaml")


def latest(records: list[tuple[BillingRecord, bytes]]) -> dict[str, BillingRecord]:
    """The consumer rule (`exporter.consumer.latest_records`) over the rig's (record, bytes)."""
    return latest_records(r for r, _ in records)


def newest(manifests: list[PeriodManifest]) -> dict[tuple[int, str], PeriodManifest]:
    out: dict[tuple[int, str], PeriodManifest] = {}
    for m in manifests:
        key = (m.period_start // 1000, m.cluster)
        if key not in out or m.revision >= out[key].revision:
            out[key] = m
    return out


def test_a_period_published_with_distributed_idle_is_backfilled(rig: Rig,
                                                                 tmp_path: Path) -> None:
    card = tmp_path / "card.yaml"
    card.write_text(JANUARY_2026 + "idle: {distribute: even}\n")
    rig.configure(idle={"enabled": True}, pricing={"rate_card_file": str(card)})
    rig.live_export(hours(3, 6))
    live = latest(rig.records())
    assert {r.method for r in live.values() if r.allocation == "idle-distribution"} == {
        "idle-even/v1"}
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    assert (res.report["periods"], res.report["skipped"], res.report["failed"]) == (3, 3, 0)
    # A correction of the labels republishes, distributed idle and all.
    rig.sim.storage.relabel[("staging-eu-central-02", "analytics-3")] = {
        "costcenter": "CC-FIXED"}
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    assert (res.report["changed"], res.report["failed"]) == (3, 0)
    now = latest(rig.records())
    shares = [r for r in now.values() if r.allocation == "idle-distribution"
              and r.revision == 1]
    assert shares and "CC-FIXED" in {r.costcenter for r in shares}


def test_changed_allocatable_republishes_exactly_the_changed_cluster(rig: Rig) -> None:
    storage = cast(LateSim, rig.sim).late
    fleet = rig.sim.fleet
    rig.configure(idle={"enabled": True})
    # A node that comes and goes, alive in some of the range's periods and not in others.
    cluster = fleet.clusters()[1]
    periods = hours(3, 6)
    node = next(n for n in fleet.nodes(T0 + 3 * H, T0 + 6 * H) if n.cluster == cluster
                and n.start > T0 and sum(n.start < p.end and n.end > p.start
                                         for p in periods) in (1, 2))
    touched = {p.start for p in periods if node.start < p.end and node.end > p.start}
    storage.late.add(node.name)
    rig.live_export(periods)
    before = newest(rig.manifests())
    storage.late.clear()
    res = rig.backfill(*RANGE)
    assert res.code == 0, res.err
    for d in res.report["details"]:
        changed = {c["cluster"] for c in d["clusters"] if c["change"] == "changed"}
        start = next(p.start for p in periods if iso(p.start) == d["period_start"])
        assert changed == ({cluster} if start in touched else set()), d
    after = newest(rig.manifests())
    records = latest(rig.records())
    for p in periods:
        truth = fleet.allocatable_truth(p.start, p.end)
        for c in fleet.clusters():
            m = after[(p.start, c)]
            bumped = c == cluster and p.start in touched
            assert m.revision == (1 if bumped else 0), (p, c)
            for cap in m.capacity:
                assert cap.allocatable_quantity == truth[c][cap.resource].quantize(
                    NANO, ROUND_HALF_EVEN)
                mine = [r for r in records.values() if r.cluster == c
                        and r.resource == cap.resource and r.period_start == p.start * 1000]
                assert {r.revision for r in mine} == {m.revision}
                charged = sum(r.chargeable_quantity for r in mine
                              if r.allocation in ("direct", "shared-distribution"))
                [idle] = [r for r in mine if r.allocation == "idle"]
                assert charged + idle.chargeable_quantity - cap.overcommit_quantity \
                    == cap.allocatable_quantity
                if bumped:
                    [was] = [x for x in before[(p.start, c)].capacity
                             if x.resource == cap.resource]
                    assert was.allocatable_quantity < cap.allocatable_quantity
