"""Organisation model: which Sysdig labels give each org key, and how missing values resolve.

Resolution order per key: the workload's own labels (`kube_<kind>_label_<name>` for each
configured name, in order), then the namespace's (`kube_namespace_label_<name>`), then the
configured default, then `__unallocated__`. Empty and whitespace-only values count as missing.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.config import OrgConfig
from exporter.model import ORG_KEYS, UNALLOCATED, OrgAssignment
from exporter.queries import WORKLOAD_KINDS, label_columns


def sysdig_label_name(name: str) -> str:
    """Sysdig/Prometheus sanitise label names: anything but [a-zA-Z0-9_] becomes `_`."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


class OrgModel:
    """Resolves org keys from the label map Sysdig returns for a workload."""

    def __init__(self, config: OrgConfig) -> None:
        self._config = config

    def label_columns(self) -> tuple[str, ...]:
        """Sysdig label names the source must group by to see every org label."""
        workload: list[str] = []
        namespace: list[str] = []
        for key in ORG_KEYS:
            kc = self._config.keys[key]
            workload.extend(sysdig_label_name(n) for n in kc.workload_labels)
            namespace.extend(sysdig_label_name(n) for n in kc.namespace_labels)
        others = [sysdig_label_name(n) for n in self._config.other_labels]
        return label_columns(workload, namespace, others)

    def resolve(self, kind: str, labels: Mapping[str, str]) -> OrgAssignment:
        """Resolve every org key for a workload of Sysdig kind `kind` (e.g. `deployment`)."""
        values: dict[str, str] = {}
        sources: dict[str, str] = {}
        kinds = (kind,) if kind in WORKLOAD_KINDS else WORKLOAD_KINDS
        for key in ORG_KEYS:
            kc = self._config.keys[key]
            found: tuple[str, str] | None = None
            for name in kc.workload_labels:
                for k in kinds:
                    v = labels.get(f"kube_{k}_label_{sysdig_label_name(name)}", "").strip()
                    if v:
                        found = (v, "workload")
                        break
                if found:
                    break
            if not found:
                for name in kc.namespace_labels:
                    v = labels.get(f"kube_namespace_label_{sysdig_label_name(name)}", "").strip()
                    if v:
                        found = (v, "namespace")
                        break
            if not found and kc.default:
                found = (kc.default, "default")
            values[key], sources[key] = found or (UNALLOCATED, "unallocated")
        return OrgAssignment(values=values, sources=sources)

    def other_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The configured non-org labels present on the workload."""
        out: dict[str, str] = {}
        for name in self._config.other_labels:
            col = sysdig_label_name(name)
            for k in (*WORKLOAD_KINDS, "namespace"):
                v = labels.get(f"kube_{k}_label_{col}")
                if v:
                    out[name] = v
                    break
            else:
                if labels.get(col):
                    out[name] = labels[col]
        return out
