"""Small builders of charge lines for the pricing and shared-cost tests."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from exporter.model import ORG_KEYS, UNALLOCATED, ChargeLine, OrgAssignment, Resource, WorkloadKey
from exporter.periods import Period

HOUR = Period(1_767_225_600, 1_767_225_600 + 3600)  # 2026-01-01T00:00:00Z


def org(**values: str) -> OrgAssignment:
    full = {k: values.get(k, UNALLOCATED) for k in ORG_KEYS}
    return OrgAssignment(values=full, sources={k: "workload" for k in ORG_KEYS})


def line(
    chargeable: Decimal | str | int,
    *,
    resource: Resource = "cpu",
    cluster: str = "c1",
    namespace: str = "app",
    name: str = "api",
    kind: str = "deployment",
    period: Period = HOUR,
    org_values: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> ChargeLine:
    q = Decimal(chargeable)
    return ChargeLine(
        period=period,
        workload=WorkloadKey(cluster, namespace, kind, name),
        resource=resource,
        usage=q / 2,
        request=q,
        chargeable=q,
        org=org(**dict(org_values or {})),
        labels=dict(labels or {}),
        coverage=Decimal(1),
        method="max-request-usage/pod/10s/v1",
    )
