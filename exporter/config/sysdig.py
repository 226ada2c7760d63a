"""The `sysdig` and `resources` sections: where and how Sysdig is asked, and what it is asked for."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from exporter import limits as service_limits
from exporter.config.fields import Duration, Section, read_secret
from exporter.errors import ConfigError
from exporter.model import GPU, is_resource

# Where `requests` looks for a CA bundle, in its order (`Session.merge_environment_settings`).
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class SysdigLimitsConfig(Section):
    """Sysdig's Prometheus API service limits the queries are sized to, and the share of each
    kept free (docs/queries.md, "Service limits"). Lower them for a tenant with lower limits."""

    segments: int = Field(default=service_limits.SEGMENTS, ge=1)
    raw_series: int = Field(default=service_limits.RAW_SERIES, ge=1)
    metrics: int = Field(default=service_limits.METRICS, ge=1)
    samples_per_minute: int = Field(default=service_limits.SAMPLES_PER_MINUTE, ge=1)
    # Each query is sized to stay below (1 - margin) x each limit.
    margin: float = Field(default=0.2, ge=0.05, le=0.9)


class SysdigConfig(Section):
    url: str = "https://app.sysdigcloud.com"
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout: Duration = 60
    verify_tls: bool = True
    ca_file: Path | None = None
    max_attempts: int = Field(default=4, ge=1, le=20)
    max_retry_time: Duration = 300
    # Queries in flight at once; Sysdig accepts at most 200.
    max_concurrency: int = Field(default=4, ge=1, le=service_limits.CONCURRENCY)
    limits: SysdigLimitsConfig = SysdigLimitsConfig()
    # Target usage series per cluster group (one chunk of a period), and how many groups are
    # fetched ahead of the one being published.
    group_series: int = Field(default=20_000, ge=1)
    prefetch_groups: int = Field(default=2, ge=0, le=64)
    clusters: tuple[str, ...] = ()
    # Clusters no longer expected in every period (decommissioned): see docs/operations.md.
    retired_clusters: tuple[str, ...] = ()
    retention_tiers: bool = True
    # How long Sysdig's retention timelines are trusted before they are read again.
    retention_refresh: Duration = Field(default=86400, ge=60)
    # A token of a scoped team sees part of the fleet: refused unless explicitly allowed.
    allow_scoped_team: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: int) -> int:
        if not 1 <= v <= 120:
            raise ValueError("must be between 1s and 2m (Sysdig caps query timeouts at 2m)")
        return v

    @model_validator(mode="after")
    def _group_below_limits(self) -> SysdigConfig:
        below = int(self.limits.segments * (1 - self.limits.margin))
        if self.group_series > below:
            raise ValueError(
                f"sysdig.group_series ({self.group_series}) must be at most sysdig.limits.segments "
                f"x (1 - sysdig.limits.margin) = {below}, so each answer stays below Sysdig's cap")
        return self

    def query_limits(self) -> service_limits.Limits:
        """The limits, margin and group size `SysdigSource` sizes its queries to."""
        lim = self.limits
        return service_limits.Limits(segments=lim.segments, raw_series=lim.raw_series, metrics=lim.metrics,
                             samples_per_minute=lim.samples_per_minute, margin=lim.margin,
                             group_series=self.group_series, concurrency=self.max_concurrency)

    def resolved_token(self) -> str | None:
        return read_secret(self.token, self.token_file, "sysdig.token")

    def tls_verify(self, environ: Mapping[str, str] | None = None) -> bool | str:
        """What every Sysdig client the exporter builds verifies certificates with.

        False with `verify_tls: false`; else `ca_file`; else, as `requests` does, the bundle
        named by `REQUESTS_CA_BUNDLE`, then `CURL_CA_BUNDLE` (empty values are ignored); else
        True (requests' own bundle). Raises `ConfigError` when the named bundle does not exist,
        which requests would only report mid-request.
        """
        if not self.verify_tls:
            return False
        env = os.environ if environ is None else environ
        named = [("sysdig.ca_file", str(self.ca_file))] if self.ca_file is not None else []
        named += [(var, env[var]) for var in CA_BUNDLE_VARIABLES if env.get(var)]
        if not named:
            return True
        origin, path = named[0]
        if not os.path.exists(path):
            raise ConfigError(f"{origin}: CA bundle {path} does not exist (TLS verification of "
                              "Sysdig needs it)")
        return path


_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
MetricName = Annotated[str, Field(pattern=f"^{_METRIC_NAME}$")]
LabelName = Annotated[str, Field(pattern=f"^{_LABEL_NAME}$")]


class GpuConfig(Section):
    """GPUs charged by allocation: what kube-state-metrics' requests name them (docs/queries.md)."""

    enabled: bool = True
    # kube-state-metrics v2 `resource` label value -> charged resource: `gpu` for whole GPUs,
    # `gpu.<profile>` for a MIG profile or a time-sliced replica, each priced on its own.
    resources: dict[LabelName, str] = Field(default_factory=lambda: {"nvidia_com_gpu": "gpu"})
    # Utilisation reported next to the charge (information only), 0-100 per device, and the
    # labels naming the pod that holds the device (DCGM exporter's Kubernetes mapping).
    utilization_metric: MetricName | None = "DCGM_FI_DEV_GPU_UTIL"
    utilization_pod_label: LabelName = "pod"
    utilization_namespace_label: LabelName = "namespace"

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("needs at least one resource (or set enabled: false)")
        for name, charged in v.items():
            if charged != GPU and not (charged.startswith(GPU + ".") and is_resource(charged)):
                raise ValueError(f"{name}: {charged!r} is not gpu or gpu.<profile> (lower-case "
                                 "letters, digits, '.' and '-', e.g. gpu.mig-1g.5gb)")
        return v


class StorageConfig(Section):
    """Persistent volume claims charged by requested capacity; Sysdig's names (docs/queries.md)."""

    enabled: bool = True
    capacity_metric: MetricName = "kube_persistentvolumeclaim_resource_requests_storage_bytes"
    info_metric: MetricName = "kube_persistentvolumeclaim_info"
    mount_metric: MetricName = "kube_pod_spec_volumes_persistentvolumeclaims_info"
    claim_label: LabelName = "kube_persistentvolumeclaim_name"
    class_label: LabelName = "kube_storageclass_name"
    # Clusters whose claims were billed before and were all deleted since: without them here a
    # cluster that shows no claim series any more is held (a renamed capacity metric bills 0).
    clusters_without_claims: tuple[str, ...] = ()


class ResourcesConfig(Section):
    """Resources charged besides cpu and memory."""

    gpu: GpuConfig = GpuConfig()
    storage: StorageConfig = StorageConfig()
