"""The Sysdig chargeback dashboard: its PromQL, the shipped JSON, and `dashboard install|export`.

The panels show, live in Sysdig, what the exporter bills: per pod the larger of CPU/memory
request and usage, summed to cost center, business unit, department, team, namespace and
workload, with unlabelled usage shown as `__unallocated__`.

They are right at any viewed range, whatever resolution Sysdig serves (10 s for hours, then
1 min, 10 min, 1 h and 1 day roll-ups): they never count samples. Each chart point averages its
panel interval (`$__interval`, which Sysdig sets from the viewed range): per pod, the sums of
usage and of request samples in the interval, the larger of the two, divided by the number of
samples a full-interval series has there. That is cores (or bytes) on average, i.e. unit-hours
per hour, and a pod present for part of the interval counts for that part only. Totals over the
viewed range (`$__range`) add the intervals' averages times the interval length. The max is
taken per pod and interval, which is per sample when Sysdig serves data at the panel's sampling
(its choice); the exported records, per 10 s sample and exact, are the bill. As in the bill, a
request counts only where its pod has usage (runs): per interval here, so per sample at the
panel's sampling.

Org labels resolve as in `exporter.org` (workload label, then namespace label; blank values
skipped, values trimmed), with one chain of `label_replace` per key over the pod's
`sysdig_container_cpu_cores_used` series (the series the exporter reads labels from too).
Defaults and allow-lists are applied by the exporter only; the dashboard shows labels as Sysdig
sees them.

`exporter/data/dashboard.json` is `build_dashboard()` for the default org configuration,
regenerated with `python -m exporter.dashboard > exporter/data/dashboard.json` (a test checks
they agree). `dashboard install` builds it for the configured org labels and creates it with
`SysdigClient.create_dashboard_from_file`, or updates the dashboard of that name in place.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.clock import Clock
from exporter.commands import add_common, config_from_args
from exporter.config import IdleConfig, OrgConfig, ResourcesConfig
from exporter.model import GIB, ORG_KEYS, RESOURCES, UNALLOCATED
from exporter.periods import format_duration
from exporter.queries import (
    CPU_USED,
    MEM_USED,
    POD_GRAIN,
    REQUESTS,
    WORKLOAD_KINDS,
    grouped,
    running,
    selector,
)
from exporter.sysdig import SysdigClient
from exporter.wiring import build_dashboard_installer

DEFAULT_NAME = "Kubernetes Chargeback"
DATA_FILE = "dashboard.json"
# What a re-install replaces; every other field of an existing dashboard is the users'.
OWNED_FIELDS = ("panels", "layout", "description")
# Sysdig's panel variables: the sampling it picks for the viewed range, and that range.
INTERVAL = "$__interval"
INTERVAL_SEC = "$__interval_sec"
RANGE = "$__range"
# A panel interval ending at step t holds the samples stamped in [t - interval, t): shifted by
# 5 s, neither edge sits on Sysdig's 10 s grid, so closed (Prometheus 2.x) and left-open (3.x)
# ranges read the same samples and consecutive intervals never share one.
WINDOW = f"[{INTERVAL}] offset 5s"
GRID_WIDTH = 24  # Sysdig lays dashboards out on 24 columns (its Terraform provider checks it)

_G = ", ".join(POD_GRAIN)
_TRIM = r"\\s*(.*\\S)\\s*"  # PromQL string for the RE2 regex \s*(.*\S)\s*: non-blank, trimmed
_BLANK = r"\s*"  # a regex (selector() escapes it): absent, empty or whitespace only


def _label_name(name: str) -> str:
    # Sysdig, like Prometheus, turns anything outside [a-zA-Z0-9_] into `_` (see exporter.org).
    return "".join(ch if (ch.isascii() and ch.isalnum()) or ch == "_" else "_" for ch in name)


@dataclass(frozen=True, slots=True)
class OrgSources:
    """Sysdig label names that carry each org key, highest precedence first."""

    labels: dict[str, tuple[str, ...]]

    @classmethod
    def from_config(cls, org: OrgConfig | None = None) -> OrgSources:
        """Workload labels (`kube_<kind>_label_<name>`) then namespace labels, per key, each
        level's names followed by the key's aliases, as `exporter.org` resolves them."""
        org = org or OrgConfig()
        out: dict[str, tuple[str, ...]] = {}
        for key in ORG_KEYS:
            kc = org.keys[key]
            workload = _names(kc.workload_labels, kc.aliases)
            namespace = _names(kc.namespace_labels, kc.aliases)
            cols = [f"kube_{kind}_label_{n}" for n in workload for kind in WORKLOAD_KINDS]
            cols += [f"kube_namespace_label_{n}" for n in namespace]
            out[key] = tuple(dict.fromkeys(cols))
        return cls(out)


def _names(primary: Sequence[str], aliases: Sequence[str]) -> tuple[str, ...]:
    if not primary:
        return ()
    return tuple(dict.fromkeys(_label_name(n.strip()) for n in (*primary, *aliases)))


class Queries:
    """The PromQL of every panel, built from the org label sources.

    Per pod (`POD_GRAIN`) and panel interval: usage `U` and request `R` are the sums of their
    samples in the interval (over the pod's containers), `R` only for pods with usage in the
    interval (`exporter.queries.running`), chargeable is `(U >= R) or R or U`.
    `rate(x)` divides such sums by the samples a full-interval series has (`slots`), giving the
    interval's average; `org(x)` attaches the org keys from the pod's usage series and sets a
    missing key to `__unallocated__`.
    """

    def __init__(self, sources: OrgSources, resources: ResourcesConfig | None = None,
                 idle: IdleConfig | None = None) -> None:
        self.sources = sources
        self.keys = tuple(sources.labels)
        self.resources = resources or ResourcesConfig()
        self.idle = idle or IdleConfig()

    @staticmethod
    def _sum(metric: str, matchers: Sequence[tuple[str, str, str]] = ()) -> str:
        return grouped(metric, matchers, POD_GRAIN, f"sum_over_time({{}}{WINDOW})")

    def usage(self, res: str) -> str:
        return self._sum(CPU_USED if res == "cpu" else MEM_USED)

    def request(self, res: str) -> str:
        return running(self._sum(REQUESTS, [("resource", "=", res)]), self.usage(res))

    def chargeable(self, res: str) -> str:
        u, r = self.usage(res), self.request(res)
        return f"({u} >= {r}) or {r} or {u}"

    @staticmethod
    def slots() -> str:
        """Samples per interval at the resolution served: those of the fullest usage series.

        Counted, not assumed, so 10 s data and hourly roll-ups give the same averages.
        """
        return f"max(count_over_time({CPU_USED}{WINDOW}))"

    def rate(self, expr: str) -> str:
        """Sums of samples as the interval's average (cores, bytes); none without usage data."""
        return f"({expr}) / on() group_left() {self.slots()}"

    @staticmethod
    def _chosen() -> str:
        # One usage series per pod and interval (the one with most samples): a pod relabelled
        # within the interval would otherwise join to two label sets, which PromQL refuses.
        return f"topk by ({_G}) (1, count_over_time({CPU_USED}{WINDOW}))"

    def info(self, keys: Sequence[str]) -> str:
        """One series of value 1 per pod, labelled with the org `keys` its usage series carries."""
        expr = self._chosen()
        for key in keys:
            for src in reversed(self.sources.labels[key]):  # innermost = lowest precedence
                expr = f'label_replace({expr}, "{key}", "$1", "{src}", "{_TRIM}")'
        return f"group by ({_G}, {', '.join(keys)}) ({expr})"

    def org(self, expr: str, keys: Sequence[str]) -> str:
        """`expr` (at pod grain) labelled with the org `keys`, `__unallocated__` when missing.

        Only the keys a panel groups by are resolved, which keeps each query a few KiB.
        """
        by = ", ".join(keys)
        joined = f"(({expr}) * on({_G}) group_left({by}) {self.info(keys)}) or on({_G}) ({expr})"
        for key in keys:
            joined = f'label_replace({joined}, "{key}", "{UNALLOCATED}", "{key}", "")'
        return joined

    def has_key(self, key: str) -> str:
        """Pods whose chosen usage series carries a non-blank label for `key`."""
        sources = self.sources.labels[key]
        if not sources:
            return f"({self._chosen()} unless on({_G}) {self._chosen()})"
        blank = selector(CPU_USED, [(src, "=~", _BLANK) for src in sources])
        on = ", ".join((*POD_GRAIN, *sources))
        return (f"group by ({_G}) ({self._chosen()} unless on({on}) "
                f"count_over_time({blank}{WINDOW}))")

    def unallocated(self, res: str, key: str) -> str:
        return f"({self.chargeable(res)}) unless on({_G}) {self.has_key(key)}"

    def gpus(self, name: str | None = None) -> str:
        """Per pod and kube-state-metrics GPU `resource` (`resources.gpu.resources`, or `name`
        alone): the sum of its GPU request samples in the interval, for pods with usage there,
        as cpu and memory."""
        names = name or "|".join(self.resources.gpu.resources)
        req = grouped(REQUESTS, [("resource", "=~", names)], (*POD_GRAIN, "resource"),
                      f"sum_over_time({{}}{WINDOW})")
        return running(req, self.usage("cpu"))

    def claims(self) -> str:
        """Per claim, the sum of its requested-bytes samples in the interval, labelled with its
        storage class (`<none>` without an info series, as the records name it)."""
        st = self.resources.storage
        on = f"kube_cluster_name, kube_namespace_name, {st.claim_label}"
        capacity = f"sum by ({on}) (sum_over_time({st.capacity_metric}{WINDOW}))"
        info = f"group by ({on}, {st.class_label}) (count_over_time({st.info_metric}{WINDOW}))"
        none = f'label_replace({capacity}, "{st.class_label}", "<none>", "", "")'
        return (f"({capacity} * on({on}) group_left({st.class_label}) {info}) "
                f"or on({on}) {none}")

    def allocatable(self, res: str) -> str:
        """Per cluster, the sum of its nodes' allocatable samples of `res` in the interval
        (`idle.metric`, `idle.resources`)."""
        value = self.idle.resources.get(res, res)
        return (f"sum by (kube_cluster_name) (sum_over_time("
                f"{selector(self.idle.metric, [('resource', '=', value)])}{WINDOW}))")

    def idle_capacity(self, res: str) -> str:
        """Per cluster and interval, allocatable less chargeable, never below 0 (the records
        compare whole periods, so an interval's overcommit does not net out here)."""
        a = self.allocatable(res)
        c = f"sum by (kube_cluster_name) ({self.chargeable(res)})"
        return f"clamp_min(({a} - {c}) or {a}, 0)"

    def total(self, expr: str) -> str:
        """Unit-hours in the viewed range: each interval's average times its length."""
        return f"(sum_over_time(({expr})[{RANGE}:{INTERVAL}]) * {INTERVAL_SEC} / 3600)"

    @staticmethod
    def gib(expr: str) -> str:
        return f"({expr}) / {GIB}"


def sysdig_variables(query: str, *, interval: int, range_: int) -> str:
    """`query` with Sysdig's time variables replaced as Sysdig replaces them for a panel whose
    sampling is `interval` seconds and whose viewed range is `range_` seconds (for evaluating
    panels against a plain Prometheus). The `_sec` forms are numbers, the others durations."""
    for name, seconds in (("$__interval", interval), ("$__range", range_)):
        query = query.replace(f"{name}_sec", str(seconds)).replace(name, format_duration(seconds))
    return query


# ---------------------------------------------------------------------------------------------
# Panels


def _format(unit: str) -> dict[str, Any]:
    if unit == "%":
        return {"unit": "%", "inputFormat": "0-100", "displayFormat": "auto", "decimals": 1,
                "yAxis": "auto", "nullValueDisplayMode": "nullGap"}
    return {"unit": "number", "inputFormat": "1", "displayFormat": "auto", "decimals": 2,
            "yAxis": "auto", "nullValueDisplayMode": "nullGap"}


def _query(query: str, legend: str, unit: str, name: str = "") -> dict[str, Any]:
    return {
        "query": query,
        "enabled": True,
        "displayInfo": {"displayName": name, "timeSeriesDisplayNameTemplate": legend,
                        "type": "lines"},
        "format": _format(unit),
    }


def _axes(unit: str) -> dict[str, Any]:
    fmt = "0-100" if unit == "%" else "1"

    def side(enabled: bool) -> dict[str, Any]:
        return {"enabled": enabled, "displayName": None, "unit": "auto", "displayFormat": "auto",
                "decimals": None, "minValue": 0, "maxValue": None, "minInputFormat": fmt,
                "maxInputFormat": fmt, "scale": "linear"}

    return {"bottom": {"enabled": True}, "left": side(True), "right": side(False)}


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel: its queries as (PromQL, legend template, display name), unit and place."""

    name: str
    description: str
    queries: tuple[tuple[str, str, str], ...]
    unit: str
    w: int
    h: int
    number: bool = False
    tags: tuple[str, ...] = ()

    def to_json(self, panel_id: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": panel_id,
            "type": "advancedNumber" if self.number else "advancedTimechart",
            "name": self.name,
            "description": self.description,
            "nullValueDisplayText": None,
            "advancedQueries": [_query(q, legend, self.unit, name) for q, legend, name in self.queries],
        }
        if self.number:
            body["numberThresholds"] = {"values": [], "base": {"severity": "none", "displayText": ""}}
        else:
            body["legendConfiguration"] = {"enabled": True, "position": "right", "layout": "table",
                                           "showCurrent": True, "width": None, "height": None}
            body["axesConfiguration"] = _axes(self.unit)
        return body


def panels(q: Queries) -> list[Panel]:
    """Every panel, in layout order. `tags` mark what the tests check (e.g. `by-costcenter`).

    Charts show each interval's average (unit-hours per hour, i.e. cores or GiB); number panels
    show totals over the viewed range.
    """
    cc = "costcenter" if "costcenter" in q.keys else q.keys[0]
    unit_hours = {"cpu": "core-hours", "memory": "GiB-hours"}
    what = {"cpu": "CPU", "memory": "memory"}
    title_of = {"cpu": "CPU", "memory": "Memory"}
    unit_now = {"cpu": "cores", "memory": "GiB"}

    def scaled(res: str, expr: str) -> str:
        return q.gib(expr) if res == "memory" else expr

    def org_keys(by: Sequence[str]) -> list[str]:
        return [k for k in by if k in q.keys]

    def summed(kind: str, res: str, by: Sequence[str]) -> str:
        base = {"chargeable": q.chargeable, "usage": q.usage, "request": q.request}[kind](res)
        return f"sum by ({', '.join(by)}) ({q.org(base, org_keys(by))})"

    def per_hour(kind: str, res: str, by: Sequence[str]) -> str:
        return scaled(res, q.rate(summed(kind, res, by)))

    def share_range(res: str, key: str) -> str:
        part = f"{q.total(q.rate(f'sum({q.unallocated(res, key)})'))} or vector(0)"
        return f"100 * ({part}) / {q.total(q.rate(f'sum({q.chargeable(res)})'))}"

    def share_now(res: str, key: str) -> str:
        return f"100 * (sum({q.unallocated(res, key)}) or vector(0)) / sum({q.chargeable(res)})"

    def legend(by: Sequence[str]) -> str:
        return " / ".join(f"{{{{{k}}}}}" for k in by)

    out: list[Panel] = []
    for res in RESOURCES:
        total = q.total(q.rate(f"sum({q.chargeable(res)})"))
        out.append(Panel(
            f"Chargeable {unit_hours[res]} in the viewed range",
            f"max(request, usage) of {what[res]} per pod and interval, added up over the "
            "viewed range.",
            ((scaled(res, total), "", unit_hours[res]),), "number", 6, 3, number=True,
            tags=("total",)))
    for res in RESOURCES:
        out.append(Panel(
            f"Unallocated share of {unit_hours[res]} (no {cc}) in the viewed range",
            f"Share of chargeable {unit_hours[res]} of pods whose usage carries no {cc} label "
            "on the workload or its namespace.",
            ((share_range(res, cc), "", "unallocated"),), "%", 6, 3, number=True,
            tags=("unallocated",)))
    for res in RESOURCES:
        out.append(Panel(
            f"Chargeable {unit_hours[res]} per hour by {cc}",
            f"max(request, usage) of {what[res]} per pod, averaged over each interval, by {cc}.",
            ((per_hour("chargeable", res, [cc]), legend([cc]), ""),), "number", 12, 4,
            tags=("by-costcenter",)))
    for res in RESOURCES:
        out.append(Panel(
            f"{title_of[res]} consumption ({unit_now[res]} used) by {cc}",
            f"{title_of[res]} actually used, averaged over each interval, by {cc}.",
            ((per_hour("usage", res, [cc]), legend([cc]), ""),), "number", 12, 4,
            tags=("by-costcenter",)))
    drill = [
        ["businessunit"], ["businessunit", "department"], ["department", "team"],
        ["team", "kube_namespace_name"],
    ]
    for by in drill:
        if not all(k in q.keys or k.startswith("kube_") for k in by):
            continue
        title = " / ".join("namespace" if k == "kube_namespace_name" else k for k in by)
        for res in RESOURCES:
            out.append(Panel(
                f"Chargeable {unit_hours[res]} per hour by {title}",
                f"Drill-down: chargeable {unit_hours[res]} per hour by {title}.",
                ((per_hour("chargeable", res, by), legend(by), ""),), "number", 12, 4,
                tags=("drill-down",)))
    workload = [cc, *org_keys(["team"]), "kube_cluster_name", "kube_namespace_name",
                "kube_workload_type", "kube_workload_name"]
    for res in RESOURCES:
        out.append(Panel(
            f"Top 20 workloads by chargeable {unit_hours[res]} per hour",
            "Drill-down to the workload, with its org labels.",
            ((f"topk(20, {per_hour('chargeable', res, workload)})",
              "{{kube_namespace_name}}/{{kube_workload_name}} ({{" + cc + "}})", ""),),
            "number", 12, 5, tags=("drill-down",)))
    for res in RESOURCES:
        ratio = f"100 * {summed('usage', res, [cc])} / {summed('request', res, [cc])}"
        out.append(Panel(
            f"{title_of[res]} efficiency (used / requested) by {cc}",
            f"Usage as a percentage of requests; low values mean paying for idle {what[res]}.",
            ((ratio, legend([cc]), ""),), "%", 12, 4, tags=("by-costcenter", "efficiency")))
    for res in RESOURCES:
        idle = q.rate(f"{summed('chargeable', res, [cc])} - {summed('usage', res, [cc])}")
        out.append(Panel(
            f"Idle but charged {what[res]} ({unit_now[res]}) by {cc}",
            "Chargeable minus used: requested capacity that is billed but not used.",
            ((scaled(res, idle), legend([cc]), ""),), "number", 12, 4,
            tags=("by-costcenter", "efficiency")))
    for res in RESOURCES:
        out.append(Panel(
            f"Unallocated share of chargeable {what[res]} per org key",
            "Per org key, the share of chargeable capacity of pods without that label.",
            tuple((share_now(res, key), "", key) for key in q.keys), "%", 12, 4,
            tags=("unallocated",)))
    for res in RESOURCES:
        expr = q.rate(f"sum by (kube_cluster_name, kube_namespace_name, kube_workload_type, "
                      f"kube_workload_name) ({q.unallocated(res, cc)})")
        out.append(Panel(
            f"Top 20 workloads without {cc} ({what[res]})",
            f"Workloads charged to {UNALLOCATED}: label them (see `chargeback-exporter "
            "check-labels`).",
            ((f"topk(20, {scaled(res, expr)})",
              "{{kube_namespace_name}}/{{kube_workload_name}}", ""),),
            "number", 12, 5, tags=("unallocated",)))
    # GPUs and claims, charged by allocation (docs/queries.md); each GPU resource and storage
    # class on its own, as the rate card prices them.
    gpus = q.gpus()
    names = list(q.resources.gpu.resources.items())
    for i, (name, charged) in enumerate(names):
        total = q.total(q.rate(f"sum({q.gpus(name)})"))
        per_row = min(4, len(names) - i // 4 * 4)  # rows of up to 4 that fill the grid
        out.append(Panel(
            f"Allocated {charged} GPU-hours in the viewed range",
            f"GPUs ({name}) requested by running pods, added up over the viewed range: "
            "charged whole, whatever their utilisation.",
            ((total, "", "GPU-hours"),), "number", GRID_WIDTH // per_row, 3, number=True,
            tags=("gpu",)))
    out.append(Panel(
        f"Allocated GPUs per hour by {cc} and GPU resource",
        f"GPUs requested by running pods, averaged over each interval, by {cc} and "
        "kube-state-metrics resource (MIG and time-sliced profiles apart).",
        ((q.rate(f"sum by ({cc}, resource) ({q.org(gpus, org_keys([cc]))})"),
          legend([cc, "resource"]), ""),), "number", 12, 4, tags=("gpu",)))
    st = q.resources.storage
    out.append(Panel(
        "Requested storage (GiB) per hour by namespace and storage class",
        "Each claim's requested capacity while it exists, mounted or not, averaged over each "
        "interval, by namespace and storage class. The records charge a mounted claim to the "
        "workloads that mount it.",
        ((q.gib(q.rate(f"sum by (kube_cluster_name, kube_namespace_name, {st.class_label}) "
                       f"({q.claims()})")),
          "{{kube_cluster_name}} / {{kube_namespace_name}} / {{" + st.class_label + "}}", ""),),
        "number", 12, 4, tags=("storage",)))
    for res in RESOURCES:
        idle = scaled(res, q.rate(q.idle_capacity(res)))
        out.append(Panel(
            f"Idle {what[res]} ({unit_now[res]}) per cluster",
            f"Nodes' allocatable {what[res]} less the chargeable {what[res]} of all pods, "
            "averaged over each interval, never below 0: what the __idle__ records bill.",
            ((idle, "{{kube_cluster_name}}", ""),), "number", 12, 4, tags=("idle",)))
    return out


def _layout(items: Sequence[Panel]) -> list[dict[str, int]]:
    """Left to right, top to bottom, on the 24-column grid."""
    layout: list[dict[str, int]] = []
    x = y = row_h = 0
    for i, p in enumerate(items, 1):
        if x + p.w > GRID_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        layout.append({"panelId": i, "x": x, "y": y, "w": p.w, "h": p.h})
        x += p.w
        row_h = max(row_h, p.h)
    return layout


def build_dashboard(org: OrgConfig | None = None, name: str = DEFAULT_NAME, *,
                    resources: ResourcesConfig | None = None,
                    idle: IdleConfig | None = None) -> dict[str, Any]:
    """The dashboard as Sysdig's v3 export format: `{"version": "v3", "dashboard": {...}}`,
    for the org labels, GPU resources and storage names (`resources`) and allocatable metric
    (`idle`) configured."""
    items = panels(Queries(OrgSources.from_config(org), resources, idle))
    return {
        "version": "v3",
        "dashboard": {
            "name": name,
            "description": (
                "Chargeback view of the Sysdig chargeback exporter: chargeable = max(request, "
                "usage) per pod, averaged over each panel interval at whatever resolution "
                "Sysdig serves; totals cover the viewed range. The exported billing records "
                "are authoritative."
            ),
            "schema": 3,
            "shared": False,
            "public": False,
            "scopeExpressionList": [],
            "eventDisplaySettings": {"enabled": False, "queryParams": {
                "severities": [], "alertStatuses": [], "categories": [], "filter": "",
                "teamScope": False}},
            "panels": [p.to_json(i) for i, p in enumerate(items, 1)],
            "layout": _layout(items),
        },
    }


def dump(dashboard: dict[str, Any]) -> str:
    """The JSON text exactly as shipped: indented, keys in build order, trailing newline."""
    return json.dumps(dashboard, indent=2) + "\n"


def shipped_text() -> str:
    """`exporter/data/dashboard.json` as packaged."""
    return importlib.resources.files("exporter").joinpath("data", DATA_FILE).read_text("utf-8")


# ---------------------------------------------------------------------------------------------
# Install through the Sysdig client


@dataclass(frozen=True, slots=True)
class InstallResult:
    action: str  # "created" or "updated"
    dashboard_id: int | str | None
    version: int | None
    duplicates: tuple[Any, ...] = ()


class DashboardInstaller:
    """Creates or updates the chargeback dashboard through `SysdigClient`'s dashboard calls."""

    def __init__(self, client: SysdigClient) -> None:
        self._client = client

    def find(self, name: str) -> list[dict[str, Any]]:
        """Dashboards visible to the token whose name is exactly `name`, lowest id first."""
        found = self._client.find_dashboards(name)
        boards = [item["dashboard"] for item in found]
        return sorted(boards, key=lambda b: b.get("id") or 0)

    def install(self, dashboard: dict[str, Any], name: str, shared: bool = False) -> InstallResult:
        """Create `dashboard` (v3 export format) named `name`, or update the one of that name.

        An existing dashboard has only its panels, layout and description replaced; whatever
        users set in the UI (scope, events overlay, sharing, public link, favourite, and any
        field this version does not know) is sent back as it was, and its version moves on.
        With several of that name, the one with the lowest id is updated and the others are
        reported in `duplicates`.
        """
        existing = self.find(name)
        if existing:
            target = existing[0]
            full = self._client.get_dashboard(target["id"])
            current = dict(full.get("dashboard", full))
            body = dashboard["dashboard"]
            for key in OWNED_FIELDS:
                current[key] = body[key]
            updated = self._client.update_dashboard(current)
            board = updated.get("dashboard", updated)
            return InstallResult("updated", board.get("id"), board.get("version"),
                                 tuple(b.get("id") for b in existing[1:]))
        with _as_file(dashboard) as path:
            created = self._client.create_dashboard_from_file(name, str(path), shared=shared)
        board = created.get("dashboard", created)
        return InstallResult("created", board.get("id"), board.get("version"))


@contextlib.contextmanager
def _as_file(dashboard: dict[str, Any]) -> Iterator[Path]:
    """The packaged file when it is what we would install, else a temporary copy."""
    text = dump(dashboard)
    if text == shipped_text():
        with importlib.resources.as_file(
            importlib.resources.files("exporter").joinpath("data", DATA_FILE)
        ) as path:
            yield path
        return
    with tempfile.TemporaryDirectory(prefix="chargeback-dashboard-") as tmp:
        path = Path(tmp) / DATA_FILE
        path.write_text(text, encoding="utf-8")
        yield path


# ---------------------------------------------------------------------------------------------
# CLI


def _cmd_install(args: argparse.Namespace, *, clock: Clock) -> int:
    config = config_from_args(args)
    dashboard = build_dashboard(config.org, args.name, resources=config.resources,
                                idle=config.idle)
    result = build_dashboard_installer(config, clock).install(dashboard, args.name, shared=args.shared)
    print(f"{result.action} dashboard {args.name!r} (id {result.dashboard_id}, "
          f"version {result.version}) on {config.sysdig.url}")
    if result.duplicates:
        ids = ", ".join(str(i) for i in result.duplicates)
        print(f"chargeback-exporter dashboard: warning: other dashboards named {args.name!r} "
              f"left as they are (ids {ids})", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace, *, clock: Clock) -> int:
    config = config_from_args(args)
    sys.stdout.write(dump(build_dashboard(config.org, args.name, resources=config.resources,
                                          idle=config.idle)))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dashboard install` and `dashboard export`."""
    p = subparsers.add_parser("dashboard", help="install or print the Sysdig chargeback dashboard")
    sub = p.add_subparsers(dest="dashboard_command", metavar="ACTION", required=True)
    inst = sub.add_parser(
        "install", help="create the dashboard in Sysdig, or update the one of that name",
        description="Create the chargeback dashboard in Sysdig Monitor with the configured URL "
        "and token (sysdig.url, sysdig.token); if a dashboard of that name exists, update it.",
    )
    inst.add_argument("--name", default=DEFAULT_NAME, help=f"dashboard name (default: {DEFAULT_NAME})")
    inst.add_argument("--shared", action="store_true", help="share a newly created dashboard")
    add_common(inst)
    inst.set_defaults(handler=_cmd_install)
    exp = sub.add_parser("export", help="print the dashboard JSON (Sysdig v3 format)")
    exp.add_argument("--name", default=DEFAULT_NAME, help=f"dashboard name (default: {DEFAULT_NAME})")
    add_common(exp)
    exp.set_defaults(handler=_cmd_export)


if __name__ == "__main__":
    sys.stdout.write(dump(build_dashboard()))
