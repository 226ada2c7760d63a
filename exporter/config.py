"""One validated, frozen configuration tree.

Sources, highest precedence first: explicit overrides (CLI flags), environment variables, the
YAML file, defaults. Environment variables are `CHARGEBACK_<SECTION>__<KEY>` (upper case, `__`
between levels), e.g. `CHARGEBACK_KAFKA__BOOTSTRAP_SERVERS`. Values are parsed as YAML scalars or
lists. Unknown keys anywhere, including unknown `CHARGEBACK_*` variables, are errors naming the
key's path, and so is a key given twice in one mapping of the file. Secrets are `SecretStr` and
may also be read from files (`*_file` keys), the way Kubernetes mounts Secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter import limits as service_limits
from exporter.errors import ConfigError
from exporter.model import GPU, ORG_KEYS, RESOURCES, Resource, is_resource
from exporter.periods import format_duration, parse_duration, parse_time
from exporter.shards import instance_id, shard_of
from exporter.yamlfile import Location, Positions, UniqueKeyLoader, read_yaml_positions

ENV_PREFIX = "CHARGEBACK_"
ENV_DELIMITER = "__"
# Where `requests` looks for a CA bundle, in its order (`Session.merge_environment_settings`).
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _duration(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 10m, 1h")
    if isinstance(value, int | float | str):
        return parse_duration(value)
    raise ValueError("expected a duration such as 90s, 10m, 1h")


Duration = Annotated[int, BeforeValidator(_duration)]


def _time_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    return parse_time(str(value))


OptionalTime = Annotated[int | None, BeforeValidator(_time_or_none)]


class Section(BaseModel):
    """Base for every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """The secret's value from the config value or its file (file wins when both are set)."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read secret file {file}: {exc.strerror}") from exc
    return value.get_secret_value() if value is not None else None


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


class ResourcesConfig(Section):
    """Resources charged besides cpu and memory."""

    gpu: GpuConfig = GpuConfig()
    storage: StorageConfig = StorageConfig()


class PeriodsConfig(Section):
    length: Duration = 3600
    settle_delay: Duration = 300
    start: OptionalTime = None
    resolution: Duration = 10
    grain: Literal["pod", "container"] = "pod"
    min_coverage: Decimal = Field(default=Decimal("0.95"), ge=0, le=1)
    incomplete_policy: Literal["hold", "publish-flagged"] = "hold"
    # Publish periods (and expected clusters) for which Sysdig shows no series at all as having
    # no usage. Off: such a period is held, since Sysdig answers "no series" just as well when
    # a metric was renamed, an agent stopped or the token's team sees nothing.
    publish_empty: bool = False

    @field_validator("length")
    @classmethod
    def _length(cls, v: int) -> int:
        if v not in (600, 3600, 86400):
            raise ValueError("must be one of 10m, 1h, 1d")
        return v

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        if v not in (10, 60, 600, 3600, 86400):
            raise ValueError("must be one of Sysdig's resolutions: 10s, 1m, 10m, 1h, 1d")
        return v

    @model_validator(mode="after")
    def _aligned(self) -> PeriodsConfig:
        if self.length % self.resolution:
            raise ValueError(
                f"length {format_duration(self.length)} is not a multiple of resolution "
                f"{format_duration(self.resolution)}"
            )
        if self.start is not None and self.start % self.length:
            raise ValueError(f"start must be aligned to the period length {format_duration(self.length)}")
        return self


class OrgKeyConfig(Section):
    """Where one org key's value comes from, in order; the first non-empty value wins.

    `aliases` are other spellings of the key's label, tried after the key's own names at each
    enabled level (docs/pricing.md). `allowed_values_file` is a CSV allow-list: a value not in
    it is charged to `__invalid__`.
    """

    workload_labels: tuple[str, ...] = ()
    namespace_labels: tuple[str, ...] = ()
    default: str | None = None
    allowed_values_file: Path | None = None
    aliases: tuple[str, ...] = ()
    allowed_values_column: str | None = None
    allowed_values_case_sensitive: bool = True

    @field_validator("workload_labels", "namespace_labels", "aliases")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not name.strip():
                raise ValueError("label names must not be empty")
        return v


def _default_org() -> dict[str, OrgKeyConfig]:
    return {k: OrgKeyConfig(workload_labels=(k,), namespace_labels=(k,)) for k in ORG_KEYS}


class OrgConfig(Section):
    keys: dict[str, OrgKeyConfig] = Field(default_factory=_default_org)
    other_labels: tuple[str, ...] = ()

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, OrgKeyConfig]) -> dict[str, OrgKeyConfig]:
        unknown = sorted(set(v) - set(ORG_KEYS))
        if unknown:
            raise ValueError(f"unknown org key(s) {unknown}; allowed: {list(ORG_KEYS)}")
        merged = _default_org()
        for key, kc in v.items():
            # A key given without label lists keeps the key's own name as its label, so that
            # setting only `aliases` or an allow-list does not silently disable the lookup.
            fill = {f: (key,) for f in ("workload_labels", "namespace_labels")
                    if f not in kc.model_fields_set}
            merged[key] = kc.model_copy(update=fill) if fill else kc
        return merged


CompatibilityLevel = Literal["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                             "FULL", "FULL_TRANSITIVE", "NONE"]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class SchemaRegistryConfig(Section):
    """`kafka.schema_registry`. `compatibility` is set on each subject before the exporter first
    registers a schema there (with `auto_register`); null leaves the subjects' levels alone."""

    url: str
    basic_auth_user_info: SecretStr | None = None
    basic_auth_user_info_file: Path | None = None
    ca_location: Path | None = None
    auto_register: bool = True
    compatibility: Annotated[CompatibilityLevel | None, BeforeValidator(_upper)] = "BACKWARD_TRANSITIVE"

    def resolved_user_info(self) -> str | None:
        return read_secret(
            self.basic_auth_user_info, self.basic_auth_user_info_file,
            "kafka.schema_registry.basic_auth_user_info",
        )


# Topic-level settings Apache Kafka knows (TopicConfig, 3.x and 4.x); any other name is a typo
# the broker would refuse at creation, or (some brokers) silently keep and ignore.
KAFKA_TOPIC_CONFIGS = frozenset({
    "cleanup.policy", "compression.type", "compression.gzip.level", "compression.lz4.level",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.downconversion.enable",
    "message.format.version", "message.timestamp.after.max.ms", "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms", "message.timestamp.type", "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms", "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
})
RETENTION_KEYS = ("retention.ms", "retention.bytes")
TopicRole = Literal["records", "manifests", "checkpoint"]
# What every topic is created with unless `kafka.topic_configs` says otherwise: nothing is ever
# deleted by age or size, so a consumer that is away for any time loses nothing. Manifests and
# checkpoints are compacted (the newest value per key is what counts).
DEFAULT_TOPIC_CONFIGS: dict[TopicRole, dict[str, str]] = {
    "records": {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
    "manifests": {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"},
    "checkpoint": {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"},
}


def _topic_value(value: Any) -> str:
    # Kafka takes every topic setting as a string; YAML gives numbers and booleans too.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str | float | Decimal):
        return str(value)
    raise ValueError("expected a string, number or boolean")


def _check_topic_setting(name: str, value: str) -> str:
    if name not in KAFKA_TOPIC_CONFIGS:
        raise ValueError(f"{name}: unknown topic config (see Kafka's topic-level configs)")
    if name in RETENTION_KEYS:
        try:
            number = int(value)
        except ValueError:
            number = -2
        if number < -1:
            raise ValueError(f"{name}: expected an integer, -1 for unlimited")
        return str(number)
    if name == "cleanup.policy":
        policies = [p.strip() for p in value.split(",")]
        if not set(policies) <= {"delete", "compact"}:
            raise ValueError(f"{name}: expected delete, compact or compact,delete")
        return ",".join(policies)
    return value


def _check_topic_settings(conf: dict[str, str]) -> dict[str, str]:
    return {name: _check_topic_setting(name, value) for name, value in conf.items()}


TopicSettings = Annotated[dict[str, Annotated[str, BeforeValidator(_topic_value)]],
                          AfterValidator(_check_topic_settings)]


def _default_topic_configs() -> dict[TopicRole, dict[str, str]]:
    return {role: dict(conf) for role, conf in DEFAULT_TOPIC_CONFIGS.items()}


def retention_limited(policy: str) -> bool:
    """Whether retention.ms/.bytes delete anything under this cleanup.policy."""
    return "delete" in policy


class TopicsConfig(Section):
    records: str = "chargeback.records.v1"
    manifests: str = "chargeback.manifests.v1"
    checkpoint: str = "chargeback.checkpoint.v1"


class KafkaConfig(Section):
    bootstrap_servers: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    transactional_id: str = "chargeback-exporter"
    topics: TopicsConfig = TopicsConfig()
    create_topics: bool = True
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=3, ge=1, le=10)
    # Per-role topic settings applied at creation, merged over DEFAULT_TOPIC_CONFIGS; after
    # validation every role has its full, effective settings (what check-config prints).
    topic_configs: dict[TopicRole, TopicSettings] = Field(default_factory=_default_topic_configs)
    framing: Literal["confluent", "single-object"] = "single-object"
    schema_registry: SchemaRegistryConfig | None = None
    transaction_timeout: Duration = 60
    connect_timeout: Duration = 30
    # librdkafka settings for the producer only (consumers and the admin client ignore them).
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("topic_configs", mode="before")
    @classmethod
    def _topic_configs(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        merged: dict[Any, Any] = {role: dict(conf) for role, conf in DEFAULT_TOPIC_CONFIGS.items()}
        for role, conf in v.items():
            if role not in merged or not isinstance(conf, Mapping):
                merged[role] = conf  # reported by the type check, with its path
                continue
            merged[role].update(conf)
        return merged

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConfig:
        if self.framing == "confluent" and self.schema_registry is None:
            raise ValueError("framing 'confluent' needs kafka.schema_registry.url")
        cp = self.topic_configs["checkpoint"]
        if "compact" not in cp["cleanup.policy"]:
            raise ValueError("topic_configs.checkpoint: the checkpoint topic must be compacted")
        if retention_limited(cp["cleanup.policy"]) and any(cp[k] != "-1" for k in RETENTION_KEYS):
            raise ValueError("topic_configs.checkpoint: retention.ms and retention.bytes must be -1 "
                             "when cleanup.policy includes delete (a deleted checkpoint restarts "
                             "the export elsewhere)")
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("security_protocol SASL_* needs sasl_mechanism")
        return self

    def resolved_sasl_password(self) -> str | None:
        return read_secret(self.sasl_password, self.sasl_password_file, "kafka.sasl_password")


class PricingConfig(Section):
    rate_card_file: Path | None = None


class SharedCostsConfig(Section):
    """Workloads whose cost is spread over the other allocations (exporter/shared_costs.py).

    A line is shared when its namespace is in `namespaces` or its org values and other labels
    match every pair of one of `selectors`. Off by default.
    """

    enabled: bool = False
    namespaces: tuple[str, ...] = ()
    selectors: tuple[dict[str, str], ...] = ()
    method: Literal["proportional"] = "proportional"

    @model_validator(mode="after")
    def _declared(self) -> SharedCostsConfig:
        if self.enabled and not (self.namespaces or self.selectors):
            raise ValueError("enabled needs at least one of namespaces or selectors")
        if any(not s for s in self.selectors):
            raise ValueError("selectors: a selector must have at least one label")
        return self


class IdleConfig(Section):
    """Idle capacity (docs/queries.md, "Idle capacity"): per cluster and resource, node
    allocatable minus the workloads' chargeable quantities, published as `__idle__` records.

    `metric` is the allocatable gauge (kube-state-metrics v2 naming, a `resource` label) and
    `resources` maps each exporter resource to that label's value, e.g. `cpu: cpu`,
    `memory: memory`; `check-sysdig` checks both on the tenant. Off by default.
    """

    enabled: bool = False
    metric: str = Field(default="kube_node_status_allocatable", pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    resources: dict[Resource, str] = Field(default_factory=lambda: dict[Resource, str](
        (r, r) for r in RESOURCES))

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[Resource, str]) -> dict[Resource, str]:
        if not v:
            raise ValueError("needs at least one resource")
        if any(not name.strip() for name in v.values()):
            raise ValueError("an allocatable resource name must not be empty")
        return {r: v[r] for r in RESOURCES if r in v}


class BillingConfig(Section):
    """How the billing platform invoices (docs/focus.md, "Corrections").

    `invoicing_period` is the FOCUS billing period: the UTC calendar `month` or `quarter` that
    contains a charge. A billing period is closed from its end on; a record revised after that
    is exported as a FOCUS correction in the billing period open when it was published.
    """

    invoicing_period: Literal["month", "quarter"] = "month"


class WebConfig(Section):
    listen_address: str = "0.0.0.0:9847"
    enabled: bool = True


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class WorkerConfig(Section):
    max_batch_periods: int = Field(default=24, ge=1, le=10000)
    shutdown_grace: Duration = 10


class BackfillConfig(Section):
    """`chargeback-exporter backfill` (docs/backfill.md).

    `transactional_id` is the backfill's own Kafka transactional id and checkpoint key; empty
    means `<kafka.transactional_id>-backfill`. `period_timeout` bounds the time spent retrying
    one period's Sysdig queries (throttling included).
    """

    max_age: Duration = 34 * 86400
    max_concurrency: int = Field(default=2, ge=1, le=16)
    allow_coarse: bool = False
    transactional_id: str | None = None
    period_timeout: Duration = 1800

    @field_validator("transactional_id")
    @classmethod
    def _txid(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None
        return v

    @field_validator("period_timeout")
    @classmethod
    def _period_timeout(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1s")
        return v


# A shard's name is part of its transactional id and, in the Helm chart, of its Deployment's
# name: a DNS label keeps it valid in both.
_SHARD_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")


class ShardConfig(Section):
    """`shard`: the part of the fleet this replica exports (docs/deploy.md, "Sharding").

    Unset: the whole fleet (or `sysdig.clusters`). A shard owns either `clusters` (an explicit
    list) or, with `index` and `count`, every cluster whose name hashes to `index`
    (`exporter.shards.shard_of`). `name` is required with either: the shard's Kafka
    transactional id and checkpoint key are `<kafka.transactional_id>-shard-<name>`.
    """

    name: str | None = None
    clusters: tuple[str, ...] = ()
    index: int | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _SHARD_NAME.fullmatch(v):
            raise ValueError("must be 1 to 40 lower-case letters, digits and '-', starting and "
                             "ending with a letter or digit")
        return v

    @field_validator("clusters")
    @classmethod
    def _clusters(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not c for c in v):
            raise ValueError("cluster names must not be empty")
        twice = sorted({c for c in v if v.count(c) > 1})
        if twice:
            raise ValueError(f"listed more than once: {', '.join(twice)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ShardConfig:
        hashed = self.index is not None or self.count is not None
        listed = bool(self.clusters)
        if self.name is None:
            if hashed or listed:
                raise ValueError("name is required with clusters or index and count (it names "
                                 "the shard's transactional id and checkpoint)")
            return self
        if hashed and listed:
            raise ValueError("give either clusters (an explicit list) or index and count (a "
                             "hash of the cluster name), not both")
        if not (hashed or listed):
            raise ValueError(f"shard {self.name} needs clusters, or index and count")
        if hashed:
            if self.index is None or self.count is None:
                raise ValueError("index and count go together")
            if self.index >= self.count:
                raise ValueError(f"index {self.index} must be below count {self.count} (shards "
                                 "are numbered from 0)")
        return self

    @property
    def sharded(self) -> bool:
        return self.name is not None

    @property
    def hashed(self) -> bool:
        return self.count is not None

    def owns(self, cluster: str) -> bool:
        """Whether this shard exports `cluster` (always, unsharded)."""
        if self.count is not None and self.index is not None:
            return shard_of(cluster, self.count) == self.index
        return not self.clusters or cluster in self.clusters

    def describe(self) -> str:
        """`shard a (clusters x, y)`, `shard a (hash 0 of 2)`, or `unsharded`."""
        if self.name is None:
            return "unsharded"
        if self.hashed:
            return f"shard {self.name} (hash {self.index} of {self.count})"
        return f"shard {self.name} (clusters {', '.join(self.clusters)})"


class Config(Section):
    """The whole configuration. Build it with `load_config`."""

    sysdig: SysdigConfig = SysdigConfig()
    periods: PeriodsConfig = PeriodsConfig()
    resources: ResourcesConfig = ResourcesConfig()
    org: OrgConfig = OrgConfig()
    kafka: KafkaConfig = KafkaConfig()
    pricing: PricingConfig = PricingConfig()
    shared_costs: SharedCostsConfig = SharedCostsConfig()
    idle: IdleConfig = IdleConfig()
    billing: BillingConfig = BillingConfig()
    web: WebConfig = WebConfig()
    logging: LoggingConfig = LoggingConfig()
    worker: WorkerConfig = WorkerConfig()
    backfill: BackfillConfig = BackfillConfig()
    shard: ShardConfig = ShardConfig()

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: ShardConfig, info: ValidationInfo) -> ShardConfig:
        sysdig = info.data.get("sysdig")
        if sysdig is None or not sysdig.clusters:
            return v
        if v.clusters:
            extra = [c for c in v.clusters if c not in sysdig.clusters]
            if extra:
                raise ValueError(f"clusters {', '.join(extra)} not in sysdig.clusters (a shard "
                                 "owns part of the configured clusters)")
        elif v.hashed and not any(v.owns(c) for c in sysdig.clusters):
            raise ValueError(f"none of sysdig.clusters ({', '.join(sysdig.clusters)}) hash to "
                             f"index {v.index} of count {v.count}: use fewer shards or list "
                             "each shard's clusters")
        return v

    @property
    def instance_id(self) -> str:
        """This replica's Kafka transactional id and checkpoint key: `kafka.transactional_id`,
        with `-shard-<shard.name>` when sharded (`exporter.shards.instance_id`)."""
        return instance_id(self.kafka.transactional_id, self.shard.name)

    @property
    def clusters(self) -> tuple[str, ...]:
        """The clusters this replica queries and expects in every period: `shard.clusters`;
        with hash sharding, those of `sysdig.clusters` that hash to the shard; else
        `sysdig.clusters`. Empty: the whole fleet, or with `discovers_clusters` the shard's
        clusters found in each period."""
        if self.shard.clusters:
            return self.shard.clusters
        return tuple(c for c in self.sysdig.clusters if self.shard.owns(c))

    @property
    def discovers_clusters(self) -> bool:
        """Hash sharding without `sysdig.clusters`: the shard's clusters are those of the
        clusters Sysdig shows in a period that hash to it."""
        return self.shard.hashed and not self.sysdig.clusters


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"environment: {'.'.join(path)} overrides a non-mapping value")
        node = nxt
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG_FILE":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_DELIMITER)]
        if not all(path):
            raise ConfigError(f"environment: malformed variable name {name}")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list) is False and value is not None and not isinstance(
            value, bool | int | float
        ):
            value = raw
        _set_path(tree, path, value)
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _key_text(part: object) -> str:
    text = str(part)
    # A key can be any YAML string; escape it so the error stays one line.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _validation_problems(exc: ValidationError) -> list[tuple[Location, str]]:
    """Each problem's key path and message (`unknown key` for an unknown key)."""
    problems: list[tuple[Location, str]] = []
    for err in exc.errors():
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append((err["loc"], msg.removeprefix("Value error, ")))
    return problems


def _key_path(loc: Location) -> str:
    return ".".join(_key_text(p) for p in loc) or "(root)"


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """Every problem in one line: `origin: path.to.key: message; path.to.other: message`."""
    return f"{origin}: " + "; ".join(f"{_key_path(loc)}: {msg}"
                                     for loc, msg in _validation_problems(exc))


def _set_in(tree: Mapping[str, Any], loc: Location) -> bool:
    """True when `tree` (environment or flags) sets the value at `loc` or one around it."""
    node: Any = tree
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
        if not isinstance(node, Mapping):
            return True
    return True


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from a YAML file, the environment and overrides.

    Raises `ConfigError` with one line naming the file and the key path of every problem; its
    `problems` are the same one by one, each with the line and column of the key in the file
    when the file gave the value.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin = "configuration"
    positions = Positions(None)
    if path is not None:
        origin = str(path)
        loaded, positions = read_yaml_positions(path, "config file", ConfigError, UniqueKeyLoader)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    env_tree = _env_overrides(env)
    if env_tree:
        data = _merge(data, env_tree)
        origin += " + environment"
    if overrides:
        data = _merge(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{origin}: "
            f"{'' if _set_in(env_tree, loc) or _set_in(overrides or {}, loc) else positions.at(loc)}"
            f"{_key_path(loc)}: {msg}"
            for loc, msg in _validation_problems(exc)
        ]
        raise ConfigError(format_validation_error(exc, origin), problems) from None


def masked_dict(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by `**********`."""
    dumped: dict[str, Any] = config.model_dump(mode="json")
    return dumped
