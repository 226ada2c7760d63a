"""The PromQL the exporter sends to Sysdig, in one place (documented in docs/queries.md).

Every query is evaluated once per period as an instant query at `t = end - step/2`:

- A subquery `[P:step]` evaluated at `t` visits the steps aligned to `step` in `[t-P, t]`, which
  for an aligned period `[start, end)` are exactly `start, start+step, ..., end-step`.
- Inside, `last_over_time(m[step/2])` at a step `τ` sees only the sample stamped `τ`. That
  replaces the instant selector's 5-minute lookback, so a pod that stopped is not charged for
  the minutes after its last sample, and neither edge of a window ever sits on a sample (so
  Prometheus 2.x closed and 3.x left-open ranges give the same answer).
- A request counts at a step only where its pod has a usage sample at that step (`R and on
  (pod) U`): kube-state-metrics keeps the request series of Pending, Completed, Evicted and
  Failed pods until the pod object is deleted, and such a pod is not running.
- The max of request and usage is taken per step at the configured grain (pod by default) with
  `(U >= R) or R or U`: an element-wise max that keeps a side when the other is missing.
- The integral is summed to the record grain on the server, so the response has one series per
  workload, not per pod and sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.model import Resource

CPU_USED = "sysdig_container_cpu_cores_used"
MEM_USED = "sysdig_container_memory_used_bytes"
REQUESTS = "kube_pod_container_resource_requests"
ALLOCATABLE = "kube_node_status_allocatable"  # the default of `idle.metric`

# Sysdig names a container in the agent's cAdvisor-style label on usage series and in
# kube-state-metrics' label on request series (docs/queries.md, "Container grain").
USAGE_CONTAINER_LABEL = "container_label_io_kubernetes_container_name"
REQUEST_CONTAINER_LABEL = "kube_pod_container_name"

RECORD_GRAIN = ("kube_cluster_name", "kube_namespace_name", "kube_workload_type", "kube_workload_name")
POD_GRAIN = (*RECORD_GRAIN, "kube_pod_name")
CONTAINER_GRAIN = (*POD_GRAIN, REQUEST_CONTAINER_LABEL)
WORKLOAD_KINDS = ("deployment", "statefulset", "daemonset", "job", "cronjob")

USAGE_METRIC: dict[Resource, str] = {"cpu": CPU_USED, "memory": MEM_USED}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def selector(metric: str, matchers: Sequence[tuple[str, str, str]] = ()) -> str:
    """`metric{l="v",...}` with values escaped."""
    inner = ",".join(f'{name}{op}"{_escape(value)}"' for name, op, value in matchers)
    return f"{metric}{{{inner}}}" if inner else metric


def usage_container(expr: str) -> str:
    """`expr` (usage series) with its container named as request series name it, so both sum
    by the same labels. `(.+)`: a series without Sysdig's container label keeps what it has."""
    return (f'label_replace({expr}, "{REQUEST_CONTAINER_LABEL}", "$1", '
            f'"{USAGE_CONTAINER_LABEL}", "(.+)")')


def grouped(metric: str, matchers: Sequence[tuple[str, str, str]], by: Sequence[str],
            inner: str, op: str = "sum") -> str:
    """`op by (by) (inner(metric{matchers}))` (`op` `sum` by default), where `inner` is a
    template with `{}` for the selector, e.g. `last_over_time({}[5s])`; usage is relabelled
    first when `by` names the container."""
    expr = inner.format(selector(metric, matchers))
    if metric != REQUESTS and REQUEST_CONTAINER_LABEL in by:
        expr = usage_container(expr)
    return f"{op} by ({', '.join(by)}) ({expr})"


def running(request: str, pod_usage: str) -> str:
    """`request` (at pod or container grain) where the pod has usage in `pod_usage` (at pod
    grain): a request counts only while its pod runs, which the agent's usage samples show."""
    return f"({request} and on ({', '.join(POD_GRAIN)}) {pod_usage})"


def not_running(request: str, pod_usage: str) -> str:
    """The rest of `request`: what `running` leaves out, never billed."""
    return f"({request} unless on ({', '.join(POD_GRAIN)}) {pod_usage})"


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """The queries for one period at one grain and step, with the instant to evaluate them."""

    usage: dict[Resource, str]
    request: dict[Resource, str]
    chargeable: dict[Resource, str]
    labels: str
    coverage: str
    request_presence: str
    label_columns: tuple[str, ...]
    # `gpu.request`, `gpu.usage`, `storage.request`: resources charged by allocation, when
    # configured (`gpu_plan`, `storage_plan`).
    allocated: dict[str, str] = field(default_factory=dict)
    # Per cluster and allocatable resource name, Σ over steps of the nodes' allocatable (idle).
    allocatable: str | None = None

    def all(self) -> list[tuple[str, str]]:
        """(name, query) pairs in a fixed order."""
        out: list[tuple[str, str]] = []
        for res in ("cpu", "memory"):
            out.append((f"{res}.usage", self.usage[res]))
            out.append((f"{res}.request", self.request[res]))
            out.append((f"{res}.chargeable", self.chargeable[res]))
        out.append(("labels", self.labels))
        out.append(("coverage", self.coverage))
        out.append(("requests.present", self.request_presence))
        out.extend(self.allocated.items())
        if self.allocatable is not None:
            out.append(("allocatable", self.allocatable))
        return out


def label_columns(org_workload_labels: Sequence[str], org_namespace_labels: Sequence[str],
                  other_labels: Sequence[str] = ()) -> tuple[str, ...]:
    """Sysdig label names that carry org labels: `kube_<kind>_label_<k>` and namespace ones."""
    cols: list[str] = []
    for key in org_workload_labels:
        for kind in WORKLOAD_KINDS:
            cols.append(f"kube_{kind}_label_{key}")
    for key in org_namespace_labels:
        cols.append(f"kube_namespace_label_{key}")
    cols.extend(other_labels)
    return tuple(dict.fromkeys(cols))


@dataclass(frozen=True, slots=True)
class GpuNames:
    """What the GPU queries select: kube-state-metrics `resource` values, and the utilisation
    metric with the labels that name the pod holding each device (None: not reported)."""

    resources: tuple[str, ...]
    utilization: str | None = None
    pod_label: str = "pod"
    namespace_label: str = "namespace"


@dataclass(frozen=True, slots=True)
class StorageNames:
    """Sysdig's names for claims: capacity, class (info) and pod mounts (docs/queries.md)."""

    capacity: str
    info: str
    mounts: str
    claim_label: str
    class_label: str


# A claim no running pod mounts is charged as a record of its own (its namespace's labels).
CLAIM_KIND = "persistentvolumeclaim"


def plan(
    period_seconds: int,
    step: int,
    grain: str = "pod",
    clusters: Sequence[str] = (),
    columns: Sequence[str] = (),
    *,
    gpu: GpuNames | None = None,
    storage: StorageNames | None = None,
    allocatable: Sequence[str] = (),
    allocatable_metric: str = ALLOCATABLE,
) -> QueryPlan:
    """Build the period's queries. `clusters` restricts to those clusters (sharding);
    `allocatable` (the allocatable resource names, idle capacity) adds the `allocatable` query."""
    if step % 2:
        raise ValueError("step must be even")
    half = step // 2
    by_grain = POD_GRAIN if grain == "pod" else CONTAINER_GRAIN
    m = cluster_matchers(clusters)

    def sample(metric: str, extra: Sequence[tuple[str, str, str]] = ()) -> str:
        return grouped(metric, [*m, *extra], by_grain, f"last_over_time({{}}[{half}s])")

    def integral(expr: str, extra: Sequence[str] = ()) -> str:
        by = ", ".join((*RECORD_GRAIN, *extra))
        return f"sum by ({by}) (sum_over_time(({expr})[{period_seconds}s:{step}s]))"

    usage: dict[Resource, str] = {}
    request: dict[Resource, str] = {}
    charge: dict[Resource, str] = {}
    for res in ("cpu", "memory"):
        u = sample(USAGE_METRIC[res])
        pod_u = u if by_grain == POD_GRAIN else grouped(
            USAGE_METRIC[res], m, POD_GRAIN, f"last_over_time({{}}[{half}s])")
        r = running(sample(REQUESTS, [("resource", "=", res)]), pod_u)
        usage[res] = integral(u)
        request[res] = integral(r)
        charge[res] = integral(f"({u} >= {r}) or {r} or {u}")
    cols = ", ".join((*RECORD_GRAIN, *columns))
    labels = f"sum by ({cols}) (count_over_time({selector(CPU_USED, m)}[{period_seconds}s]))"
    cu = f"count by (kube_cluster_name) (last_over_time({selector(CPU_USED, m)}[{half}s]))"
    cr = (
        "count by (kube_cluster_name) "
        f"(last_over_time({selector(REQUESTS, [*m, ('resource', '=', 'cpu')])}[{half}s]))"
    )
    # Any request series, running pods or not: coverage is about collection (agent and
    # kube-state-metrics both reporting), not about what is billed.
    coverage = f"count_over_time(({cu} and {cr})[{period_seconds}s:{step}s])"
    # Clusters with any request series in the period, running pods or not: with `labels` (any
    # usage series), what tells a cluster whose agent or kube-state-metrics is gone.
    present = ("count by (kube_cluster_name) "
               f"(count_over_time({selector(REQUESTS, [*m, ('resource', '=', 'cpu')])}"
               f"[{period_seconds}s]))")
    allocated: dict[str, str] = {}
    pod_u = grouped(CPU_USED, m, POD_GRAIN, f"last_over_time({{}}[{half}s])")
    if gpu is not None and gpu.resources:
        allocated.update(gpu_plan(gpu, m, by_grain, pod_u, half, integral))
    if storage is not None:
        # By claim too: the source rounds each claim's parts so they add up to its whole.
        allocated["storage.request"] = integral(storage_step(storage, m, pod_u, half),
                                                (storage.class_label, storage.claim_label))
    alloc = None
    if allocatable:
        names = "|".join(re_escape(n) for n in allocatable)
        node = (f"sum by (kube_cluster_name, resource) (last_over_time("
                f"{selector(allocatable_metric, [*m, ('resource', '=~', names)])}[{half}s]))")
        # The nodes that have a sample at a step count at that step, as pods do: a node that
        # joins or leaves inside the period counts for the steps it lives.
        alloc = (f"sum by (kube_cluster_name, resource) "
                 f"(sum_over_time(({node})[{period_seconds}s:{step}s]))")
    return QueryPlan(usage, request, charge, labels, coverage, present, tuple(columns),
                     allocated, alloc)


def gpu_plan(names: GpuNames, m: Sequence[tuple[str, str, str]], by_grain: Sequence[str],
             pod_u: str, half: int, integral: Callable[[str, Sequence[str]], str],
             ) -> dict[str, str]:
    """GPU queries: `gpu.request` (the allocation, charged) and `gpu.usage` (utilisation,
    information), per workload and kube-state-metrics `resource`.

    A request counts while its pod runs (`running`), as for cpu and memory; utilisation (0-100
    per device) is summed per pod and reported on each GPU resource the running pod holds.
    """
    wanted = "|".join(re_escape(r) for r in names.resources)
    req = grouped(REQUESTS, [*m, ("resource", "=~", wanted)], (*by_grain, "resource"),
                  f"last_over_time({{}}[{half}s])")
    held = running(req, pod_u)
    out = {"gpu.request": integral(held, ("resource",))}
    if names.utilization is not None:
        util = f"last_over_time({selector(names.utilization, m)}[{half}s])"
        for dst, src in (("kube_pod_name", names.pod_label),
                         ("kube_namespace_name", names.namespace_label)):
            util = f'label_replace({util}, "{dst}", "$1", "{src}", "(.+)")'
        per_pod = f"(sum by ({', '.join(POD_GRAIN[:2] + POD_GRAIN[4:])}) ({util}) / 100)"
        holds = f"group by ({', '.join(POD_GRAIN)}, resource) ({held})"
        out["gpu.usage"] = integral(
            f"{per_pod} * on ({', '.join(POD_GRAIN[:2] + POD_GRAIN[4:])}) group_right {holds}",
            ("resource",))
    return out


def storage_step(names: StorageNames, m: Sequence[tuple[str, str, str]], pod_u: str,
                 half: int) -> str:
    """Bytes of claim capacity at one step, by workload and storage class.

    A claim counts while it exists (its capacity series), mounted or not. At a step where
    running pods of one or more workloads mount it, its capacity is split evenly between those
    workloads; otherwise it is charged as a workload of kind `CLAIM_KIND` named after the claim.
    """
    claim = (*RECORD_GRAIN[:2], names.claim_label)
    on = f"on ({', '.join(claim)})"
    # One capacity and one class per claim, however many series carry them (two collectors
    # answer the same claim twice): `max` and `group`, never `sum`, which would bill it twice.
    cap = grouped(names.capacity, m, claim, f"last_over_time({{}}[{half}s])", "max")
    cls = grouped(names.info, m, (*claim, names.class_label), f"last_over_time({{}}[{half}s])",
                  "group")
    # A claim whose class is not known is still charged, at class "" (read as `<none>`).
    sized = f"(({cap} * {on} group_left ({names.class_label}) {cls}) or {on} {cap})"
    mount_pods = grouped(names.mounts, m, (*POD_GRAIN, names.claim_label),
                         f"last_over_time({{}}[{half}s])", "group")
    mounted = (f"group by ({', '.join((*RECORD_GRAIN, names.claim_label))}) "
               f"({mount_pods} and on ({', '.join(POD_GRAIN)}) {pod_u})")
    holders = f"count by ({', '.join(claim)}) ({mounted})"
    shared = (f"{mounted} * {on} group_left ({names.class_label}) "
              f"({sized} / {on} group_left {holders})")
    alone = f"({sized} unless {on} {mounted})"
    alone = f'label_replace({alone}, "kube_workload_type", "{CLAIM_KIND}", "", "")'
    alone = f'label_replace({alone}, "kube_workload_name", "$1", "{names.claim_label}", "(.+)")'
    return f"(({shared}) or {alone})"


def series_count(period_seconds: int, clusters: Sequence[str] = ()) -> str:
    """Usage plus CPU request series per cluster in the period: the pre-count that sizes the
    cluster groups (`exporter.limits`), one series per cluster.

    No answer of the plan has more series than the usage series of the clusters it covers, and
    a cluster with request series only (its agent gone) is counted too, so that it is queried
    and held rather than missed. A series without a cluster label counts under "".
    """
    m = cluster_matchers(clusters)
    usage = f"count by (kube_cluster_name) (count_over_time({selector(CPU_USED, m)}[{period_seconds}s]))"
    requests = ("count by (kube_cluster_name) (count_over_time("
                f"{selector(REQUESTS, [*m, ('resource', '=', 'cpu')])}[{period_seconds}s]))")
    # The `or` keeps both sides apart (the label added), and the sum adds them per cluster.
    return (f'sum by (kube_cluster_name) ({usage} or '
            f'label_replace({requests}, "series", "requests", "", ""))')


def cluster_matchers(clusters: Sequence[str]) -> list[tuple[str, str, str]]:
    """The matchers that restrict a selector to `clusters` (sharding); none when empty."""
    if not clusters:
        return []
    return [("kube_cluster_name", "=~", "|".join(re_escape(c) for c in clusters))]


def re_escape(value: str) -> str:
    out = []
    for ch in value:
        if ch in r".^$*+?()[]{}|\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def clusters_present(period_seconds: int) -> str:
    """The clusters with any usage or request series in a period: one series per cluster, so
    the answer stays small whatever the fleet (hash sharding lists a period's clusters with it)."""
    return " or ".join(
        f"count by (kube_cluster_name) (count_over_time({metric}[{period_seconds}s]))"
        for metric in (CPU_USED, MEM_USED, REQUESTS))
