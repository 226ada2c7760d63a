"""A deterministic synthetic Kubernetes fleet, as Sysdig Monitor would report it.

Nothing is stored per sample: every value is a pure, vectorised function of (entity id, timestamp)
built on the splitmix64 finaliser over int64 arrays, so any window of any size can be produced on
demand and the same (spec, seed) always yields the same fleet.

Exactness rule: every CPU value (usage and request) is a multiple of 1/64 core and every memory
value a multiple of 1 MiB (2**20 bytes). Sums of such values are exact in float64 (until 2**53
quanta), so any PromQL engine, in any summation order, returns the exact value, and its shortest
decimal representation is the exact decimal. Ground truth is computed in those integer quanta and
converted to `Decimal` only at the end.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
import numpy.typing as npt

from chargeback_simulator.allocations import ALLOCATION_FAMILIES, GPU_RESOURCES, Allocations
from chargeback_simulator.nodes import ALLOCATABLE, Node, Nodes
from chargeback_simulator.series import (
    METRIC_NAME,
    IntArray,
    LabelMatcher,
    Labels,
    SeriesSet,
    format_value,
)
from exporter.clock import Clock
from exporter.model import ORG_KEYS, UNALLOCATED, Resource, SampleSums, WorkloadKey
from exporter.sysdig import DOCUMENTED

SAMPLE_INTERVAL = 10  # seconds between samples, on epoch multiples
CPU_QUANTUM = 64  # CPU values are integer multiples of 1/CPU_QUANTUM core
MIB = 2**20  # memory values are integer multiples of 1 MiB

CPU_USED = "sysdig_container_cpu_cores_used"
MEM_USED = "sysdig_container_memory_used_bytes"
REQUESTS = "kube_pod_container_resource_requests"

# (sampling, window) in seconds per Sysdig timeline, finest first: the July 2020 table.
DEFAULT_TIMELINES: tuple[tuple[int, int], ...] = tuple(
    (t.step, t.window) for t in DOCUMENTED if t.window is not None)

# Where Sysdig names the container: the agent's usage series carry the cAdvisor-style label,
# kube-state-metrics' request series their own.
USAGE_CONTAINER_LABEL = "container_label_io_kubernetes_container_name"
REQUEST_CONTAINER_LABEL = "kube_pod_container_name"

Grain = Literal["pod", "container"]
Quantity = Literal["cpu_used", "mem_used", "cpu_req", "mem_req"]
U64Array = npt.NDArray[np.uint64]

# (metric name, extra labels, quantity, container label) for every series family served.
_FAMILIES: tuple[tuple[str, tuple[tuple[str, str], ...], Quantity, str], ...] = (
    (CPU_USED, (), "cpu_used", USAGE_CONTAINER_LABEL),
    (MEM_USED, (), "mem_used", USAGE_CONTAINER_LABEL),
    (REQUESTS, (("resource", "cpu"),), "cpu_req", REQUEST_CONTAINER_LABEL),
    (REQUESTS, (("resource", "memory"),), "mem_req", REQUEST_CONTAINER_LABEL),
)
_FAMILY_NAMES = frozenset(name for name, _, _, _ in _FAMILIES)
_POD_LEVEL = frozenset({"kube_pod_name", USAGE_CONTAINER_LABEL, REQUEST_CONTAINER_LABEL})
_REQUESTED: frozenset[Quantity] = frozenset({"cpu_req", "mem_req"})  # served while requested
_METRIC_LEVEL = frozenset({METRIC_NAME, "resource"})

# Value tables: requests in quanta (1/64 core, MiB); usage profiles relative to the request.
_CPU_REQ = np.array([4, 8, 16, 32, 48, 64, 96, 128, 192, 256], dtype=np.int64)
_MEM_REQ = np.array([64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 4096], dtype=np.int64)
_CPU_PROFILE = np.array([4, 8, 11, 14, 16, 18, 21, 26], dtype=np.int32)  # sixteenths
_MEM_PROFILE = np.array([6, 10, 13, 15, 17, 19, 24], dtype=np.int32)  # sixteenths
_CPU_REQ32 = _CPU_REQ.astype(np.int32)
_MEM_REQ32 = _MEM_REQ.astype(np.int32)
_CHUNK = 1 << 18  # cells generated per numpy pass, so temporaries stay in cache

_ENVS = ("prod", "staging", "dev", "perf")
_REGIONS = ("eu-west", "us-east", "ap-south", "eu-central")
_NS_WORDS = ("payments", "checkout", "search", "catalog", "identity", "ledger", "ml-serving",
             "analytics", "ingest", "frontend", "notifications", "inventory", "shipping",
             "pricing", "reports", "media")
_WL_WORDS = ("api", "worker", "web", "cache", "db", "consumer", "scheduler", "gateway",
             "indexer", "exporter", "etl", "renderer")
_JOB_WORDS = ("backup", "compaction", "reindex", "report", "sync", "cleanup")
_CONTAINERS = ("app", "istio-proxy", "fluent-bit", "vault-agent", "metrics", "cache")
_ORG_VALUES: Mapping[str, tuple[str, ...]] = {
    "costcenter": tuple(f"CC-{1000 + 37 * i}" for i in range(12)),
    "businessunit": ("retail", "wholesale", "platform", "research", "corporate"),
    "department": ("engineering", "data", "operations", "finance", "marketing", "security"),
    "team": ("atlas", "borealis", "comet", "draco", "eris", "fornax", "gemini", "hydra"),
}
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated suffixes

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_KT = np.uint64(0xD6E8FEB86659FD93)  # time multiplier
_KS = np.uint64(0xA0761D6478BD642F)  # segment multiplier


def _mix(x: U64Array) -> U64Array:
    """splitmix64 finaliser, element-wise; wraps modulo 2**64 by design."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    out: U64Array = z ^ (z >> np.uint64(31))
    return out


def _u64(values: Iterable[int] | IntArray | int) -> U64Array:
    arr = np.atleast_1d(np.asarray(values))
    return arr.astype(np.int64).view(np.uint64) if arr.dtype != np.uint64 else arr


_MASK = 0xFFFFFFFFFFFFFFFF


def _mix1(x: int) -> int:
    """Scalar splitmix64 finaliser, identical to `_mix` on one value."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _hash(*parts: int) -> int:
    """A scalar hash of integers (for static fleet structure and names)."""
    h = 0
    for p in parts:
        h = _mix1(h ^ (p & _MASK))
    return h


def _below(h: U64Array, n: int) -> IntArray:
    """Map uniform 64-bit hashes to `[0, n)` with a multiply-shift (no slow modulo)."""
    out: IntArray = (((h >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)).astype(np.int64)
    return out


def _checked_timelines(timelines: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """`timelines` as a tuple, or ValueError: 10 s first, then ever coarser and longer tiers."""
    out = tuple((int(step), int(window)) for step, window in timelines)
    ok = bool(out) and out[0][0] == SAMPLE_INTERVAL and out[0][1] > 0
    for (step, window), (finer, shorter) in zip(out[1:], out, strict=False):
        ok = ok and step > finer and step % SAMPLE_INTERVAL == 0 and window > shorter
    if not ok:
        raise ValueError(f"timelines must start at 10 s and get coarser and longer tier by tier "
                         f"(sampling, window seconds), got {timelines!r}")
    return out


def _pick(h: int, options: Sequence[str]) -> str:
    return options[h % len(options)]


def _suffix(h: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_NAME_ALPHABET[h % len(_NAME_ALPHABET)])
        h //= len(_NAME_ALPHABET)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Size and seed of a synthetic fleet; identical specs give identical fleets.

    Pod lifetimes (between rollovers) of deployments are drawn in
    `[min_pod_lifetime, max_pod_lifetime]` seconds; statefulsets live 4x and daemonsets 8x longer.
    Each cluster has `nodes_per_cluster` node slots: a permanent node of 2 x `node_cores` cores
    and nodes of 2/3, 1 or 4/3 x `node_cores` that come and go (`chargeback_simulator.nodes`),
    with 1 GiB of memory per core, less what the kubelet reserves.
    """

    seed: int = 1
    clusters: int = 2
    namespaces_per_cluster: int = 3
    workloads_per_namespace: int = 4
    max_replicas: int = 3
    max_containers: int = 3
    min_pod_lifetime: int = 1200
    max_pod_lifetime: int = 21600
    # GPUs and persistent volume claims on top (`chargeback_simulator.allocations`).
    allocations: bool = False
    nodes_per_cluster: int = 3
    node_cores: int = 24

    def __post_init__(self) -> None:
        for name in ("clusters", "namespaces_per_cluster", "workloads_per_namespace",
                     "max_replicas", "max_containers", "nodes_per_cluster", "node_cores"):
            if getattr(self, name) < 1:
                raise ValueError(f"fleet spec: {name} must be >= 1, got {getattr(self, name)}")
        if self.max_containers > 32:
            raise ValueError(f"fleet spec: max_containers must be <= 32, got {self.max_containers}")
        lo, hi = self.min_pod_lifetime, self.max_pod_lifetime
        if lo < 60 or hi < lo or lo % SAMPLE_INTERVAL or hi % SAMPLE_INTERVAL:
            raise ValueError(
                "fleet spec: pod lifetimes must be multiples of 10 s with "
                f"60 <= min_pod_lifetime <= max_pod_lifetime, got {lo}..{hi}"
            )


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload and the static facts its pods share.

    `labels` are the workload's own Kubernetes labels, exactly as set (values may be empty or
    whitespace-only); `namespace_labels` likewise for its namespace. Pods of a replica slot live
    `[g*period - phase + offset, g*period - phase + offset + duration)` for every integer g;
    container requests stay constant for `request_segment` seconds (a power of two of steps).

    Request series (kube-state-metrics) live as long as the pod object: one pod in four is
    Pending for 10 s to `pending` seconds before it runs; a job's pods stay Completed for
    `linger` seconds after they end (their TTL), and one deployment pod in four stays Evicted or
    Failed for 60 s to `linger` seconds. Usage exists only while the pod runs.
    """

    index: int
    key: WorkloadKey
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str]
    replicas: int
    containers: tuple[str, ...]
    has_request: tuple[bool, ...]
    period: int
    offset: int
    duration: int
    request_segment: int
    pending: int = 0
    linger: int = 0

    @property
    def wire_labels(self) -> Labels:
        """The labels every series of this workload carries, Sysdig-named (no pod/container).

        Empty values are dropped, as Prometheus does; whitespace-only values are kept.
        """
        out: Labels = {
            "kube_cluster_name": self.key.cluster,
            "kube_namespace_name": self.key.namespace,
            "kube_workload_type": self.key.kind,
            "kube_workload_name": self.key.name,
        }
        for k, v in self.labels.items():
            if v != "":
                out[f"kube_{self.key.kind}_label_{k}"] = v
        for k, v in self.namespace_labels.items():
            if v != "":
                out[f"kube_namespace_label_{k}"] = v
        return out


@dataclass(frozen=True, slots=True)
class Pod:
    """One pod instance: it runs, with usage samples at every 10 s step, in `[start, end)`
    (seconds); its request series have samples in `[requests_start, requests_end)`, from when
    it is Pending to when its object is deleted."""

    workload: WorkloadKey
    name: str
    start: int
    end: int
    containers: tuple[str, ...]
    requests_start: int
    requests_end: int

    def samples(self, start: int, end: int) -> int:
        """Number of 10 s steps (per container) this pod has inside `[start, end)`."""
        lo = max(self.start, -(-start // SAMPLE_INTERVAL) * SAMPLE_INTERVAL)
        hi = min(self.end, end)
        return max(0, -(-(hi - lo) // SAMPLE_INTERVAL))


@dataclass(frozen=True, slots=True)
class UnitSums:
    """Integer ground truth in quanta-steps: 1/64 core x 10 s for cpu, MiB x 10 s for memory."""

    usage: int
    request: int
    chargeable: int


@dataclass(slots=True)
class _Instances:
    """Container instances (one row each) alive in a window, with their pod's lifetime."""

    w: IntArray
    cont: IntArray  # index into the fleet's flat container table
    pod: IntArray  # row index of the owning pod in `pods`
    cid: U64Array
    start: IntArray
    end: IntArray
    req_start: IntArray  # the pod's request series: Pending from here ...
    req_end: IntArray  # ... to its object's deletion
    pod_w: IntArray
    pod_slot: IntArray
    pod_g: IntArray
    pod_pid: U64Array
    pod_start: IntArray
    pod_end: IntArray
    pod_req_start: IntArray
    pod_req_end: IntArray


class Fleet:
    """The fleet: structure, sample values, ground truth and a PromQL `Storage`.

    `clock` bounds the data at "now" (samples exist only at `t <= now`); `history` (seconds)
    additionally hides samples older than `now - history`. Without a clock every time has data.

    `timelines` is the simulated tenant's retention, as Sysdig's timelines: (sampling, window)
    seconds, finest first (default the July 2020 table). With a clock, each instant `t` is
    served at the finest sampling whose window still holds it (`t >= now - window`): 10 s
    samples in the first window, then points stamped on multiples of the sampling, each the
    roll-up of that series' 10 s samples in `[t, t + sampling)`: their mean, rounded to the
    quantum (1/64 core, 1 MiB; halves up) so it stays exact. Nothing is served beyond the last
    window. `timelines=None`: 10 s samples at every time, never rolled up.

    Thread-safe: all state after construction is read-only except a result cache bounded by
    `cache_bytes`.
    """

    def __init__(self, spec: FleetSpec, clock: Clock | None = None, history: int | None = None,
                 cache_bytes: int = 512 * 2**20,
                 timelines: Sequence[tuple[int, int]] | None = DEFAULT_TIMELINES) -> None:
        if history is not None and history <= 0:
            raise ValueError(f"history must be positive, got {history}")
        self.spec = spec
        self.clock = clock
        self.history = history
        self.timelines = None if timelines is None else _checked_timelines(timelines)
        self._seed = _hash(0x5EED, spec.seed)
        self._workloads = self._build()
        self._clusters = tuple(dict.fromkeys(w.key.cluster for w in self._workloads))
        self._by_key = {w.key: w for w in self._workloads}
        self.allocations = Allocations(self) if spec.allocations else None
        self._nodes = Nodes(self._seed, self._clusters, spec.nodes_per_cluster, spec.node_cores,
                            None if self.allocations is None else self.allocations.node_gpus())
        self._wire = [w.wire_labels for w in self._workloads]
        self._tables()
        self._cache: OrderedDict[tuple[object, ...], SeriesSet] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        self._masks: dict[frozenset[tuple[str, str, str]], npt.NDArray[np.bool_]] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- structure
    def _build(self) -> list[Workload]:
        spec = self.spec
        out: list[Workload] = []
        clusters = [
            f"{_ENVS[c % len(_ENVS)]}-{_pick(_hash(self._seed, 1, c), _REGIONS)}-{c + 1:02d}"
            for c in range(spec.clusters)
        ]
        for c, cluster in enumerate(clusters):
            nodes = 1 + _hash(self._seed, 2, c) % spec.max_replicas
            for n in range(spec.namespaces_per_cluster):
                hn = _hash(self._seed, 3, c, n)
                namespace = f"{_pick(hn, _NS_WORDS)}-{n + 1}"
                ns_labels = self._org_labels(hn, namespace_level=True)
                for i in range(spec.workloads_per_namespace):
                    out.append(self._workload(len(out), cluster, namespace, ns_labels, nodes, c,
                                              n, i))
        out.extend(self._specials(clusters[0], len(out)))
        return out

    def _org_labels(self, h: int, namespace_level: bool) -> dict[str, str]:
        """Org labels by category: all set, a random subset, blank values, or none."""
        r = h % 100
        values = {k: _pick(_hash(h, 7, j), _ORG_VALUES[k]) for j, k in enumerate(ORG_KEYS)}
        if namespace_level:
            if r < 40:
                return values
            if r < 60:
                return {k: v for j, (k, v) in enumerate(values.items()) if _hash(h, 8, j) % 2}
            return {}
        if r < 45:
            return values
        if r < 65:
            keep = {k: v for j, (k, v) in enumerate(values.items()) if _hash(h, 8, j) % 2}
            if len(keep) == len(values):
                keep.pop(ORG_KEYS[h % len(ORG_KEYS)])
            return keep
        if r < 73:
            blank = dict(values)
            blank[ORG_KEYS[h % 4]] = ""
            blank[ORG_KEYS[(h + 1) % 4]] = " "
            return blank
        return {}

    def _workload(self, index: int, cluster: str, namespace: str, ns_labels: Mapping[str, str],
                  nodes: int, c: int, n: int, i: int) -> Workload:
        spec = self.spec
        h = _hash(self._seed, 4, c, n, i)
        r = h % 100
        kind = ("deployment" if r < 55 else "statefulset" if r < 70
                else "daemonset" if r < 85 else "job")
        words = _JOB_WORDS if kind == "job" else _WL_WORDS
        name = f"{_pick(_hash(h, 1), words)}-{i + 1}"
        labels = self._org_labels(_hash(h, 2), namespace_level=False)
        labels["app"] = name
        ncont = 1 + _hash(h, 3) % spec.max_containers
        containers = tuple(
            _CONTAINERS[j % len(_CONTAINERS)] + ("" if j < len(_CONTAINERS) else f"-{j}")
            for j in range(ncont)
        )
        has_request = tuple(j == 0 or _hash(h, 4, j) % 100 < 80 for j in range(ncont))
        lo, hi = spec.min_pod_lifetime // SAMPLE_INTERVAL, spec.max_pod_lifetime // SAMPLE_INTERVAL
        life = SAMPLE_INTERVAL * (lo + _hash(h, 5) % (hi - lo + 1))
        gap = SAMPLE_INTERVAL * (_hash(h, 6) % 7)
        if kind == "job":
            replicas = 1 + _hash(h, 7) % min(2, spec.max_replicas)
            period = (1800, 3600, 7200)[_hash(h, 8) % 3]
            duration = SAMPLE_INTERVAL * (6 + _hash(h, 9) % 49)
            offset = SAMPLE_INTERVAL * (_hash(h, 10) % ((period - duration) // SAMPLE_INTERVAL))
        else:
            replicas = nodes if kind == "daemonset" else 1 + _hash(h, 7) % spec.max_replicas
            period = life * {"deployment": 1, "statefulset": 4, "daemonset": 8}[kind]
            offset, duration = gap, period - gap
        segment = SAMPLE_INTERVAL << (8 + _hash(h, 11) % 4)  # 43 min to 5.7 h
        # A statefulset pod's successor reuses its name, hence its series: it neither waits
        # Pending nor lingers here. A job's TTL is 5, 10 or 15 minutes.
        pending = 0 if kind == "statefulset" else 60
        linger = {"job": 300 * (1 + _hash(h, 12) % 3), "deployment": 300}.get(kind, 0)
        return Workload(index, WorkloadKey(cluster, namespace, kind, name), labels,
                        dict(ns_labels), replicas, containers, has_request, period, offset,
                        duration, segment, pending, linger)

    def _specials(self, cluster: str, start: int) -> list[Workload]:
        """Cases present whatever the seed (documented in docs/simulator.md)."""
        full = {"costcenter": "CC-1000", "businessunit": "platform", "department": "data",
                "team": "atlas"}
        return [
            # (a) no org labels anywhere: everything lands in __unallocated__.
            Workload(start, WorkloadKey(cluster, "sim-unlabelled", "deployment", "orphan-api"),
                     {"app": "orphan-api"}, {}, 2, ("app", "istio-proxy"), (True, False),
                     1800, 20, 1780, 2560),
            # (b) a Job whose single pod runs [HH:10:00, HH:17:00) every hour: 42 samples; it
            # stays Completed, with its request series, until its TTL at HH:27:00.
            Workload(start + 1, WorkloadKey(cluster, "sim-batch", "job", "hourly-report"),
                     {**full, "app": "hourly-report"}, {}, 1, ("app",), (True,),
                     3600, 600, 420, 2560, linger=600),
            # (c) labelled only through its namespace.
            Workload(start + 2, WorkloadKey(cluster, "sim-inherited", "deployment",
                                            "inherited-web"),
                     {"app": "inherited-web"},
                     {"costcenter": "CC-1111", "businessunit": "retail",
                      "department": "marketing", "team": "comet"},
                     1, ("app", "fluent-bit"), (True, False), 5400, 0, 5400, 5120),
        ]

    def _tables(self) -> None:
        """Flat numpy tables: one row per replica slot and one per (workload, container)."""
        ws = self._workloads
        reps = np.array([w.replicas for w in ws], dtype=np.int64)
        self._slot_w = np.repeat(np.arange(len(ws), dtype=np.int64), reps)
        self._slot_r = np.arange(len(self._slot_w), dtype=np.int64) - np.repeat(
            np.cumsum(reps) - reps, reps)
        period = np.array([w.period for w in ws], dtype=np.int64)
        self._slot_period = period[self._slot_w]
        self._slot_offset = np.array([w.offset for w in ws], dtype=np.int64)[self._slot_w]
        self._slot_duration = np.array([w.duration for w in ws], dtype=np.int64)[self._slot_w]
        self._slot_pending = np.array([w.pending for w in ws], dtype=np.int64)[self._slot_w]
        self._slot_linger = np.array([w.linger for w in ws], dtype=np.int64)[self._slot_w]
        gid = _mix(_u64(self._seed) ^ _u64(np.arange(len(self._slot_w), dtype=np.int64)))
        self._slot_gid = gid
        # Jobs start on their schedule; other replicas are spread over their period.
        is_job = np.array([w.key.kind == "job" for w in ws])[self._slot_w]
        self._slot_is_job = is_job
        phase = (gid % _u64(self._slot_period)).astype(np.int64)
        phase -= phase % SAMPLE_INTERVAL
        self._slot_phase = np.where(is_job, 0, phase)
        ncont = np.array([len(w.containers) for w in ws], dtype=np.int64)
        self._cont_first = np.cumsum(ncont) - ncont
        self._ncont = ncont
        self._is_sts = np.array([w.key.kind == "statefulset" for w in ws], dtype=bool)
        self._cont_has_req = np.array([r for w in ws for r in w.has_request], dtype=bool)
        self._cont_name = [c for w in ws for c in w.containers]
        seg_steps = [w.request_segment // SAMPLE_INTERVAL for w in ws]
        if any(x & (x - 1) for x in seg_steps):
            raise ValueError("request segments must be a power of two of 10 s steps")
        self._segshift = np.array([x.bit_length() - 1 for x in seg_steps], dtype=np.int64)

    # ----------------------------------------------------------------- public queries
    def workloads(self) -> list[Workload]:
        """Every workload, in a stable order (special cases last)."""
        return list(self._workloads)

    def workload(self, key: WorkloadKey) -> Workload:
        """The workload with `key`; raises KeyError when there is none."""
        return self._by_key[key]

    def clusters(self) -> tuple[str, ...]:
        """Every cluster, in a stable order."""
        return self._clusters

    def nodes(self, start: int, end: int) -> list[Node]:
        """Every node generation whose life meets `[start, end)` (seconds), unclipped by the
        available data (`chargeback_simulator.nodes`)."""
        return self._nodes.nodes(start, end)

    @property
    def special(self) -> dict[str, WorkloadKey]:
        """The seed-independent cases: `unallocated`, `seven_minute_job`, `namespace_only`."""
        a, b, c = self._workloads[-3:]
        return {"unallocated": a.key, "seven_minute_job": b.key, "namespace_only": c.key}

    def org_labels(self, key: WorkloadKey) -> dict[str, str]:
        """Each org key resolved: workload label, else namespace label, else `__unallocated__`.

        Empty and whitespace-only values count as missing.
        """
        w = self._by_key[key]
        out: dict[str, str] = {}
        for k in ORG_KEYS:
            value = w.labels.get(k, "").strip() or w.namespace_labels.get(k, "").strip()
            out[k] = value or UNALLOCATED
        return out

    def now(self) -> float | None:
        """The simulator's current time, or None when the fleet has no clock."""
        return None if self.clock is None else self.clock.time()

    def available(self, start: int, end: int) -> tuple[int, int]:
        """Clip `[start, end)` (seconds) to where data exists: not after now, not before
        `now - history`, not beyond the last timeline's window."""
        now = self.now()
        if now is not None:
            end = min(end, int(now // SAMPLE_INTERVAL) * SAMPLE_INTERVAL + SAMPLE_INTERVAL)
            if self.history is not None:
                start = max(start, int(now) - self.history)
            if self.timelines is not None:
                start = max(start, math.ceil(now - self.timelines[-1][1]))
        return start, end

    def served(self, start: int, end: int) -> tuple[IntArray, IntArray | None]:
        """The instants (seconds) with data in `[start, end)`, and the sampling each is served
        at (None: all are 10 s samples, the common case, kept on the fast path)."""
        a, b = self.available(start, end)
        now = self.now()
        segments: list[tuple[int, int, int]] = []
        if now is not None and self.timelines is not None:
            newer = b
            for step, window in self.timelines:
                lo = max(a, math.ceil(now - window))
                if lo < newer:
                    segments.append((lo, newer, step))
                newer = min(newer, lo)
        if all(step == SAMPLE_INTERVAL for _, _, step in segments):
            a = -(-a // SAMPLE_INTERVAL) * SAMPLE_INTERVAL
            return np.arange(a, max(a, b), SAMPLE_INTERVAL, dtype=np.int64), None
        parts = [np.arange(-(-lo // step) * step, hi, step, dtype=np.int64)
                 for lo, hi, step in reversed(segments)]
        steps = [np.full(len(p), step, dtype=np.int64)
                 for p, (_, _, step) in zip(parts, reversed(segments), strict=True)]
        return np.concatenate(parts), np.concatenate(steps)

    def pods(self, start: int, end: int, requested: bool = False) -> list[Pod]:
        """Pods with at least one usage sample in `[start, end)`, or with `requested` at least
        one request sample there (a Pending or Completed pod has those alone); availability
        applied to bounds, of the run and of the request series."""
        a, b = self._grid(start, end)
        if a >= b:
            return []
        inst = self._pods(a, b, None)
        lo_of, hi_of = ((inst.pod_req_start, inst.pod_req_end) if requested
                        else (inst.pod_start, inst.pod_end))
        out = []
        for i in np.flatnonzero((hi_of > a) & (lo_of < b)).tolist():
            w = self._workloads[int(inst.pod_w[i])]
            lo, hi = self.available(int(inst.pod_start[i]), int(inst.pod_end[i]))
            rlo, rhi = self.available(int(inst.pod_req_start[i]), int(inst.pod_req_end[i]))
            out.append(Pod(w.key, self._pod_name(w, int(inst.pod_slot[i]), int(inst.pod_g[i]),
                                                 int(inst.pod_pid[i])),
                           max(lo, int(inst.pod_start[i])), hi, w.containers,
                           max(rlo, int(inst.pod_req_start[i])), rhi))
        return out

    # ----------------------------------------------------------------- instances and values
    def _grid(self, start: int, end: int) -> tuple[int, int]:
        """First and past-the-last 10 s step of `[start, end)` inside the available data."""
        a, b = self.available(start, end)
        a = -(-a // SAMPLE_INTERVAL) * SAMPLE_INTERVAL
        b = -(-b // SAMPLE_INTERVAL) * SAMPLE_INTERVAL
        return a, b

    def _pods(self, a: int, b: int, wmask: npt.NDArray[np.bool_] | None) -> _Instances:
        """Every pod (and container) instance whose request series overlap `[a, b)` (they
        span its run, see `Workload`)."""
        slots = np.arange(len(self._slot_w)) if wmask is None else np.flatnonzero(
            wmask[self._slot_w])
        period = self._slot_period[slots]
        phase = self._slot_phase[slots]
        off = self._slot_offset[slots]
        dur = self._slot_duration[slots]
        linger = self._slot_linger[slots]
        # Pod g runs from g*period - phase + off: g's whose longest request extent meets [a, b).
        gmin = (a + phase - off - dur - linger) // period + 1
        gmax = (b + phase - off + self._slot_pending[slots] - 1) // period
        count = np.maximum(gmax - gmin + 1, 0)
        rep = np.repeat(np.arange(len(slots)), count)
        g = gmin[rep] + (np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count))
        slot = slots[rep]
        pod_start = g * period[rep] - phase[rep] + off[rep]
        pod_end = pod_start + dur[rep]
        pid = _mix(self._slot_gid[slot] ^ _mix(_u64(g) ^ _u64(0xB0D)))
        req_start, req_end = self._request_extent(slot, pid, pod_start, pod_end)
        live = (req_end > a) & (req_start < b)
        if not live.all():
            slot, g, pid = slot[live], g[live], pid[live]
            pod_start, pod_end = pod_start[live], pod_end[live]
            req_start, req_end = req_start[live], req_end[live]
        pod_w = self._slot_w[slot]
        nc = self._ncont[pod_w]
        prow = np.repeat(np.arange(len(slot)), nc)
        within = np.arange(len(prow)) - np.repeat(np.cumsum(nc) - nc, nc)
        cid = _mix(pid[prow] ^ _u64(within + 1))
        return _Instances(pod_w[prow], self._cont_first[pod_w[prow]] + within, prow, cid,
                          pod_start[prow], pod_end[prow], req_start[prow], req_end[prow],
                          pod_w, slot, g, pid, pod_start, pod_end, req_start, req_end)

    def _request_extent(self, slot: IntArray, pid: U64Array, start: IntArray, end: IntArray
                        ) -> tuple[IntArray, IntArray]:
        """Per pod, when its request series start (Pending) and end (object deleted)."""
        steps = SAMPLE_INTERVAL
        pending = self._slot_pending[slot]
        linger = self._slot_linger[slot]
        hp = (_mix(pid ^ _u64(0x9E4D)) >> np.uint64(33)).astype(np.int64)
        hl = (_mix(pid ^ _u64(0x11F6)) >> np.uint64(33)).astype(np.int64)
        waits = np.where((hp % 4 == 0) & (pending > 0),
                         steps * (1 + (hp >> 2) % np.maximum(pending // steps, 1)), 0)
        # Every Job pod stays Completed until its TTL; one other pod in four Evicted or Failed.
        stays = np.where(self._slot_is_job[slot], linger,
                         np.where((hl % 4 == 0) & (linger > 0),
                                  60 + steps * ((hl >> 2) % np.maximum(linger // steps - 5, 1)),
                                  0))
        out_start: IntArray = start - waits
        out_end: IntArray = end + stays
        return out_start, out_end

    def _values(self, inst: _Instances, rows: slice, times: IntArray,
                which: Collection[Quantity]
                ) -> tuple[npt.NDArray[np.bool_], dict[Quantity, npt.NDArray[np.int32]]]:
        """Running mask and integer quanta (1/64 core, MiB) for `rows` x `times` (seconds).

        Requests are constant on segments of 2**k steps counted from the pod's start (so they
        change at restart and occasionally mid-pod), and before and after the run are those of
        its first and last step; usage is the request (or a nominal value when there is none)
        times a per-container profile times per-step noise. Callers pass row chunks of
        ~`_CHUNK` cells so the temporaries stay in cache.
        """
        cid = inst.cid[rows]
        start = inst.start[rows]
        w = inst.w[rows]
        present = (times[None, :] >= start[:, None]) & (times[None, :] < inst.end[rows, None])
        shift = self._segshift[w].astype(np.int32)
        start_step = (start // SAMPLE_INTERVAL).astype(np.int32)
        last_seg = (((inst.end[rows] // SAMPLE_INTERVAL).astype(np.int32) - 1 - start_step)
                    >> shift)
        steps = (times // SAMPLE_INTERVAL).astype(np.int32)
        seg0 = np.clip((steps[0] - start_step) >> shift, 0, last_seg)
        nseg = int(np.max(np.minimum((steps[-1] - start_step) >> shift, last_seg) - seg0,
                          initial=0)) + 1
        rel = (steps[None, :] - start_step[:, None]) >> shift[:, None]
        rel -= seg0[:, None]
        np.clip(rel, 0, (last_seg - seg0)[:, None], out=rel)
        has_req = self._cont_has_req[inst.cont[rows]][:, None]
        tk = _u64(times) * _KT
        out: dict[Quantity, npt.NDArray[np.int32]] = {}
        for res, table, profiles, salt in (("cpu", _CPU_REQ32, _CPU_PROFILE, 0xC0),
                                           ("mem", _MEM_REQ32, _MEM_PROFILE, 0x3E)):
            used: Quantity = "cpu_used" if res == "cpu" else "mem_used"
            req: Quantity = "cpu_req" if res == "cpu" else "mem_req"
            if used not in which and req not in which:
                continue
            key = _mix(cid ^ _u64(salt))
            segs = _u64(seg0[:, None] + np.arange(nseg)[None, :]) * _KS
            per_segment = table[_below(_mix(key[:, None] ^ segs), len(table))]
            request = np.take_along_axis(per_segment, rel, axis=1)
            if req in which:
                out[req] = request
            if used in which:
                nominal = table[_below(_mix(key ^ _u64(1)), len(table))]
                base = np.where(has_req, request, nominal[:, None])
                base *= profiles[_below(_mix(key ^ _u64(2)), len(profiles))][:, None]
                # A cheap per-sample hash: (row key + time) times an odd constant, top bits.
                z = _mix(key ^ _u64(3))[:, None] + tk[None, :]
                z *= _M1
                if res == "cpu":
                    base *= 56 + (z >> np.uint64(60)).astype(np.int32)
                    base >>= 10
                    burst = z < np.uint64(1 << 58)  # one sample in 64 doubles
                    out[used] = np.where(burst, base * 2 + 1, base)
                else:
                    base *= 60 + (z >> np.uint64(61)).astype(np.int32)
                    base >>= 10
                    out[used] = np.maximum(base, 1)
        return present, out

    @staticmethod
    def _row_chunks(rows: int, columns: int) -> list[slice]:
        size = max(1, _CHUNK // max(1, columns))
        return [slice(i, min(i + size, rows)) for i in range(0, rows, size)]

    def _pod_name(self, w: Workload, slot: int, g: int, pid: int) -> str:
        kind, name = w.key.kind, w.key.name
        if kind == "statefulset":
            return f"{name}-{int(self._slot_r[slot])}"
        if kind == "deployment":
            rs = _hash(int(self._slot_gid[slot]) ^ int(self._slot_r[slot]), g, 0x55)
            return f"{name}-{rs % 16**10:010x}-{_suffix(pid, 5)}"
        if kind == "job":
            return f"{name}-{g}-{_suffix(pid, 5)}"
        return f"{name}-{_suffix(pid, 5)}"

    # ----------------------------------------------------------------- ground truth
    def sample_sums(self, start: int, end: int, grain: Grain = "pod",
                    resolution: int | None = None) -> dict[WorkloadKey, dict[Resource, UnitSums]]:
        """Integer ground truth over the 10 s steps `t` with `start <= t < end`.

        usage = sum over steps and containers of usage; request likewise over containers that
        have a request, at the steps where their pod has usage (runs): a Pending pod's and a
        finished pod's request series never count; chargeable = sum over steps and pods of
        max(sum of container requests, sum of container usage) for grain "pod", or of the
        per-container max for "container". Only workloads with at least one usage sample in
        the window appear.

        With `resolution` (seconds), the same sums over the instants `t` on multiples of
        `resolution` instead, each series taking the latest value the fleet serves in
        `(t - resolution/2, t]` (a roll-up where the timelines say so, see the class docstring; a
        pod is the series of one pod name), a request only where its pod has a usage point:
        what the exporter's queries (`exporter/queries.py`) give at that step. Units are then
        quanta x `resolution` seconds.
        """
        if grain not in ("pod", "container"):
            raise ValueError(f"grain must be 'pod' or 'container', got {grain!r}")
        if resolution is not None:
            return self._served_sums(start, end, grain, resolution)
        n = len(self._workloads)
        acc = np.zeros((n, 6), dtype=np.int64)
        seen = np.zeros(n, dtype=bool)
        a, b = self._grid(start, end)
        chunk = 360 * SAMPLE_INTERVAL
        for lo in range(a, b, chunk):
            hi = min(lo + chunk, b)
            inst = self._pods(lo, hi, None)
            if not len(inst.w):
                continue
            times = np.arange(lo, hi, SAMPLE_INTERVAL, dtype=np.int64)
            for rows in self._pod_aligned_chunks(inst, len(times)):
                self._accumulate(inst, rows, times, grain, acc, seen)
        out: dict[WorkloadKey, dict[Resource, UnitSums]] = {}
        for i in np.flatnonzero(seen):
            row = [int(x) for x in acc[i]]
            out[self._workloads[i].key] = {"cpu": UnitSums(*row[0:3]),
                                           "memory": UnitSums(*row[3:6])}
        return out

    def _pod_aligned_chunks(self, inst: _Instances, columns: int) -> list[slice]:
        """Row chunks of about `_CHUNK` cells that never split a pod's containers."""
        size = max(1, _CHUNK // max(1, columns))
        n = len(inst.w)
        bounds = [0]
        while bounds[-1] < n:
            b = min(bounds[-1] + size, n)
            while b < n and inst.pod[b] == inst.pod[b - 1]:
                b += 1
            bounds.append(b)
        return [slice(a, b) for a, b in itertools.pairwise(bounds)]

    def _accumulate(self, inst: _Instances, rows: slice, times: IntArray, grain: Grain,
                    acc: IntArray, seen: npt.NDArray[np.bool_]) -> None:
        present, v = self._values(inst, rows, times, ("cpu_used", "mem_used", "cpu_req",
                                                      "mem_req"))
        w = inst.w[rows]
        pod = inst.pod[rows]
        has_req = self._cont_has_req[inst.cont[rows]][:, None]
        seen[w[present.any(axis=1)]] = True
        pod_starts = np.flatnonzero(np.r_[True, pod[1:] != pod[:-1]])
        for r, (used_q, req_q) in enumerate((("cpu_used", "cpu_req"), ("mem_used", "mem_req"))):
            used = np.where(present, v[used_q], 0).astype(np.int64)  # type: ignore[index]
            # Requests count only where the pod has usage: `present`, as a pod's containers
            # run together; the Pending and Completed parts of its request series never count.
            req = np.where(present & has_req, v[req_q], 0).astype(np.int64)  # type: ignore[index]
            np.add.at(acc[:, 3 * r], w, used.sum(axis=1))
            np.add.at(acc[:, 3 * r + 1], w, req.sum(axis=1))
            if grain == "container":
                charge, owner = np.maximum(used, req), w
            else:
                # A missing request sums to 0 here, so max() falls back to usage.
                charge = np.maximum(np.add.reduceat(used, pod_starts, axis=0),
                                    np.add.reduceat(req, pod_starts, axis=0))
                owner = w[pod_starts]
            np.add.at(acc[:, 3 * r + 2], owner, charge.sum(axis=1))

    def ground_truth(self, start: int, end: int, grain: Grain = "pod",
                     resolution: int | None = None,
                     ) -> dict[WorkloadKey, dict[Resource, SampleSums]]:
        """Ground truth in unit-hours: Core-Hours for cpu and GiB-Hours (2**30 bytes) for memory.

        Each step weighs 10 s / 3600, or `resolution` / 3600 for the served values at that
        resolution (see `sample_sums`). Values are exact whenever the decimal expansion
        terminates and otherwise correctly rounded to 50 significant digits (1/360 does not
        terminate).
        """
        step = Decimal(SAMPLE_INTERVAL if resolution is None else resolution)
        cpu_div = Decimal(CPU_QUANTUM * 3600)  # quanta-seconds per core-hour
        mem_div = Decimal(1024 * 3600)  # MiB-seconds per GiB-hour
        divisors: tuple[tuple[Resource, Decimal], ...] = (("cpu", cpu_div), ("memory", mem_div))
        out: dict[WorkloadKey, dict[Resource, SampleSums]] = {}
        with localcontext() as ctx:
            ctx.prec = 50
            for key, sums in self.sample_sums(start, end, grain, resolution).items():
                per: dict[Resource, SampleSums] = {}
                for res, div in divisors:
                    s = sums[res]
                    per[res] = SampleSums(Decimal(s.usage * step) / div,
                                          Decimal(s.request * step) / div,
                                          Decimal(s.chargeable * step) / div)
                out[key] = per
        if self.allocations is not None:
            if resolution not in (None, SAMPLE_INTERVAL):
                raise ValueError("the truth of GPUs and claims is kept at 10 s only")
            for key, more in self.allocations.ground_truth(start, end).items():
                out.setdefault(key, {}).update(more)
        return out

    def _served_sums(self, start: int, end: int, grain: Grain, resolution: int
                     ) -> dict[WorkloadKey, dict[Resource, UnitSums]]:
        """`sample_sums` at `resolution`: per series, at each multiple `t` of `resolution`,
        the latest value served in `(t - resolution/2, t]`."""
        if resolution <= 0 or (resolution % (2 * SAMPLE_INTERVAL) and resolution != SAMPLE_INTERVAL):
            raise ValueError(f"resolution must be 10 s or a multiple of 20 s, got {resolution}")
        half = resolution // 2
        out: dict[WorkloadKey, dict[Resource, UnitSums]] = {}
        served, sampling = self.served(start - half + 1, end)
        if sampling is None:
            sampling = np.full(len(served), SAMPLE_INTERVAL, dtype=np.int64)
        at = np.arange(-(-start // resolution) * resolution, end, resolution, dtype=np.int64)
        if not len(served) or not len(at):
            return out
        inst = self._pods(int(served[0]), int((served + sampling).max()), None)
        if not len(inst.w):
            return out
        quantities: tuple[Quantity, ...] = ("cpu_used", "cpu_req", "mem_used", "mem_req")
        counts, req_counts, sums = self._rolled(inst, served, sampling, quantities)
        series = self._series_ids(inst)
        columns = np.arange(len(served), dtype=np.int64)
        upto = np.searchsorted(served, at, side="right") - 1

        def latest(n: IntArray, which: Sequence[Quantity]
                   ) -> tuple[IntArray, npt.NDArray[np.bool_], dict[Quantity, IntArray]]:
            """Per series (rows of one series merged) and instant of `at`: has it a point in
            the half step, and the values of its latest one."""
            first, merged, _ = self._merge(series, n, sums[which[0]])
            last = np.maximum.accumulate(np.where(merged > 0, columns, -1), axis=1)
            pick = np.where(upto[None, :] >= 0, last[:, np.maximum(upto, 0)], -1)
            present = (pick >= 0) & (served[np.maximum(pick, 0)] > at[None, :] - half)
            pick = np.maximum(pick, 0)
            return first, present, {q: np.take_along_axis(self._merge(series, n, sums[q])[2],
                                                          pick, axis=1) for q in which}

        first, present, values = latest(counts, ("cpu_used", "mem_used"))
        # Request series are those of the same rows (every container has both families).
        _, asked, req_values = latest(req_counts, ("cpu_req", "mem_req"))
        values.update(req_values)
        w = inst.w[first]
        has_req = self._cont_has_req[inst.cont[first]][:, None]
        # Pods by name: a statefulset pod's series share its slot; any other pod is its own.
        pod = np.where(self._is_sts[w], -1 - inst.pod_slot[inst.pod[first]], inst.pod[first])
        pod_ids, pod_of = np.unique(pod, return_inverse=True)
        pod_of = pod_of.reshape(-1)
        pod_w = np.zeros(len(pod_ids), dtype=np.int64)
        pod_w[pod_of] = w
        # The rule: a request counts only at instants where its pod has a usage point.
        running = np.zeros((len(pod_ids), len(at)), dtype=np.int64)
        np.add.at(running, pod_of, present)
        counted = asked & has_req & (running[pod_of] > 0)
        acc = np.zeros((len(self._workloads), 6), dtype=np.int64)
        pairs: tuple[tuple[Quantity, Quantity], ...] = (("cpu_used", "cpu_req"),
                                                        ("mem_used", "mem_req"))
        for r, (used_q, req_q) in enumerate(pairs):
            used = np.where(present, values[used_q], 0)
            req = np.where(counted, values[req_q], 0)
            np.add.at(acc[:, 3 * r], w, used.sum(axis=1))
            np.add.at(acc[:, 3 * r + 1], w, req.sum(axis=1))
            if grain == "container":
                np.add.at(acc[:, 3 * r + 2], w, np.maximum(used, req).sum(axis=1))
            else:
                pod_used = np.zeros((len(pod_ids), len(at)), dtype=np.int64)
                pod_req = np.zeros_like(pod_used)
                np.add.at(pod_used, pod_of, used)
                np.add.at(pod_req, pod_of, req)
                np.add.at(acc[:, 3 * r + 2], pod_w, np.maximum(pod_used, pod_req).sum(axis=1))
        seen = np.zeros(len(self._workloads), dtype=bool)
        seen[w[present.any(axis=1)]] = True
        for i in np.flatnonzero(seen):
            row = [int(x) for x in acc[i]]
            out[self._workloads[i].key] = {"cpu": UnitSums(*row[0:3]),
                                           "memory": UnitSums(*row[3:6])}
        return out

    def allocatable_sums(self, start: int, end: int, resolution: int | None = None
                         ) -> dict[str, dict[Resource, int]]:
        """Per cluster, Σ over the 10 s steps `t` with `start <= t < end` (inside the available
        data) of every live node's allocatable, in quanta-steps (1/64 core x 10 s, MiB x 10 s),
        and with `FleetSpec.allocations` of its GPUs, in device-steps per charged GPU resource
        (`gpu`, `gpu.mig-1g.5gb`, ...: `allocations.GPU_RESOURCES`) where the cluster has any.

        With `resolution`, over the instants on multiples of it instead, each node counting
        where it has a point served in `(t - resolution/2, t]` (as `sample_sums`); units are
        then quanta x `resolution` seconds. A cluster without any node in the window is absent.
        """
        if resolution is None:
            a, b = self._grid(start, end)
            steps = np.arange(a, max(a, b), SAMPLE_INTERVAL, dtype=np.int64)
            sums = self._nodes.step_sums(steps, steps, None, 0)
        else:
            half = resolution // 2
            served, sampling = self.served(start - half + 1, end)
            at = np.arange(-(-start // resolution) * resolution, end, resolution, dtype=np.int64)
            sums = self._nodes.step_sums(at, served, sampling, half)
        return {c: {GPU_RESOURCES.get(r, r): v for r, v in per.items()} for c, per in sums.items()}

    def allocatable_truth(self, start: int, end: int, resolution: int | None = None
                          ) -> dict[str, dict[Resource, Decimal]]:
        """`allocatable_sums` in Core-Hours, GiB-Hours and GPU-Hours (exact: 1/64 core x 10 s and
        MiB x 10 s are terminating decimals of an hour only after rounding, so 50 digits, as
        `ground_truth`)."""
        step = Decimal(SAMPLE_INTERVAL if resolution is None else resolution)
        div: dict[Resource, Decimal] = {"cpu": Decimal(CPU_QUANTUM * 3600),
                                         "memory": Decimal(1024 * 3600)}
        with localcontext() as ctx:
            ctx.prec = 50
            return {c: {r: Decimal(v * step) / div.get(r, Decimal(3600)) for r, v in per.items()}
                    for c, per in self.allocatable_sums(start, end, resolution).items()}

    # ----------------------------------------------------------------- PromQL storage
    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        """`Storage.select`: every matching series with samples stamped in `[start_ms, end_ms]`.

        Results are cached (least recently used, bounded in bytes) because one period's queries
        select the same series several times. Callers must not modify the returned arrays.
        """
        times, steps = self.served(-(-start_ms // 1000), end_ms // 1000 + 1)
        key: tuple[object, ...] = (frozenset((m.name, m.op, m.value) for m in matchers),
                                   int(times[0]) if len(times) else 0, len(times))
        if steps is not None:
            key += (steps.tobytes(), times.tobytes())
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        result = self._select(matchers, times, steps=steps)
        if self.allocations is not None:
            more = self.allocations.select(matchers, times)
            if len(more):
                result = SeriesSet([*result.labels, *more.labels], result.ts,
                                   np.concatenate([result.values, more.values], axis=0))
        size = result.values.nbytes
        with self._lock:
            if size <= self._cache_bytes:
                self._cache[key] = result
                self._cached += size
            while self._cached > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.values.nbytes
        return result

    def _workload_mask(self, matchers: Sequence[LabelMatcher]) -> npt.NDArray[np.bool_]:
        key = frozenset((m.name, m.op, m.value) for m in matchers)
        with self._lock:
            hit = self._masks.get(key)
        if hit is None:
            hit = np.array([all(m.matches(wire.get(m.name)) for m in matchers)
                            for wire in self._wire], dtype=bool)
            with self._lock:
                if len(self._masks) > 256:
                    self._masks.clear()
                self._masks[key] = hit
        return hit

    def _select(self, matchers: Sequence[LabelMatcher], times: IntArray,
                within: npt.NDArray[np.bool_] | None = None, steps: IntArray | None = None,
                ) -> SeriesSet:
        """Rows for the matching series over `times` (seconds): the workloads' (optionally only
        those flagged in `within`) and the nodes' (`chargeback_simulator.nodes`); `steps[j]` is
        the sampling `times[j]` is served at (None: 10 s samples throughout)."""
        pods = self._select_workloads(matchers, times, within, steps)
        nodes = self._nodes.select(matchers, times, steps) if within is None else None
        if nodes is None or not len(nodes):
            return pods
        if not len(pods):
            return nodes
        return SeriesSet([*pods.labels, *nodes.labels], pods.ts,
                         np.concatenate([pods.values, nodes.values], axis=0))

    def _select_workloads(self, matchers: Sequence[LabelMatcher], times: IntArray,
                          within: npt.NDArray[np.bool_] | None = None,
                          steps: IntArray | None = None) -> SeriesSet:
        """`_select` for the workloads' series only."""
        ts_ms = times * 1000
        families = [
            (name, dict(extra), q, label) for name, extra, q, label in _FAMILIES
            if all(m.matches({METRIC_NAME: name, **dict(extra)}.get(m.name))
                   for m in matchers if m.name in _METRIC_LEVEL)
        ]
        if not families or not len(times):
            return SeriesSet.empty(ts_ms)
        wmask = self._workload_mask([m for m in matchers
                                     if m.name not in _POD_LEVEL | _METRIC_LEVEL])
        if within is not None:
            wmask = wmask & within
        if not wmask.any():
            return SeriesSet.empty(ts_ms)
        last = int(times[-1]) + (SAMPLE_INTERVAL if steps is None else int(steps[-1]))
        inst = self._pods(int(times[0]), last, wmask)
        pod_names = [
            self._pod_name(self._workloads[w], s, g, p)
            for w, s, g, p in zip(inst.pod_w.tolist(), inst.pod_slot.tolist(),
                                  inst.pod_g.tolist(), inst.pod_pid.tolist(), strict=True)
        ]
        row_pod = [pod_names[i] for i in inst.pod.tolist()]
        row_cont = [self._cont_name[i] for i in inst.cont.tolist()]
        pod_matchers = [m for m in matchers if m.name in _POD_LEVEL]
        keep: dict[str, npt.NDArray[np.bool_]] = {}
        for label in {label for _, _, _, label in families}:
            # A series without the matcher's label matches as if it were empty.
            keep[label] = np.array([
                all(m.matches(p if m.name == "kube_pod_name" else c if m.name == label else None)
                    for m in pod_matchers)
                for p, c in zip(row_pod, row_cont, strict=True)], dtype=bool
            ) if pod_matchers else np.ones(len(inst.w), dtype=bool)
        rows_of: dict[Quantity, IntArray] = {}
        has_req = self._cont_has_req[inst.cont]
        # Every instance's request series meet the window; its usage may not (Pending, or
        # Completed and kept).
        runs = (inst.end > int(times[0])) & (inst.start < last)
        for _, _, q, label in families:
            rows_of[q] = np.flatnonzero(keep[label] & has_req if q in _REQUESTED
                                        else keep[label] & runs)
        # A statefulset pod reborn under its old name continues the same series.
        series_id = self._series_ids(inst)
        if steps is not None:
            return self._select_rolled(inst, families, rows_of, series_id, row_pod, row_cont,
                                       times, steps)
        # Each kept row has at least one sample on the 10 s grid.
        dense = {q: np.empty((len(r), len(times))) for q, r in rows_of.items()}
        position = {q: np.cumsum(np.isin(np.arange(len(inst.w)), r)) - 1
                    for q, r in rows_of.items()}
        for chunk in self._row_chunks(len(inst.w), len(times)):
            present, values = self._values(inst, chunk, times, list(rows_of))
            asked = self._requested(inst, chunk, times) if _REQUESTED & rows_of.keys() else None
            for q, r in rows_of.items():
                sel = r[(r >= chunk.start) & (r < chunk.stop)]
                scale = 1.0 / CPU_QUANTUM if q.startswith("cpu") else float(MIB)
                local = sel - chunk.start
                mask = asked if asked is not None and q in _REQUESTED else present
                dense[q][position[q][sel]] = np.where(mask[local],
                                                      values[q][local] * scale, np.nan)
        out_labels: list[Labels] = []
        blocks = []
        for name, extra, q, label in families:
            idx, block = rows_of[q], dense[q]
            sid = series_id[idx]
            dup = np.bincount(sid)[sid] > 1
            if dup.any():
                rows = np.flatnonzero(dup)
                order = rows[np.argsort(sid[rows], kind="stable")]
                starts = np.flatnonzero(np.r_[True, sid[order][1:] != sid[order][:-1]])
                block[order[starts]] = np.fmax.reduceat(block[order], starts, axis=0)
                survivors = np.ones(len(idx), dtype=bool)
                survivors[order] = False
                survivors[order[starts]] = True
                block, idx = block[survivors], idx[survivors]
            blocks.append(block)
            wl = inst.w[idx].tolist()
            for i, w in zip(idx.tolist(), wl, strict=True):
                out_labels.append({**self._wire[w], "kube_pod_name": row_pod[i],
                                   label: row_cont[i], METRIC_NAME: name, **extra})
        return SeriesSet(out_labels, ts_ms, np.concatenate(blocks, axis=0))

    def _series_ids(self, inst: _Instances) -> IntArray:
        """Per instance row, its series: a statefulset pod's containers keep theirs across
        restarts (same pod name); any other instance is a series of its own."""
        within = inst.cont - self._cont_first[inst.w]
        ident = np.where(self._is_sts[inst.w], inst.pod_slot[inst.pod] * 64 + within,
                         -1 - np.arange(len(inst.w)))
        series_id: IntArray = np.unique(ident, return_inverse=True)[1].reshape(-1)
        return series_id

    @staticmethod
    def _requested(inst: _Instances, rows: slice, times: IntArray) -> npt.NDArray[np.bool_]:
        """For `rows` x `times`: does the pod have its request series (Pending to deleted)?"""
        out: npt.NDArray[np.bool_] = ((times[None, :] >= inst.req_start[rows, None])
                                      & (times[None, :] < inst.req_end[rows, None]))
        return out

    def _rolled(self, inst: _Instances, times: IntArray, steps: IntArray,
                which: Collection[Quantity]
                ) -> tuple[IntArray, IntArray, dict[Quantity, IntArray]]:
        """Per instance row and instant `times[j]`: how many 10 s usage samples and how many
        request samples lie in `[times[j], times[j] + steps[j])`, and their sum in quanta per
        quantity (usage over the first, requests over the second)."""
        n, width = len(inst.w), len(times)
        counts = np.zeros((n, width), dtype=np.int64)
        req_counts = np.zeros((n, width), dtype=np.int64)
        sums = {q: np.zeros((n, width), dtype=np.int64) for q in which}
        for step in np.unique(steps).tolist():
            cols = np.flatnonzero(steps == step)
            k = step // SAMPLE_INTERVAL
            # The buckets of one sampling are disjoint and ascending: one sorted 10 s grid.
            raw = (times[cols][:, None]
                   + np.arange(0, step, SAMPLE_INTERVAL, dtype=np.int64)[None, :]).reshape(-1)
            for rows in self._row_chunks(n, len(raw)):
                present, values = self._values(inst, rows, raw, which)
                shape = (len(present), len(cols), k)
                counts[rows, cols] = present.reshape(shape).sum(axis=2)
                asked = self._requested(inst, rows, raw) if _REQUESTED & set(which) else None
                if asked is not None:
                    req_counts[rows, cols] = asked.reshape(shape).sum(axis=2)
                for q in which:
                    mask = asked if asked is not None and q in _REQUESTED else present
                    kept = np.where(mask, values[q], 0).astype(np.int64)
                    sums[q][rows, cols] = kept.reshape(shape).sum(axis=2)
        return counts, req_counts, sums

    @staticmethod
    def _merge(series: IntArray, counts: IntArray, sums: IntArray
               ) -> tuple[IntArray, IntArray, IntArray]:
        """Rows of one series added together (their samples never overlap), then each point's
        roll-up: the mean in quanta, halves up. Returns (first row of each series, counts,
        values), series in order of first row."""
        uniq, first, inverse = np.unique(series, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        c = np.zeros((len(uniq), counts.shape[1]), dtype=np.int64)
        t = np.zeros_like(c)
        np.add.at(c, inverse, counts)
        np.add.at(t, inverse, sums)
        order = np.argsort(first, kind="stable")
        c, t = c[order], t[order]
        values = (2 * t + c) // np.maximum(2 * c, 1)
        out_first: IntArray = first[order]
        return out_first, c, values

    def _select_rolled(self, inst: _Instances,
                       families: Sequence[tuple[str, dict[str, str], Quantity, str]],
                       rows_of: Mapping[Quantity, IntArray], series_id: IntArray,
                       row_pod: Sequence[str], row_cont: Sequence[str], times: IntArray,
                       steps: IntArray) -> SeriesSet:
        """`_select` where some instants are roll-ups (see the class docstring)."""
        counts, req_counts, sums = self._rolled(inst, times, steps, list(rows_of))
        out_labels: list[Labels] = []
        blocks = []
        for name, extra, q, label in families:
            idx = rows_of[q]
            n = req_counts if q in _REQUESTED else counts
            first, c, values = self._merge(series_id[idx], n[idx], sums[q][idx])
            live = c.any(axis=1)
            scale = 1.0 / CPU_QUANTUM if q.startswith("cpu") else float(MIB)
            blocks.append(np.where(c[live] > 0, values[live] * scale, np.nan))
            for i in idx[first[live]].tolist():
                out_labels.append({**self._wire[int(inst.w[i])], "kube_pod_name": row_pod[i],
                                   label: row_cont[i], METRIC_NAME: name, **extra})
        return SeriesSet(out_labels, times * 1000, np.concatenate(blocks, axis=0))

    # ----------------------------------------------------------------- OpenMetrics export
    def export_openmetrics(self, start: int, end: int, path: str | Path) -> int:
        """Write every sample served in `[start, end)` as OpenMetrics text; returns the count.

        Families are grouped with a `# TYPE <name> gauge` line, each series' samples are
        contiguous and in time order with explicit timestamps in seconds, and the file ends with
        `# EOF`: the input `promtool tsdb create-blocks-from openmetrics` expects.
        """
        times, steps = self.served(start, end)
        stamps = [str(int(t)) for t in times]
        # Workloads in batches bound memory; a series never spans two workloads.
        batch = max(1, _CHUNK // max(1, len(times)))
        count = 0
        with open(path, "w", encoding="utf-8") as out:
            families = dict.fromkeys(name for name, _, _, _ in _FAMILIES)
            if self.allocations is not None:
                families.update(dict.fromkeys(ALLOCATION_FAMILIES))
            for family in families:
                out.write(f"# TYPE {family} gauge\n")
                only = [LabelMatcher.of(METRIC_NAME, "=", family)]
                ours = len(self._workloads) if len(times) and family in _FAMILY_NAMES else 0
                for first in range(0, ours, batch):
                    within = np.zeros(len(self._workloads), dtype=bool)
                    within[first:first + batch] = True
                    data = self._select(only, times, within, steps)
                    count += self._write_series(out, family, data, stamps)
                if self.allocations is not None and family in ALLOCATION_FAMILIES:
                    # A family's series are written together: GPU requests with cpu and memory.
                    if steps is not None:
                        raise ValueError("GPUs and claims are served as 10 s samples only")
                    count += self._write_series(out, family, self.allocations.select(only, times),
                                                stamps)
            out.write(f"# TYPE {ALLOCATABLE} gauge\n")
            data = self._nodes.select([LabelMatcher.of(METRIC_NAME, "=", ALLOCATABLE)], times,
                                      steps)
            count += self._write_series(out, ALLOCATABLE, data, stamps)
            out.write("# EOF\n")
        return count

    @staticmethod
    def _write_series(out: TextIO, family: str, data: SeriesSet, stamps: list[str]) -> int:
        count = 0
        for labels, row in zip(data.labels, data.values, strict=True):
            body = ",".join(f'{k}="{_om_escape(v)}"' for k, v in sorted(labels.items())
                            if k != METRIC_NAME)
            head = f"{family}{{{body}}} "
            cols = np.flatnonzero(~np.isnan(row)).tolist()
            out.write("".join(f"{head}{format_value(float(row[j]))} {stamps[j]}\n"
                              for j in cols))
            count += len(cols)
        return count


def _om_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
