"""Chargeable units: source sample sums to exact Core-Hours and GiB-Hours per workload.

Pure conversion: no org labels (the pipeline resolves those, `exporter.pipeline.charge_lines`).

The source returns, per workload and resource, Σ over sample steps of usage, of request and of
max(request, usage) taken per step at the configured grain (pod by default). One step of a
sample stands for `step` seconds, so unit-hours = Σ × step / 3600 (and / 2^30 for bytes → GiB).
Everything stays `Decimal`; quantization to the record scale happens in `records`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal

from exporter.model import (
    GIB,
    RESOURCES,
    STORAGE,
    PeriodUsage,
    Resource,
    WorkloadUsage,
    family,
    resource_order,
)
from exporter.money import CONTEXT

CALCULATION_VERSION = "v1"


def method_id(grain: str, step: int) -> str:
    """The calculation method: max of request and usage, at `grain`, sampled every `step`."""
    return f"max-request-usage/{grain}/{step}s/{CALCULATION_VERSION}"


_METHOD = re.compile(r"^max-request-usage/(?P<grain>[a-z]+)/(?P<step>\d+)s/(?P<version>v\d+)$")


def method_step(method: str, grain: str | None = None) -> int | None:
    """The step of a `method_id` of this calculation version (and of `grain` when given);
    None for any other method.

    Only a measurement has a step: the method of a distribution (`shared-proportional/v1`,
    `idle-even/v1`) is None here, so ask it of measured lines, or of a period's manifest,
    whose `method` is always the period's measurement."""
    m = _METHOD.match(method)
    if m is None or m["version"] != CALCULATION_VERSION or grain not in (None, m["grain"]):
        return None
    return int(m["step"])


_SECONDS_PER_HOUR = Decimal(3600)
_BYTES_PER_GIB = Decimal(GIB)


def to_unit_hours(value: Decimal, resource: Resource, step: int | Decimal) -> Decimal:
    """Σ samples (cores, GPUs or bytes) × step seconds → Core-Hours, GPU-Hours or GiB-Hours
    (memory and storage), to `money.CONTEXT`'s digits, far beyond any record scale.

    Bytes are divided by 3600 and then by 2^30, two roundings at the context's precision (kept:
    one division by 3600 × 2^30 can differ in the last digit).
    """
    ctx = CONTEXT
    hours = ctx.divide(ctx.multiply(value, step), _SECONDS_PER_HOUR)
    if resource == "memory" or family(resource) == STORAGE:
        hours = ctx.divide(hours, _BYTES_PER_GIB)
    # Division keeps the sign of a zero; `plus` turns -0 into 0. Other values are already
    # rounded to the context, so `plus` would return them unchanged.
    return hours if hours else ctx.plus(hours)


_MEASURED = frozenset(RESOURCES)

UnitHours = tuple[Resource, Decimal, Decimal, Decimal]
"""(resource, usage, request, chargeable), the quantities in unit-hours."""


def unit_hours(usage: PeriodUsage) -> Iterator[tuple[WorkloadUsage, list[UnitHours]]]:
    """Each workload of `usage`, in the source's order, with its resources in `RESOURCES` order,
    then GPUs and storage (`model.resource_order`), converted to unit-hours (see
    `to_unit_hours`); a resource without sums is left out.
    """
    step = Decimal(usage.step_seconds)  # converted once per period, not once per value
    for w in usage.workloads:
        hours: list[UnitHours] = []
        names = RESOURCES
        if w.sums.keys() != _MEASURED:  # GPUs or claims too (a keys view compares as a set)
            names = (*RESOURCES, *sorted((r for r in w.sums if r not in RESOURCES),
                                         key=resource_order))
        for resource in names:
            sums = w.sums.get(resource)
            if sums is not None:
                hours.append((resource,
                              to_unit_hours(sums.usage, resource, step),
                              to_unit_hours(sums.request, resource, step),
                              to_unit_hours(sums.chargeable, resource, step)))
        yield w, hours
