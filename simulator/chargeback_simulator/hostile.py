"""Ways real Sysdig answers "successfully" with less than the fleet: a `Storage` wrapper.

A renamed metric, a stopped agent, a cluster whose kube-state-metrics is gone or a token whose
team sees nothing all look the same to a client: a `success` answer with fewer series, or none.
`Hiding` reproduces them over any storage so that the exporter can be shown to hold such
periods instead of billing them as "nothing ran".
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

    def reset(self) -> None:
        with self._lock:
            self._all, self._clusters, self._metrics = False, frozenset(), frozenset()

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        data = self.storage.select(matchers, start_ms, end_ms)
        with self._lock:
            hide_all, clusters, metrics = self._all, self._clusters, self._metrics
        if hide_all:
            return SeriesSet.empty(data.ts)
        if not clusters and not metrics:
            return data
        keep = [i for i, labels in enumerate(data.labels)
                if labels.get("kube_cluster_name", "") not in clusters
                and (labels.get("kube_cluster_name", ""), labels.get(METRIC_NAME, "")) not in metrics]
        if len(keep) == len(data.labels):
            return data
        rows = np.array(keep, dtype=np.int64)
        return SeriesSet([data.labels[i] for i in keep], data.ts, data.values[rows])
