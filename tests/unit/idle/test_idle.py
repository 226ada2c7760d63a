"""Idle capacity: the exact identity, never negative, and its distribution to cost centers."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.errors import PricingError
from exporter.idle import (
    IDLE,
    IDLE_DISTRIBUTION,
    capacities,
    distribute,
    distribution_method,
    idle_lines,
)
from exporter.model import GIB, ChargeLine, PeriodUsage, PricedLine
from exporter.pricing import IdleRule, RateCard
from tests.rigs.charge_lines import HOUR, line
from tests.rigs.rate_cards import MINIMAL

STEP = 10


def _usage(allocatable: dict[str, dict[str, Decimal]]) -> PeriodUsage:
    return PeriodUsage(period=HOUR, step_seconds=STEP, grain="pod", workloads=(),
                       coverage={c: Decimal(1) for c in allocatable},
                       allocatable=allocatable)  # type: ignore[arg-type]


def test_charges_plus_idle_minus_overcommit_is_the_allocatable_exactly() -> None:
    # 360 steps of 7/3 cores: 840 core-steps -> 7/3 Core-Hours, which 9 decimals cannot hold.
    usage = _usage({"c1": {"cpu": Decimal(840), "memory": Decimal(360 * 3 * GIB)},
                    "c2": {"cpu": Decimal(36)}})
    lines = [line("0.3333333334"), line("0.1111111115", name="web"),  # round half-even to 9
             line("2.5", resource="memory"), line("1.5", cluster="c2"), line("0", name="z")]
    caps = {(c.cluster, c.resource): c for c in capacities(usage, lines)}
    cpu = caps[("c1", "cpu")]
    assert cpu.allocatable == Decimal("2.333333333")
    assert cpu.charged == Decimal("0.333333333") + Decimal("0.111111112")
    assert cpu.idle == cpu.allocatable - cpu.charged and cpu.overcommit == 0
    assert caps[("c1", "memory")].idle == Decimal("0.5")
    over = caps[("c2", "cpu")]  # 0.1 Core-Hours offered, 1.5 charged
    assert (over.allocatable, over.idle, over.overcommit) == (Decimal("0.1"), 0, Decimal("1.4"))
    for c in caps.values():
        assert c.charged + c.idle - c.overcommit == c.allocatable
        assert c.idle >= 0 and c.overcommit >= 0 and min(c.idle, c.overcommit) == 0
    [idle, *_] = idle_lines(usage, [cpu])
    assert (idle.workload.namespace, idle.workload.name, idle.allocation) == (IDLE, IDLE, "idle")
    assert idle.chargeable == cpu.idle and idle.usage == idle.request == 0
    assert idle.method == "max-request-usage/pod/10s/v1"


def test_shared_sources_and_idle_lines_are_not_charges() -> None:
    usage = _usage({"c1": {"cpu": Decimal(3600)}})
    lines = [line("2"), _with(line("4", name="ingress"), "shared-source"),
             _with(line("4", name="web"), "shared-distribution"), _with(line("1", name=IDLE), "idle")]
    [cap] = capacities(usage, lines)
    assert cap.charged == Decimal(6) and cap.idle == Decimal(4)


def _with(ln: ChargeLine, allocation: str) -> ChargeLine:
    return dataclasses.replace(ln, allocation=allocation)


def _priced(rule: IdleRule | None, idle: str = "1.000000001", cost: str | None = "0.100001"
            ) -> list[PricedLine]:
    usage = _usage({"c1": {"cpu": Decimal(0)}})
    charges = [line("3", org_values={"costcenter": "cc-a"}),
               line("1", name="web", org_values={"costcenter": "cc-b"}),
               line("1", name="db", org_values={"costcenter": "cc-b"}),
               line("0", name="none", org_values={"costcenter": "cc-z"})]
    [idle_line] = idle_lines(usage, capacities(usage, []))
    idle_line = dataclasses.replace(idle_line, chargeable=Decimal(idle))
    priced = [PricedLine(ln, None, None, None) for ln in charges]
    priced.append(PricedLine(idle_line, Decimal("0.1"), None if cost is None else Decimal(cost),
                             None if cost is None else "EUR", "v1"))
    return distribute(priced, rule)


@pytest.mark.parametrize(("rule", "shares"), [
    (IdleRule("proportional", {}), {"cc-a": ("0.600000001", "0.060001"),
                                     "cc-b": ("0.400000000", "0.040000")}),
    (IdleRule("even", {}), {"cc-a": ("0.500000001", "0.050001"),
                             "cc-b": ("0.500000000", "0.050000")}),
    (IdleRule("weights", {"cc-a": Decimal(1), "cc-x": Decimal(3)}),
     {"cc-a": ("0.250000000", "0.025000"), "cc-x": ("0.750000001", "0.075001")}),
])
def test_distribution_splits_idle_exactly(rule: IdleRule, shares: dict[str, tuple[str, str]]) -> None:
    out = _priced(rule)
    dist = [p for p in out if p.line.allocation == IDLE_DISTRIBUTION]
    got = {p.line.org.values["costcenter"]: (str(p.line.chargeable), str(p.cost)) for p in dist}
    assert got == shares
    assert sum(p.line.chargeable for p in dist) == Decimal("1.000000001")
    assert sum(p.cost for p in dist if p.cost is not None) == Decimal("0.100001")
    assert all(p.line.method == distribution_method(rule) and p.unit_price is None for p in dist)
    assert all(p.line.workload.name == p.line.org.values["costcenter"] for p in dist)
    # The idle line stays for audit, as `idle-source`, so it is not counted twice.
    assert [p.line.allocation for p in out].count("idle-source") == 1
    assert "idle" not in [p.line.allocation for p in out]


def test_no_rule_or_zero_idle_is_not_distributed() -> None:
    assert not [p for p in _priced(None) if p.line.allocation == IDLE_DISTRIBUTION]
    assert not [p for p in _priced(IdleRule("even", {}), idle="0")
                if p.line.allocation == IDLE_DISTRIBUTION]
    unpriced = [p for p in _priced(IdleRule("even", {}), cost=None)
                if p.line.allocation == IDLE_DISTRIBUTION]
    assert unpriced and all(p.cost is None and p.currency is None for p in unpriced)


def test_the_rate_card_says_how_idle_is_distributed(tmp_path: Path) -> None:
    def card(idle: str = "") -> RateCard:
        path = tmp_path / "card.yaml"
        path.write_text(MINIMAL + idle)
        return RateCard.load(path)

    assert card().idle is None
    weighted = card("idle:\n  distribute: weights\n  weights: {cc-a: \"2\", cc-b: 1}\n")
    assert weighted.idle == IdleRule("weights", {"cc-a": Decimal(2), "cc-b": Decimal(1)})
    assert card("idle: {distribute: even}\n").idle == IdleRule("even", {})
    with pytest.raises(PricingError, match="idle: distribute: weights needs weights"):
        card("idle: {distribute: weights}\n")
    with pytest.raises(PricingError, match=r"idle\.distribute"):
        card("idle: {distribute: largest}\n")
    with pytest.raises(PricingError, match="weights apply to distribute: weights"):
        card("idle: {distribute: even, weights: {a: 1}}\n")
