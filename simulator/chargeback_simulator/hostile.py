"""Ways real Sysdig answers "successfully" with less than the fleet: a `Storage` wrapper.

A renamed metric, a stopped agent, a cluster whose kube-state-metrics is gone or a token whose
team sees nothing all look the same to a client: a `success` answer with fewer series, or none.
`Hiding` reproduces them over any storage so that the exporter can be shown to hold such
periods instead of billing them as "nothing ran". It also answers with more than the fleet:
the same series twice, told apart by one label (two kube-state-metrics replicas both
collected, or a collector's failover), which a query that sums info or capacity series would
bill twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from chargeback_simulator.series import METRIC_NAME, LabelMatcher, SeriesSet, Storage


class Hiding:
    """`storage` with series hidden: all of them, whole clusters, or one metric of a cluster.

    Thread-safe; the rules can change while the server runs (a cluster that disappears
    between two periods). `hide_all` hides everything, as an always-empty Sysdig would.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._all = False
        self._clusters: frozenset[str] = frozenset()
        self._metrics: frozenset[tuple[str, str]] = frozenset()
        self._twins: dict[str, tuple[str, str]] = {}

    def hide_all(self, hidden: bool = True) -> None:
        with self._lock:
            self._all = hidden

    def hide_clusters(self, clusters: Iterable[str]) -> None:
        """Hide every series of `clusters` (replaces the previous set)."""
        with self._lock:
            self._clusters = frozenset(clusters)

    def hide_metric(self, cluster: str, metric: str) -> None:
        """Also hide `metric` (e.g. the request metric) in `cluster`."""
        with self._lock:
            self._metrics = self._metrics | {(cluster, metric)}

    def duplicate_metric(self, metric: str, label: str, value: str) -> None:
        """Answer every series of `metric` twice: as it is, and with `label` set to `value`."""
        with self._lock:
            self._twins = {**self._twins, metric: (label, value)}

    def reset(self) -> None:
        with self._lock:
            self._all, self._clusters, self._metrics = False, frozenset(), frozenset()
            self._twins = {}

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        data = self.storage.select(matchers, start_ms, end_ms)
        with self._lock:
            hide_all, clusters, metrics, twins = self._all, self._clusters, self._metrics, self._twins
        if hide_all:
            return SeriesSet.empty(data.ts)
        if twins:
            data = _twinned(data, twins, matchers)
        if not clusters and not metrics:
            return data
        keep = [i for i, labels in enumerate(data.labels)
                if labels.get("kube_cluster_name", "") not in clusters
                and (labels.get("kube_cluster_name", ""), labels.get(METRIC_NAME, "")) not in metrics]
        if len(keep) == len(data.labels):
            return data
        rows = np.array(keep, dtype=np.int64)
        return SeriesSet([data.labels[i] for i in keep], data.ts, data.values[rows])


def _twinned(data: SeriesSet, twins: dict[str, tuple[str, str]],
             matchers: Sequence[LabelMatcher]) -> SeriesSet:
    """`data` with a copy of each series of a metric in `twins`, that metric's label set, when
    the copy still matches `matchers`."""
    rows: list[int] = []
    labels: list[dict[str, str]] = []
    for i, lb in enumerate(data.labels):
        twin = twins.get(lb.get(METRIC_NAME, ""))
        if twin is None:
            continue
        copy = {**lb, twin[0]: twin[1]}
        if all(m.matches(copy.get(m.name)) for m in matchers):
            rows.append(i)
            labels.append(copy)
    if not rows:
        return data
    values = np.concatenate([data.values, data.values[np.array(rows, dtype=np.int64)]])
    return SeriesSet([*data.labels, *labels], data.ts, values)
