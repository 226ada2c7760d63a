"""The fleet's nodes: allocatable capacity that comes and goes, as kube-state-metrics reports it.

Each cluster has `FleetSpec.nodes_per_cluster` node slots. Slot 0 is a permanent node; every
other slot cycles: its generation `g` lives `[g*period + offset, g*period + offset + duration)`
(multiples of 10 s, not aligned to hours), under a new node name per generation, so nodes join
and leave inside a period. A node's allocatable is constant over its life: CPU in 1/64 core and
memory in MiB, the fleet's exactness rule, so sums over nodes and steps are exact in float64.

GPUs (`FleetSpec.allocations`): a cluster's permanent node hosts its GPU pods and offers the
devices `Allocations.node_gpus` gives it, per kube-state-metrics resource (`nvidia_com_gpu`,
`nvidia_com_mig_1g_5gb`, ...); in a cluster with whole-GPU pods, each generation of the other
slots offers 0, 1 or 2 more `nvidia_com_gpu` that nothing is scheduled on (GPU nodes that an
autoscaler adds and removes: idle devices that come and go).

Series: `kube_node_status_allocatable{kube_cluster_name, kube_node_name, resource, unit}`
(`resource="cpu"`, `unit="core"`; `resource="memory"`, `unit="byte"`; a GPU resource,
`unit="integer"`), one sample per 10 s step of the node's life; on rolled-up tiers, a point per
bucket that the node's life meets, of the same (constant) value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chargeback_simulator.series import METRIC_NAME, IntArray, LabelMatcher, SeriesSet, matches_all

ALLOCATABLE = "kube_node_status_allocatable"
SAMPLE_INTERVAL = 10
CPU_QUANTUM = 64
MIB = 2**20
# What the kubelet keeps for itself (kube-reserved + system-reserved), in quanta.
_CPU_RESERVED = 5  # 5/64 core, about 78 millicores
_MEM_RESERVED = 819  # MiB
_FOREVER = 2**62

_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _hash(*parts: int) -> int:
    h = 0x40DE
    for p in parts:
        h = _mix(h ^ (p & _MASK))
    return h


@dataclass(frozen=True, slots=True)
class Node:
    """One node generation: alive (has samples) at the 10 s steps `t` with `start <= t < end`;
    allocatable `cpu` in 1/64 core, `memory` in MiB and `gpus` in devices per GPU resource."""

    cluster: str
    name: str
    start: int
    end: int
    cpu: int
    memory: int
    gpus: tuple[tuple[str, int], ...] = ()

    def allocatable(self) -> list[tuple[str, str, int]]:
        """(resource label, unit label, value in quanta or devices) of each series."""
        return [("cpu", "core", self.cpu), ("memory", "byte", self.memory),
                *((r, "integer", n) for r, n in self.gpus)]


@dataclass(frozen=True, slots=True)
class _Slot:
    cluster: str
    index: int
    period: int  # 0: permanent
    offset: int
    duration: int
    seed: int


class Nodes:
    """The node slots of a fleet's clusters (see the module docstring)."""

    def __init__(self, seed: int, clusters: Sequence[str], per_cluster: int, cores: int,
                 gpus: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._cores = cores
        self._gpus = {c: tuple(sorted(per.items())) for c, per in (gpus or {}).items()}
        self.resources = ("cpu", "memory", *sorted({r for per in self._gpus.values()
                                                    for r, _ in per}))
        self._slots: list[_Slot] = []
        for c, cluster in enumerate(clusters):
            for i in range(per_cluster):
                h = _hash(seed, c, i)
                if i == 0:
                    self._slots.append(_Slot(cluster, i, 0, 0, _FOREVER, h))
                    continue
                period = (90 + (h % 7) * 15) * 60
                duration = period * (50 + (h >> 8) % 41) // 100 // SAMPLE_INTERVAL * SAMPLE_INTERVAL
                offset = (h >> 20) % (period // SAMPLE_INTERVAL) * SAMPLE_INTERVAL
                self._slots.append(_Slot(cluster, i, period, offset, duration, h))

    def _node(self, slot: _Slot, g: int) -> Node:
        h = _hash(slot.seed, g)
        gpus = self._gpus.get(slot.cluster, ())
        if slot.period == 0:
            cores, start, end = 2 * self._cores, -_FOREVER, _FOREVER
        else:
            cores = self._cores * (2, 3, 4)[h % 3] // 3
            start = g * slot.period + slot.offset
            end = start + slot.duration
            spare = (h >> 33) % 3
            gpus = (("nvidia_com_gpu", spare),) if spare and any(
                r == "nvidia_com_gpu" for r, _ in gpus) else ()
        region = slot.cluster.split("-")[-1]
        name = f"ip-10-{region}-{slot.index}-{h % 65536:05d}.sim.internal"
        return Node(slot.cluster, name, start, end,
                    max(1, cores * CPU_QUANTUM - _CPU_RESERVED),
                    max(1, cores * 1024 - _MEM_RESERVED), gpus)

    def nodes(self, start: int, end: int) -> list[Node]:
        """Every node generation whose life meets `[start, end)` (seconds), by cluster and slot."""
        out: list[Node] = []
        for slot in self._slots:
            if slot.period == 0:
                out.append(self._node(slot, 0))
                continue
            first = (start - slot.offset - slot.duration) // slot.period
            last = (end - slot.offset) // slot.period
            for g in range(first, last + 1):
                node = self._node(slot, g)
                if node.end > start and node.start < end:
                    out.append(node)
        return out

    def select(self, matchers: Sequence[LabelMatcher], times: IntArray,
               steps: IntArray | None) -> SeriesSet:
        """The allocatable series matching `matchers` at `times` (seconds), each served at
        `steps[j]` (None: 10 s samples): a point where the node's life meets `[t, t + step)`."""
        ts_ms = times * 1000
        if not len(times) or not any(
                matches_all([m for m in matchers if m.name in (METRIC_NAME, "resource")],
                            {METRIC_NAME: ALLOCATABLE, "resource": r}) for r in self.resources):
            return SeriesSet.empty(ts_ms)
        width = np.full(len(times), SAMPLE_INTERVAL, dtype=np.int64) if steps is None else steps
        last = int(times[-1] + width[-1])
        labels: list[dict[str, str]] = []
        rows: list[np.ndarray] = []
        for node in self.nodes(int(times[0]), last):
            # The first 10 s step at or after max(t, start) must lie before min(t + w, end).
            lo = np.maximum(times, node.start)
            lo = -(-lo // SAMPLE_INTERVAL) * SAMPLE_INTERVAL
            alive = lo < np.minimum(times + width, node.end)
            for resource, unit, quanta in node.allocatable():
                value = {"cpu": quanta / CPU_QUANTUM, "memory": float(quanta * MIB)}.get(
                    resource, float(quanta))
                series = {METRIC_NAME: ALLOCATABLE, "kube_cluster_name": node.cluster,
                          "kube_node_name": node.name, "resource": resource, "unit": unit}
                if alive.any() and matches_all(matchers, series):
                    labels.append(series)
                    rows.append(np.where(alive, value, np.nan))
        if not rows:
            return SeriesSet.empty(ts_ms)
        return SeriesSet(labels, ts_ms, np.vstack(rows))

    def step_sums(self, at: IntArray, served: IntArray, sampling: IntArray | None,
                  half: int) -> dict[str, dict[str, int]]:
        """Per cluster and resource label, Σ over the instants `at` of the allocatable of the
        nodes with a point served in `(t - half, t]` (`served` instants at `sampling`, None:
        10 s), in quanta (1/64 core, MiB, devices). `half = 0` with `served = at`: the node's
        10 s samples themselves."""
        out: dict[str, dict[str, int]] = {}
        if not len(at):
            return out
        width = (np.full(len(served), SAMPLE_INTERVAL, dtype=np.int64) if sampling is None
                 else sampling)
        for node in self.nodes(int(at[0]) - max(half, SAMPLE_INTERVAL) - int(width.max()),
                               int(at[-1]) + SAMPLE_INTERVAL):
            lo = -(-np.maximum(served, node.start) // SAMPLE_INTERVAL) * SAMPLE_INTERVAL
            points = served[lo < np.minimum(served + width, node.end)]
            if half:
                # Latest point at or before t, and newer than t - half.
                idx = np.searchsorted(points, at, side="right") - 1
                hit = (idx >= 0) & (points[np.maximum(idx, 0)] > at - half) if len(points) \
                    else np.zeros(len(at), dtype=bool)
            else:
                hit = np.isin(at, points)
            n = int(hit.sum())
            per = out.setdefault(node.cluster, {})
            for resource, _, quanta in node.allocatable():
                per[resource] = per.get(resource, 0) + n * quanta
        return out
