"""GPUs and persistent volume claims of a fleet (`FleetSpec.allocations`), with exact truth.

Seed-independent rules over the fleet's own workloads and pods, so the running rule (a request
counts while its pod has usage samples) is exercised by the same pods as cpu and memory:

- GPUs: of the workloads in fleet order, every sixth from the first requests whole GPUs
  (`nvidia_com_gpu`, 1, 2, 4 or 8 per pod), every sixth from the fourth a MIG slice
  (`nvidia_com_mig_1g_5gb`, 1 or 2) and every sixth from the fifth a `nvidia_com_mig_3g_20gb`;
  the seven-minute job holds one GPU, so its Completed pod keeps a GPU request series that is
  never charged. Each running pod has one `DCGM_FI_DEV_GPU_UTIL` series per device, stamped
  by the DCGM exporter's own pod, naming the consumer in `pod` and `namespace`, at 25, 50, 75
  or 100 %.
- Claims: every statefulset replica has `data-<pod>` (1 to 50 GiB, `standard` or
  `premium-ssd`), which outlives its pods: between two pods it is mounted by none. A namespace
  with two or more deployments and jobs has `shared-<namespace>` (10 GiB, `nfs`, ReadWriteMany)
  mounted by all their pods, split evenly between the workloads running at each step. Every
  namespace has `scratch-<namespace>` for 40 minutes of each 2 hours, never mounted; one
  namespace in three has no info series for it (class unknown, charged as `<none>`).

Series are served as 10 s samples (no roll-ups); `ground_truth` is exact at 10 s only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from chargeback_simulator.series import METRIC_NAME, IntArray, LabelMatcher, Labels, SeriesSet
from exporter.model import SampleSums, WorkloadKey

if TYPE_CHECKING:
    from chargeback_simulator.fleet import Fleet, Pod

STEP = 10
GIB = 2**30
REQUESTS = "kube_pod_container_resource_requests"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
CAPACITY = "kube_persistentvolumeclaim_resource_requests_storage_bytes"
CLAIM_INFO = "kube_persistentvolumeclaim_info"
MOUNTS = "kube_pod_spec_volumes_persistentvolumeclaims_info"
CLAIM_LABEL = "kube_persistentvolumeclaim_name"
CLASS_LABEL = "kube_storageclass_name"
CLAIM_KIND = "persistentvolumeclaim"
# The metric families of `Allocations.select` (GPU requests share the fleet's request family).
ALLOCATION_FAMILIES = (REQUESTS, GPU_UTIL, CAPACITY, CLAIM_INFO, MOUNTS)
# The charged resource of each kube-state-metrics GPU resource (the exporter's config).
GPU_RESOURCES = {"nvidia_com_gpu": "gpu", "nvidia_com_mig_1g_5gb": "gpu.mig-1g.5gb",
                 "nvidia_com_mig_3g_20gb": "gpu.mig-3g.20gb"}
_SCRATCH_PERIOD, _SCRATCH_FROM, _SCRATCH_TO = 7200, 1800, 4200


@dataclass(frozen=True, slots=True)
class GpuGrant:
    """Each pod of `workload` requests `count` of `resource` in its first container."""

    workload: WorkloadKey
    resource: str
    count: int
    utilization: int  # percent of each device, constant while the pod runs


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim: `owner` (a statefulset) mounts it from its pod `pod` while that runs."""

    cluster: str
    namespace: str
    name: str
    storage_class: str | None  # None: no info series
    gib: int
    owner: WorkloadKey | None = None
    pod: str | None = None
    periodic: bool = False  # exists [g*7200 + 1800, g*7200 + 4200) only
    # ReadWriteMany: every pod of these workloads mounts it (split evenly between them).
    shared_by: tuple[WorkloadKey, ...] = ()

    def mounted_by(self, pod: Pod) -> bool:
        return (pod.workload in self.shared_by
                or (self.owner == pod.workload and self.pod == pod.name))

    def exists(self, t: IntArray) -> npt.NDArray[np.bool_]:
        if not self.periodic:
            return np.ones(len(t), dtype=bool)
        phase = t % _SCRATCH_PERIOD
        return (phase >= _SCRATCH_FROM) & (phase < _SCRATCH_TO)


class Allocations:
    """The GPUs and claims of `fleet`; a PromQL storage of their series and their truth."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        workloads = [w for w in fleet.workloads()]
        special = fleet.special
        grants: dict[WorkloadKey, GpuGrant] = {}
        for i, w in enumerate(workloads[:-3]):
            if i % 6 == 0:
                grants[w.key] = GpuGrant(w.key, "nvidia_com_gpu", (1, 2, 4, 8)[(i // 6) % 4],
                                         (25, 50, 75, 100)[i % 4])
            elif i % 6 == 3:
                grants[w.key] = GpuGrant(w.key, "nvidia_com_mig_1g_5gb", 1 + (i // 6) % 2, 50)
            elif i % 6 == 4:
                grants[w.key] = GpuGrant(w.key, "nvidia_com_mig_3g_20gb", 1, 75)
        job = special["seven_minute_job"]
        grants[job] = GpuGrant(job, "nvidia_com_gpu", 1, 100)
        self.grants = grants
        claims: list[Claim] = []
        for i, w in enumerate(workloads[:-3]):
            if w.key.kind == "statefulset":
                for r in range(w.replicas):
                    claims.append(Claim(w.key.cluster, w.key.namespace,
                                        f"data-{w.key.name}-{r}",
                                        ("standard", "premium-ssd")[(i + r) % 2],
                                        (1, 5, 10, 20, 50)[(i + r) % 5], w.key,
                                        f"{w.key.name}-{r}"))
        namespaces = dict.fromkeys((w.key.cluster, w.key.namespace) for w in workloads[:-3])
        for j, (cluster, ns) in enumerate(namespaces):
            claims.append(Claim(cluster, ns, f"scratch-{ns}", None if j % 3 == 2 else "standard",
                                2, periodic=True))
            # A ReadWriteMany claim of the namespace's deployments and jobs: jobs come and go,
            # so the number of holders, and each one's share, changes during an hour.
            holders = tuple(w.key for w in workloads[:-3] if (w.key.cluster, w.key.namespace)
                            == (cluster, ns) and w.key.kind in ("deployment", "job"))
            if len(holders) >= 2:
                claims.append(Claim(cluster, ns, f"shared-{ns}", "nfs", 10, shared_by=holders))
        self.claims = tuple(claims)

    def node_gpus(self) -> dict[str, dict[str, int]]:
        """Per cluster and GPU resource, the devices its permanent node offers (`nodes`): at
        least what the cluster's pods can hold at once (each workload's replicas never overlap
        their own rollovers, so Σ count x replicas), plus idle devices: whole GPUs and slices
        fill the next 8-GPU node, the next 7 1g.5gb or 2 3g.20gb slices of an A100, at least
        one more than that bound."""
        held: dict[str, dict[str, int]] = {}
        for grant in self.grants.values():
            per = held.setdefault(grant.workload.cluster, {})
            replicas = self._fleet.workload(grant.workload).replicas
            per[grant.resource] = per.get(grant.resource, 0) + grant.count * replicas
        fill = {"nvidia_com_gpu": 8, "nvidia_com_mig_1g_5gb": 7, "nvidia_com_mig_3g_20gb": 2}
        return {cluster: {r: -(-(n + 1) // fill[r]) * fill[r] for r, n in sorted(per.items())}
                for cluster, per in held.items()}

    # ------------------------------------------------------------------ series
    def select(self, matchers: Sequence[LabelMatcher], times: IntArray) -> SeriesSet:
        """Every matching series over `times` (seconds, 10 s samples)."""
        ts_ms = times * 1000
        names = [m for m in matchers if m.name == METRIC_NAME]
        wanted = [n for n in ALLOCATION_FAMILIES
                  if all(m.matches(n) for m in names)]
        if not wanted or not len(times):
            return SeriesSet.empty(ts_ms)
        rows: list[tuple[Labels, np.ndarray]] = []
        pods = self._fleet.pods(int(times[0]), int(times[-1]) + STEP, requested=True)
        wire = {w.key: w.wire_labels for w in self._fleet.workloads()}
        nan = np.full(len(times), np.nan)
        for pod in pods:
            base = {**wire[pod.workload], "kube_pod_name": pod.name}
            asked = (times >= pod.requests_start) & (times < pod.requests_end)
            runs = (times >= pod.start) & (times < pod.end)
            grant = self.grants.get(pod.workload)
            if grant is not None and REQUESTS in wanted:
                rows.append(({**base, METRIC_NAME: REQUESTS, "resource": grant.resource,
                              "kube_pod_container_name": pod.containers[0]},
                             np.where(asked, float(grant.count), nan)))
            if grant is not None and GPU_UTIL in wanted:
                exporter = {"kube_cluster_name": pod.workload.cluster,
                            "kube_namespace_name": "gpu-operator",
                            "kube_workload_type": "daemonset",
                            "kube_workload_name": "nvidia-dcgm-exporter"}
                for device in range(grant.count):
                    rows.append(({**exporter, METRIC_NAME: GPU_UTIL, "gpu": str(device),
                                  "pod": pod.name, "namespace": pod.workload.namespace},
                                 np.where(runs, float(grant.utilization), nan)))
            if MOUNTS in wanted:
                for claim in self.claims:
                    if claim.mounted_by(pod):
                        rows.append(({**base, METRIC_NAME: MOUNTS, CLAIM_LABEL: claim.name,
                                      "volume": "data"}, np.where(asked, 1.0, nan)))
        lo, hi = self._fleet.available(int(times[0]), int(times[-1]) + STEP)
        seen = (times >= lo) & (times < hi)
        for claim in self.claims:
            where = {"kube_cluster_name": claim.cluster, "kube_namespace_name": claim.namespace,
                     CLAIM_LABEL: claim.name}
            live = seen & claim.exists(times)
            if CAPACITY in wanted:
                rows.append(({**where, METRIC_NAME: CAPACITY},
                             np.where(live, float(claim.gib * GIB), nan)))
            if CLAIM_INFO in wanted and claim.storage_class is not None:
                rows.append(({**where, METRIC_NAME: CLAIM_INFO, CLASS_LABEL: claim.storage_class},
                             np.where(live, 1.0, nan)))
        # A statefulset's pod keeps its name across instances: as in a TSDB, their samples are
        # one series (they never overlap in time), or a lookback would see two at once.
        kept: dict[frozenset[tuple[str, str]], tuple[Labels, np.ndarray]] = {}
        for lb, v in rows:
            if all(m.matches(lb.get(m.name)) for m in matchers) and not np.isnan(v).all():
                key = frozenset(lb.items())
                before = kept.get(key)
                kept[key] = (lb, v if before is None else np.where(np.isnan(v), before[1], v))
        if not kept:
            return SeriesSet.empty(ts_ms)
        return SeriesSet([lb for lb, _ in kept.values()], ts_ms,
                         np.vstack([v for _, v in kept.values()]))

    # ------------------------------------------------------------------ truth
    def ground_truth(self, start: int, end: int) -> dict[WorkloadKey, dict[str, SampleSums]]:
        """Per workload (or claim charged on its own, kind `persistentvolumeclaim`) and charged
        resource: GPU-Hours (usage: utilisation) and GiB-Hours of claims (usage 0), exact."""
        a, b = self._fleet.available(start, end)
        times = np.arange(-(-a // STEP) * STEP, max(a, b), STEP, dtype=np.int64)
        steps: dict[tuple[WorkloadKey, str], list[Decimal]] = {}
        pods = self._fleet.pods(start, end)
        zero = Decimal(0)
        for pod in pods:
            grant = self.grants.get(pod.workload)
            if grant is None:
                continue
            n = int(((times >= pod.start) & (times < pod.end)).sum())
            got = steps.setdefault((pod.workload, GPU_RESOURCES[grant.resource]), [zero, zero])
            got[0] += Decimal(n * grant.count * grant.utilization) / 100
            got[1] += Decimal(n * grant.count)
        for claim in self.claims:
            resource = f"storage.{claim.storage_class or '<none>'}"
            for key, gib_hours in _claim_truth(claim, pods, times).items():
                got = steps.setdefault((key, resource), [zero, zero])
                got[1] += gib_hours * 3600 / STEP  # back to GiB-steps, converted below
        out: dict[WorkloadKey, dict[str, SampleSums]] = {}
        hour = Decimal(3600)
        for (key, resource), (used, held) in steps.items():
            u, r = used * STEP / hour, held * STEP / hour
            out.setdefault(key, {})[resource] = SampleSums(u, r, r)
        return out


def _claim_truth(claim: Claim, pods: Sequence[Pod], times: IntArray) -> dict[WorkloadKey, Decimal]:
    """GiB-Hours of `claim` per record: at each step it exists, its capacity is split evenly
    between the workloads with a running pod that mounts it, or is the claim's own record.

    The billing rule for a split that does not divide: the claim's whole is rounded half-even
    to the records' 9 decimals, and split back in proportion to the exact parts, the units
    left over going to the largest remainders (ties: key order). The parts add up to the
    rounded whole exactly.
    """
    live = claim.exists(times)
    holders: dict[WorkloadKey, npt.NDArray[np.bool_]] = {}
    for pod in pods:
        if claim.mounted_by(pod):
            runs = (times >= pod.start) & (times < pod.end)
            holders[pod.workload] = holders.get(pod.workload, np.zeros(len(times), bool)) | runs
    count = np.zeros(len(times), dtype=np.int64)
    for runs in holders.values():
        count += runs
    per_step = Fraction(claim.gib * STEP, 3600)  # GiB-Hours of one step
    exact: dict[WorkloadKey, Fraction] = {}
    for key, runs in holders.items():
        share = sum((Fraction(1, int(n)) for n in count[live & runs]), Fraction(0))
        if share:
            exact[key] = share * per_step
    alone = int((live & (count == 0)).sum())
    if alone:
        exact[WorkloadKey(claim.cluster, claim.namespace, CLAIM_KIND, claim.name)] = (
            alone * per_step)
    if not exact:
        return {}
    scale = 10**9
    whole = sum(exact.values(), Fraction(0)) * scale
    units = round(whole)  # a Fraction rounds half to even
    keys = sorted(exact)
    ideal = {k: exact[k] * scale * units / whole for k in keys}
    floors = {k: int(v) for k, v in ideal.items()}
    left = units - sum(floors.values())
    for k in sorted(keys, key=lambda k: (floors[k] - ideal[k], k))[:left]:
        floors[k] += 1
    return {k: Decimal(v) / scale for k, v in floors.items()}
