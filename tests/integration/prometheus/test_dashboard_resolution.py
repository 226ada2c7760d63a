"""Every dashboard panel on rolled-up data, evaluated by a real Prometheus.

Sysdig keeps 10 s samples for hours only; beyond that it serves 1 min, 10 min, 1 h and 1 day
roll-ups (each sample the average of its bucket, stamped at the bucket's start), and a PromQL
panel gets `$__interval` (its sampling) and `$__range` (the viewed range) substituted. Here the
same small fleet is rolled up to 60 s, 600 s and 3600 s samples (one day each in one TSDB), the
panels are expanded as Sysdig would and evaluated by Debian's Prometheus 2.x, and every value is
compared with what the served samples say:

- a total over the viewed range is the sum over pods and samples of max(request, usage) times
  the sample spacing (the "known total"), whatever the spacing;
- a chart point is, per group, the average over its interval of max(request, usage) per pod and
  interval, in cores or GiB (unit-hours per hour);
- as in the bill, a request counts only where its pod has usage (runs) in the sample, or in the
  interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from chargeback_simulator.prometheus import RealPrometheus
from exporter.dashboard import OrgSources, Panel, Queries, panels, sysdig_variables
from exporter.model import GIB, UNALLOCATED
from exporter.queries import CPU_USED, MEM_USED, REQUESTS
from tests.rigs.prometheus import serving

DAY = 86400
T0 = 1717200000  # 2024-06-01T00:00:00Z
SPAN = 6 * 3600  # six hours of data per resolution
RESOLUTIONS = (60, 600, 3600)
MIB = 2**20
GRAIN = ("kube_cluster_name", "kube_namespace_name", "kube_workload_type", "kube_workload_name",
         "kube_pod_name")


def day_of(spacing: int) -> int:
    """Each resolution's data lives on its own day, far from the others' windows."""
    return T0 + DAY * (1 + RESOLUTIONS.index(spacing))


# --------------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class Pod:
    """A pod, its org label columns (on every series) and its expected org keys.

    `cpu`/`mem` give (usage, request) per container at a 10 s instant `t` (seconds from the
    day's start); usage None means the pod has no usage series at all.
    """

    cluster: str
    namespace: str
    kind: str
    workload: str
    name: str
    containers: tuple[str, ...]
    columns: Mapping[str, str]
    org: Mapping[str, str]
    start: int
    end: int
    cpu: Callable[[str, int], tuple[float | None, float]]
    mem: Callable[[str, int], tuple[float | None, float]]
    relabel: tuple[int, Mapping[str, str]] | None = None  # (from t, columns from then on)

    def columns_at(self, t: int) -> Mapping[str, str]:
        if self.relabel is not None and t >= self.relabel[0]:
            return self.relabel[1]
        return self.columns

    @property
    def grain(self) -> tuple[str, ...]:
        return (self.cluster, self.namespace, self.kind, self.workload, self.name)


def wobble(t: int, size: float) -> float:
    """+size in even minutes, -size in odd ones: averages out over 10 minutes, not over 1."""
    return size if (t // 60) % 2 == 0 else -size


def block(t: int) -> int:
    return t // 600


FULL = {"businessunit": UNALLOCATED, "department": UNALLOCATED, "team": UNALLOCATED,
        "costcenter": UNALLOCATED}

# The two pods of shop/web carry their workload's and namespace's labels: the same columns, the
# same org keys.
WEB_COLUMNS = {"kube_deployment_label_costcenter": "4100", "kube_deployment_label_team": "web",
               "kube_namespace_label_costcenter": "9999",
               "kube_namespace_label_businessunit": "retail",
               "kube_namespace_label_department": "ecom"}
WEB_ORG = {"costcenter": "4100", "team": "web", "businessunit": "retail", "department": "ecom"}

PODS = (
    # Usage above request for CPU, below it for memory; the namespace's cost center loses to
    # the workload's.
    Pod("c1", "shop", "deployment", "web", "web-a", ("app", "proxy"),
        WEB_COLUMNS, WEB_ORG,
        0, SPAN,
        lambda c, t: ((0.5 + 0.125 * (block(t) % 3) + wobble(t, 1 / 16), 0.25) if c == "app"
                      else (0.125, 0.0625)),
        lambda c, t: ((256 * MIB + 64 * MIB * (block(t) % 2), 512 * MIB) if c == "app"
                      else (32 * MIB, 16 * MIB))),
    Pod("c1", "shop", "deployment", "web", "web-b", ("app",),
        WEB_COLUMNS, WEB_ORG,
        0, SPAN,
        lambda c, t: (0.125 + wobble(t, 1 / 32), 0.5),
        lambda c, t: (96 * MIB + wobble(t, 8 * MIB), 128 * MIB)),
    # Usage crosses the request every 10 minutes; a blank workload team falls back to the
    # namespace's.
    Pod("c1", "data", "statefulset", "db", "db-0", ("pg",),
        {"kube_statefulset_label_costcenter": "5200", "kube_statefulset_label_team": "  ",
         "kube_namespace_label_team": "platform", "kube_namespace_label_businessunit": "corp",
         "kube_namespace_label_department": "infra"},
        {"costcenter": "5200", "team": "platform", "businessunit": "corp", "department": "infra"},
        0, SPAN,
        lambda c, t: (1.0 + wobble(t, 1 / 64) if block(t) % 2 == 0 else 0.25 + wobble(t, 1 / 64),
                      0.5),
        lambda c, t: (GIB if block(t) % 2 else 256 * MIB, 512 * MIB)),
    # No cost center: unallocated; runs from 02:00 to 03:30 only.
    Pod("c2", "tmp", "job", "batch", "batch-x", ("run",),
        {"kube_namespace_label_businessunit": "retail"},
        {**FULL, "businessunit": "retail"},
        2 * 3600, 3 * 3600 + 1800,
        lambda c, t: (2.0 + wobble(t, 1 / 8), 1.0),
        lambda c, t: (2 * GIB, GIB)),
    # Request above usage; no team anywhere.
    Pod("c2", "kube-system", "daemonset", "agent", "agent-z", ("agent",),
        {"kube_daemonset_label_costcenter": "5200", "kube_namespace_label_businessunit": "corp",
         "kube_namespace_label_department": "infra"},
        {"costcenter": "5200", "team": UNALLOCATED, "businessunit": "corp",
         "department": "infra"},
        0, SPAN,
        lambda c, t: (0.0625, 0.125),
        lambda c, t: (128 * MIB, 128 * MIB)),
    # Requests and no usage series (a pod that never runs, e.g. Pending): never charged.
    Pod("c2", "data", "statefulset", "cache", "cache-0", ("redis",),
        {"kube_statefulset_label_costcenter": "7300"},
        FULL,
        3600, 5 * 3600,
        lambda c, t: (None, 0.25),
        lambda c, t: (None, 64 * MIB)),
)


@dataclass
class Served:
    """The samples Sysdig serves at one spacing: per series, {epoch seconds: value}."""

    spacing: int
    series: dict[tuple[tuple[str, str], ...], dict[int, float]] = field(default_factory=dict)

    def add(self, labels: Mapping[str, str], t: int, value: float) -> None:
        self.series.setdefault(tuple(sorted(labels.items())), {})[t] = value


def roll_up(spacing: int, pods: tuple[Pod, ...] = PODS, day: int | None = None) -> Served:
    """Average each series' 10 s samples per bucket of `spacing`, stamped at its start (a pod
    relabelled within a bucket has a sample in it for each label set, as each series is rolled
    up on its own)."""
    day = day_of(spacing) if day is None else day
    served = Served(spacing)
    for pod in pods:
        for container in pod.containers:
            for bucket in range(0, SPAN, spacing):
                present = [t for t in range(bucket, bucket + spacing, 10) if pod.start <= t < pod.end]
                by_columns: dict[tuple[tuple[str, str], ...], list[int]] = {}
                for t in present:
                    by_columns.setdefault(tuple(sorted(pod.columns_at(t).items())), []).append(t)
                for columns, stamps in by_columns.items():
                    wire = {"kube_cluster_name": pod.cluster, "kube_namespace_name": pod.namespace,
                            "kube_workload_type": pod.kind, "kube_workload_name": pod.workload,
                            "kube_pod_name": pod.name, **dict(columns)}
                    _roll(served, pod, container, wire, day + bucket, stamps)
    return served


def _roll(served: Served, pod: Pod, container: str, wire: Mapping[str, str], stamp: int,
          stamps: list[int]) -> None:
    # The container named as Sysdig names it: the agent's label on usage, kube-state-metrics'
    # on requests.
    for res, fn in (("cpu", pod.cpu), ("memory", pod.mem)):
        pairs = [fn(container, t) for t in stamps]
        if pairs[0][0] is not None:
            used = [u for u, _ in pairs if u is not None]
            served.add({**wire, "__name__": CPU_USED if res == "cpu" else MEM_USED,
                        "container_label_io_kubernetes_container_name": container},
                       stamp, sum(used) / len(used))
        served.add({**wire, "__name__": REQUESTS, "resource": res,
                    "kube_pod_container_name": container},
                   stamp, sum(r for _, r in pairs) / len(pairs))


# A pod whose cost center label is removed at 02:50, next to one that keeps its labels: on 600 s
# samples, the hourly interval 02:00-03:00 holds five samples with the label and one without.
RELABEL_DAY = T0 + 5 * DAY
RELABELLED = (
    Pod("c1", "shop", "deployment", "api", "api-0", ("app",),
        {"kube_deployment_label_costcenter": "4100"}, {**FULL, "costcenter": "4100"},
        0, SPAN,
        lambda c, t: (0.75, 0.5),
        lambda c, t: (256 * MIB, 128 * MIB),
        relabel=(10200, {})),
    PODS[4],
)


def openmetrics(sets: list[Served]) -> str:
    lines: list[str] = []
    families: dict[str, list[str]] = defaultdict(list)
    for served in sets:
        for key, points in served.series.items():
            labels = dict(key)
            name = labels.pop("__name__")
            body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            families[name].extend(f"{name}{{{body}}} {points[t]!r} {t}" for t in sorted(points))
    for name, rows in families.items():
        lines.append(f"# TYPE {name} gauge")
        lines.extend(rows)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class Window:
    """Per pod, in `[start, end)`: usage and request sums per resource, and the samples a
    full-window series has (the sample count every pod's sums are averaged over)."""

    used: dict[tuple[str, str], dict[tuple[str, ...], float]]  # (res, "u"|"r") -> pod -> sum
    samples: int

    def charge(self, res: str) -> dict[tuple[str, ...], float]:
        u, r = self.used[(res, "u")], self.used[(res, "r")]
        return {p: max(u.get(p, -math.inf), r.get(p, -math.inf)) for p in {*u, *r}}


def window(served: Served, start: int, end: int) -> Window:
    used: dict[tuple[str, str], dict[tuple[str, ...], float]] = defaultdict(lambda: defaultdict(float))
    samples = 0
    for key, points in served.series.items():
        labels = dict(key)
        inside = [v for t, v in points.items() if start <= t < end]
        if not inside:
            continue
        pod = tuple(labels[g] for g in GRAIN)
        name = labels["__name__"]
        if name == REQUESTS:
            used[(labels["resource"], "r")][pod] += sum(inside)
        else:
            used[("cpu" if name == CPU_USED else "memory", "u")][pod] += sum(inside)
            if name == CPU_USED:
                samples = max(samples, len(inside))
    for k in [(res, side) for res in ("cpu", "memory") for side in ("u", "r")]:
        used.setdefault(k, defaultdict(float))
    for res in ("cpu", "memory"):  # a request counts only where its pod has usage
        used[(res, "r")] = defaultdict(float, {p: v for p, v in used[(res, "r")].items()
                                               if p in used[(res, "u")]})
    return Window({k: dict(v) for k, v in used.items()}, samples)


ORG = {pod.grain: pod for pod in PODS}


def key_of(pod: tuple[str, ...], name: str) -> str:
    p = ORG[pod]
    return {"kube_cluster_name": p.cluster, "kube_namespace_name": p.namespace,
            "kube_workload_type": p.kind, "kube_workload_name": p.workload}.get(name) or p.org[name]


def by(values: Mapping[tuple[str, ...], float], names: tuple[str, ...],
       keep: Callable[[tuple[str, ...]], bool] = lambda p: True) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for pod, v in values.items():
        if keep(pod):
            out[tuple(key_of(pod, n) for n in names)] += v
    return dict(out)


def scale(res: str) -> float:
    return 1 / GIB if res == "memory" else 1.0


def known_total(served: Served, res: str, start: int, end: int,
                keep: Callable[[tuple[str, ...]], bool] = lambda p: True) -> float:
    """Sum over pods and samples of max(request, usage) times the spacing, in unit-hours."""
    total = 0.0
    for t in range(start, end, served.spacing):
        w = window(served, t, t + 1)
        total += sum(v for p, v in w.charge(res).items() if keep(p))
    return total * served.spacing / 3600 * scale(res)


# --------------------------------------------------------------------------------- Prometheus


@pytest.fixture(scope="module")
def served() -> dict[int, Served]:
    return {s: roll_up(s) for s in RESOLUTIONS}


@pytest.fixture(scope="module")
def relabelled() -> Served:
    return roll_up(600, RELABELLED, RELABEL_DAY)


@pytest.fixture(scope="module")
def prometheus(served: dict[int, Served], relabelled: Served,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPrometheus]:
    workdir = tmp_path_factory.mktemp("rolled-up")
    source = workdir / "rolled-up.om"
    source.write_text(openmetrics([*served.values(), relabelled]), encoding="utf-8")
    with serving(RealPrometheus(workdir), lambda server: server.load_openmetrics(source),
                 "the dashboard test") as server:
        yield server


def get(prom: RealPrometheus, endpoint: str, **params: Any) -> list[dict[str, Any]]:
    resp = requests.get(f"{prom.url}/api/v1/{endpoint}", params=params, timeout=60)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", body.get("error")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def items() -> list[Panel]:
    # The cpu and memory panels: this fleet has no GPUs, claims or nodes, whose panels
    # test_dashboard_allocations.py checks against a fleet that has them.
    return [p for p in panels(Queries(OrgSources.from_config()))
            if not {"gpu", "storage", "idle"} & set(p.tags)]


def one(items: list[Panel], name: str) -> Panel:
    [p] = [p for p in items if p.name == name]
    return p


def close(actual: Mapping[Any, float], expected: Mapping[Any, float], what: str) -> None:
    assert set(actual) == set(expected), (what, sorted(actual), sorted(expected))
    for k, v in expected.items():
        assert math.isclose(actual[k], v, rel_tol=1e-9, abs_tol=1e-12), (what, k, actual[k], v)


# --------------------------------------------------------------------------------- the tests

UNITS = {"cpu": "core-hours", "memory": "GiB-hours"}
WHAT = {"cpu": "CPU", "memory": "memory"}
TITLE = {"cpu": "CPU", "memory": "Memory"}
UNIT_NOW = {"cpu": "cores", "memory": "GiB"}


@pytest.mark.parametrize("spacing", RESOLUTIONS)
@pytest.mark.parametrize("res", ["cpu", "memory"])
def test_totals_over_the_viewed_range_are_the_known_totals(
    prometheus: RealPrometheus, served: dict[int, Served], items: list[Panel], spacing: int,
    res: str,
) -> None:
    data, day = served[spacing], day_of(spacing)
    # Viewed live: the range ends a few seconds after the last full interval.
    at = day + SPAN + 7
    total = one(items, f"Chargeable {UNITS[res]} in the viewed range")
    expr = sysdig_variables(total.queries[0][0], interval=spacing, range_=SPAN)
    [r] = get(prometheus, "query", query=expr, time=at)
    expected = known_total(data, res, day, day + SPAN)
    assert math.isclose(float(r["value"][1]), expected, rel_tol=1e-9), (spacing, r, expected)

    unallocated = known_total(data, res, day, day + SPAN,
                              lambda p: ORG[p].org["costcenter"] == UNALLOCATED)
    share = one(items, f"Unallocated share of {UNITS[res]} (no costcenter) in the viewed range")
    expr = sysdig_variables(share.queries[0][0], interval=spacing, range_=SPAN)
    [r] = get(prometheus, "query", query=expr, time=at)
    assert math.isclose(float(r["value"][1]), 100 * unallocated / expected, rel_tol=1e-9)


def test_known_totals_agree_where_the_roll_up_loses_nothing(served: dict[int, Served]) -> None:
    # Sanity of the data set: values change every 10 minutes (and the minute wobble averages
    # out), so 60 s and 600 s samples hold the same totals; hourly ones lose the crossings.
    for res in ("cpu", "memory"):
        a = known_total(served[60], res, day_of(60), day_of(60) + SPAN)
        b = known_total(served[600], res, day_of(600), day_of(600) + SPAN)
        c = known_total(served[3600], res, day_of(3600), day_of(3600) + SPAN)
        assert math.isclose(a, b, rel_tol=1e-12) and not math.isclose(a, c, rel_tol=1e-6)


def expected_chart(panel: Panel, query_index: int, w: Window) -> dict[tuple[str, ...], float]:
    """What one query of a chart panel shows for the interval `w`, by its legend labels."""
    name = panel.name
    for res in ("cpu", "memory"):
        n, s = w.samples, scale(res)
        charge, used, req = w.charge(res), w.used[(res, "u")], w.used[(res, "r")]
        unalloc = lambda p: ORG[p].org["costcenter"] == UNALLOCATED  # noqa: E731
        if name == f"Chargeable {UNITS[res]} per hour by costcenter":
            return {k: v / n * s for k, v in by(charge, ("costcenter",)).items()}
        if name == f"{TITLE[res]} consumption ({UNIT_NOW[res]} used) by costcenter":
            return {k: v / n * s for k, v in by(used, ("costcenter",)).items()}
        for title, names in (("businessunit", ("businessunit",)),
                             ("businessunit / department", ("businessunit", "department")),
                             ("department / team", ("department", "team")),
                             ("team / namespace", ("team", "kube_namespace_name"))):
            if name == f"Chargeable {UNITS[res]} per hour by {title}":
                return {k: v / n * s for k, v in by(charge, names).items()}
        if name == f"Top 20 workloads by chargeable {UNITS[res]} per hour":
            names = ("costcenter", "team", "kube_cluster_name", "kube_namespace_name",
                     "kube_workload_type", "kube_workload_name")
            return {k: v / n * s for k, v in by(charge, names).items()}
        if name == f"{TITLE[res]} efficiency (used / requested) by costcenter":
            u, r = by(used, ("costcenter",)), by(req, ("costcenter",))
            return {k: 100 * u[k] / r[k] for k in u.keys() & r.keys()}
        if name == f"Idle but charged {WHAT[res]} ({UNIT_NOW[res]}) by costcenter":
            c, u = by(charge, ("costcenter",)), by(used, ("costcenter",))
            return {k: (c[k] - u[k]) / n * s for k in c.keys() & u.keys()}
        if name == f"Unallocated share of chargeable {WHAT[res]} per org key":
            key = ("costcenter", "businessunit", "department", "team")[query_index]
            part = sum(v for p, v in charge.items() if ORG[p].org[key] == UNALLOCATED)
            return {(): 100 * part / sum(charge.values())}
        if name == f"Top 20 workloads without costcenter ({WHAT[res]})":
            names = ("kube_cluster_name", "kube_namespace_name", "kube_workload_type",
                     "kube_workload_name")
            return {k: v / n * s for k, v in by(charge, names, unalloc).items()}
    raise AssertionError(f"no expectation for panel {name!r}")


def legend_names(template: str) -> tuple[str, ...]:
    names: list[str] = []
    rest = template
    while "{{" in rest:
        rest = rest.split("{{", 1)[1]
        inner, rest = rest.split("}}", 1)
        names.append(inner)
    return tuple(names)


@pytest.mark.parametrize(("spacing", "interval"),
                         [(60, 60), (600, 600), (3600, 3600), (60, 600), (600, 3600), (3600, 600)],
                         ids=lambda v: f"{v}s")
def test_every_chart_point_is_the_intervals_average(
    prometheus: RealPrometheus, served: dict[int, Served], items: list[Panel], spacing: int,
    interval: int,
) -> None:
    data, day = served[spacing], day_of(spacing)
    charts = [p for p in items if not p.number]
    assert len(charts) >= 20
    for panel in charts:
        for i, (query, legend, _) in enumerate(panel.queries):
            names = legend_names(legend) if "{{" in legend else ()
            if "Top 20 workloads by" in panel.name:
                names = ("costcenter", "team", "kube_cluster_name", "kube_namespace_name",
                         "kube_workload_type", "kube_workload_name")
            elif "Top 20 workloads without" in panel.name:
                names = ("kube_cluster_name", "kube_namespace_name", "kube_workload_type",
                         "kube_workload_name")
            expr = sysdig_variables(query, interval=interval, range_=SPAN)
            result = get(prometheus, "query_range", query=expr, start=day + interval,
                         end=day + SPAN, step=interval)
            got: dict[int, dict[tuple[str, ...], float]] = defaultdict(dict)
            for r in result:
                k = tuple(r["metric"].get(n, "") for n in names)
                for t, v in r["values"]:
                    assert k not in got[int(t)], (panel.name, k, t)
                    got[int(t)][k] = float(v)
            for t in range(day + interval, day + SPAN + 1, interval):
                w = window(data, t - interval, t)
                expected = expected_chart(panel, i, w) if w.samples else {}
                close(got.get(t, {}), expected, f"{panel.name} [{i}] at {t - day}s")


def test_a_pod_relabelled_within_an_interval_counts_once_under_one_label_set(
    prometheus: RealPrometheus, relabelled: Served, items: list[Panel],
) -> None:
    day, interval = RELABEL_DAY, 3600

    def chart(name: str, index: int = 0) -> dict[int, dict[str, float]]:
        expr = sysdig_variables(one(items, name).queries[index][0], interval=interval,
                                range_=SPAN)
        out: dict[int, dict[str, float]] = defaultdict(dict)
        for r in get(prometheus, "query_range", query=expr, start=day + interval,
                     end=day + SPAN, step=interval):
            for t, v in r["values"]:
                out[int(t) - day][r["metric"].get("costcenter", "")] = float(v)
        return out

    # Every panel still answers (two label sets for one pod must not make a join fail).
    for panel in items:
        for query, _, _ in panel.queries:
            expr = sysdig_variables(query, interval=interval, range_=SPAN)
            if panel.number:
                assert get(prometheus, "query", query=expr, time=day + SPAN + 7), panel.name
            else:
                assert get(prometheus, "query_range", query=expr, start=day + interval,
                           end=day + SPAN, step=interval), panel.name
    by_cc = chart("Chargeable core-hours per hour by costcenter")
    share = chart("Unallocated share of chargeable CPU per org key")  # first query: costcenter
    # 02:00-03:00: the label set with most samples wins, and both views agree on it.
    assert by_cc[3 * 3600] == {"4100": 0.75, "5200": 0.125}
    assert share[3 * 3600] == {"": 0.0}
    # 03:00-04:00: only the unlabelled series is left.
    assert by_cc[4 * 3600] == {UNALLOCATED: 0.75, "5200": 0.125}
    assert share[4 * 3600] == {"": 100 * 0.75 / 0.875}
    assert set(by_cc) == set(range(interval, SPAN + 1, interval))
    for t, values in by_cc.items():
        assert math.isclose(sum(values.values()), 0.875, rel_tol=1e-12), t
