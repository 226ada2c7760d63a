from decimal import Decimal
from fractions import Fraction

from exporter.config import OrgConfig
from exporter.model import PeriodUsage, SampleSums, WorkloadKey, WorkloadUsage
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pipeline import charge_lines
from exporter.units import method_id, to_unit_hours


def test_cpu_and_memory_conversion_is_exact() -> None:
    # 360 samples of 0.5 cores at 10 s is half a core-hour
    assert to_unit_hours(Decimal(180), "cpu", 10) == Decimal("0.5")
    # 360 samples of 1 GiB at 10 s is one GiB-hour
    assert to_unit_hours(Decimal(360 * 2**30), "memory", 10) == Decimal(1)
    # a 7-minute pod at 1/64 core: 42 samples
    got = to_unit_hours(Decimal(42) / 64, "cpu", 10)
    assert abs(Fraction(got) - Fraction(42 * 10, 64 * 3600)) < Fraction(1, 10**55)


def test_charge_lines_resolve_org_and_method() -> None:
    key = WorkloadKey("c1", "ns", "deployment", "api")
    sums = SampleSums(Decimal(100), Decimal(200), Decimal(250))
    usage = PeriodUsage(
        period=Period(0, 3600), step_seconds=10, grain="pod",
        workloads=(WorkloadUsage(key, {"kube_namespace_label_costcenter": "cc-7"},
                                 {"cpu": sums, "memory": sums}),),
        coverage={"c1": Decimal(1)},
    )
    lines = charge_lines(usage, OrgModel(OrgConfig()))
    assert [ln.resource for ln in lines] == ["cpu", "memory"]
    cpu = lines[0]
    assert abs(Fraction(cpu.chargeable) - Fraction(2500, 3600)) < Fraction(1, 10**55)
    assert cpu.org.values["costcenter"] == "cc-7"
    assert cpu.org.sources["costcenter"] == "namespace"
    assert cpu.org.values["team"] == "__unallocated__"
    assert cpu.method == method_id("pod", 10) == "max-request-usage/pod/10s/v1"
    assert cpu.unit == "Core-Hours" and lines[1].unit == "GiB-Hours"
