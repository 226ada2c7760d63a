"""Label coverage: shares, rounding, top offenders and the rich tables."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from exporter.config import SharedCostsConfig
from exporter.coverage import label_coverage, render_coverage, render_coverage_table
from exporter.model import (
    INVALID,
    ORG_KEYS,
    RESOURCES,
    UNALLOCATED,
    ChargeLine,
    KeyCoverage,
    LabelCoverage,
    OrgAssignment,
    Resource,
    WorkloadKey,
)
from exporter.money import share
from exporter.periods import Period
from exporter.shared_costs import distribute

PERIOD = Period(1_767_225_600, 1_767_229_200)


def line(
    q: str | Decimal, *, name: str = "api", namespace: str = "app", cluster: str = "c1",
    resource: Resource = "cpu", period: Period = PERIOD, **org: str,
) -> ChargeLine:
    values = {k: org.get(k, "x") for k in ORG_KEYS}
    return ChargeLine(
        period=period, workload=WorkloadKey(cluster, namespace, "deployment", name),
        resource=resource, usage=Decimal(q), request=Decimal(q), chargeable=Decimal(q),
        org=OrgAssignment(values, {k: "workload" for k in ORG_KEYS}),
        labels={}, coverage=Decimal(1), method="m",
    )


def key_cov(cov: Mapping[str, LabelCoverage], cluster: str, key: str, res: Resource) -> KeyCoverage:
    found = [k for k in cov[cluster].keys if k.org_key == key and k.resource == res]
    assert len(found) == 1
    return found[0]


def test_shares_per_cluster_key_and_resource() -> None:
    lines = [
        line("1", name="a", team=UNALLOCATED),
        line("2", name="b", team=INVALID, costcenter=UNALLOCATED),
        line("7", name="c"),
        line("4", name="a", resource="memory", team=UNALLOCATED),
        line("0", name="z", cluster="c2", team=UNALLOCATED),
    ]
    cov = label_coverage(lines)
    assert list(cov) == ["c1", "c2"]
    team = key_cov(cov, "c1", "team", "cpu")
    assert (team.unallocated_share, team.invalid_share) == (Decimal("0.1"), Decimal("0.2"))
    assert str(team.unallocated_share) == "0.100000"
    cc = key_cov(cov, "c1", "costcenter", "cpu")
    assert (cc.unallocated_share, cc.invalid_share) == (Decimal("0.2"), Decimal(0))
    mem = key_cov(cov, "c1", "team", "memory")
    assert mem.unallocated_share == 1
    # a cluster whose total is zero has share 0, not a division error
    z = key_cov(cov, "c2", "team", "cpu")
    assert (z.unallocated_share, z.invalid_share) == (Decimal(0), Decimal(0))
    assert len(cov["c1"].keys) == len(ORG_KEYS) * 2


def test_share_rounds_half_even_at_six_places() -> None:
    assert share(Decimal(1), Decimal(3)) == Decimal("0.333333")
    assert share(Decimal(2), Decimal(3)) == Decimal("0.666667")
    assert share(Decimal(1), Decimal(2_000_000)) == Decimal("0.000000")  # 0.0000005 -> even 0
    assert share(Decimal(3), Decimal(2_000_000)) == Decimal("0.000002")  # 0.0000015 -> even 2
    assert share(Decimal(0), Decimal(0)) == Decimal("0.000000")


def test_top_offenders_per_resource_largest_first() -> None:
    lines = [
        line("5", name="big", team=UNALLOCATED),
        line("5", name="also-big", namespace="aaa", department=INVALID, team=UNALLOCATED),
        line("1", name="small", costcenter=INVALID),
        line("9", name="fine"),
        line("0", name="idle", team=UNALLOCATED),  # no quantity: not an offender
        line("3", name="big", resource="memory", team=UNALLOCATED),
        line("2", name="big", period=Period(PERIOD.end, PERIOD.end + 3600), team=UNALLOCATED),
    ]
    cov = label_coverage(lines, top_n=2)["c1"]
    got = [(o.resource, o.workload_name, o.chargeable, o.missing_keys, o.invalid_keys)
           for o in cov.top_offenders]
    assert got == [
        ("cpu", "big", Decimal(7), ("team",), ()),  # two periods summed
        ("cpu", "also-big", Decimal(5), ("department", "team"), ("department",)),
        ("memory", "big", Decimal(3), ("team",), ()),
    ]
    assert label_coverage(lines, top_n=0)["c1"].top_offenders == ()


def test_distribution_lines_do_not_change_coverage() -> None:
    lines = [
        line("4", name="coredns", namespace="kube-system", team=UNALLOCATED),
        line("1", name="a", team=UNALLOCATED),
        line("3", name="b"),
    ]
    shared = distribute(lines, SharedCostsConfig(enabled=True, namespaces=("kube-system",)))
    assert any(ln.allocation == "shared-distribution" for ln in shared.lines)
    assert label_coverage(list(shared.lines)) == label_coverage(lines)
    assert key_cov(label_coverage(lines), "c1", "team", "cpu").unallocated_share == Decimal("0.625")


def test_tables_render_shares_and_offenders() -> None:
    cov = label_coverage([line("1", name="orphan", team=UNALLOCATED), line("3", name="ok")])
    console = Console(record=True, width=200, color_system=None)
    console.print(render_coverage_table(cov))
    text = console.export_text()
    assert "Label coverage" in text
    row = next(r for r in text.splitlines() if "team" in r)
    assert "c1" in row and "25.0000 %" in row and "0.0000 %" in row
    console.print(render_coverage(cov))
    text = console.export_text()
    assert "orphan" in text and "Core-Hours" in text and "1.000000" in text


@settings(max_examples=150, deadline=None)
@given(st.lists(
    st.tuples(
        st.decimals(min_value=Decimal(0), max_value=Decimal(1000), places=12,
                    allow_nan=False, allow_infinity=False),
        st.sampled_from(["cc-1", UNALLOCATED, INVALID]),
        st.sampled_from(["cpu", "memory"]),
    ),
    max_size=30,
))
def test_shares_match_exact_fractions(rows: list[tuple[Decimal, str, str]]) -> None:
    lines = [line(q, name=f"w{i}", resource="cpu" if r == "cpu" else "memory", costcenter=cc)
             for i, (q, cc, r) in enumerate(rows)]
    cov = label_coverage(lines)
    for res in RESOURCES:
        sel = [(Fraction(q), cc) for q, cc, r in rows if r == res]
        total = sum((q for q, _ in sel), Fraction(0))
        if not lines:
            continue
        kc = key_cov(cov, "c1", "costcenter", res)
        for marker, got in ((UNALLOCATED, kc.unallocated_share), (INVALID, kc.invalid_share)):
            part = sum((q for q, cc in sel if cc == marker), Fraction(0))
            exact = part / total if total else Fraction(0)
            assert abs(Fraction(got) - exact) <= Fraction(1, 2 * 10**6)
            assert 0 <= got <= 1 and got.as_tuple().exponent == -6
        assert kc.unallocated_share + kc.invalid_share <= 1 + Decimal("0.000001")


def test_gpus_and_storage_classes_are_covered_as_cpu_and_memory() -> None:
    lines = [
        line("3", name="trainer", resource="gpu", team=UNALLOCATED),
        line("1", name="infer", resource="gpu"),
        line("0.5", name="infer", resource="gpu.mig-1g.5gb", costcenter=INVALID),
        line("2", name="data-db-0", resource="storage.standard", costcenter=UNALLOCATED),
        line("3", name="db", resource="storage.standard"),
        line("4", name="db", resource="storage.<none>", team=UNALLOCATED),
        line("5", name="db"),
        line("7", name="web", cluster="c2"),
    ]
    cov = label_coverage(lines)
    # cpu and memory always, then GPUs, then storage classes, by name.
    assert list(dict.fromkeys(k.resource for k in cov["c1"].keys)) == [
        "cpu", "memory", "gpu", "gpu.mig-1g.5gb", "storage.<none>", "storage.standard"]
    assert list(dict.fromkeys(k.resource for k in cov["c2"].keys)) == list(RESOURCES)
    assert key_cov(cov, "c1", "team", "gpu").unallocated_share == share(Decimal(3), Decimal(4))
    assert key_cov(cov, "c1", "costcenter", "gpu.mig-1g.5gb").invalid_share == 1
    assert key_cov(cov, "c1", "costcenter", "storage.standard").unallocated_share == share(
        Decimal(2), Decimal(5))
    assert key_cov(cov, "c1", "team", "storage.<none>").unallocated_share == 1
    assert key_cov(cov, "c1", "team", "cpu").unallocated_share == 0
    top = [(o.resource, o.workload_name, o.chargeable) for o in cov["c1"].top_offenders]
    assert top == [("gpu", "trainer", 3), ("gpu.mig-1g.5gb", "infer", Decimal("0.5")),
                   ("storage.<none>", "db", 4), ("storage.standard", "data-db-0", 2)]
    console = Console(record=True, width=400, color_system=None)
    console.print(render_coverage(cov))
    text = console.export_text()
    assert "gpu unallocated" in text and "storage.standard invalid" in text
    assert "GPU-Hours" in text and "GiB-Hours" in text
