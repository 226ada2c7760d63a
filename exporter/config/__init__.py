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
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# The sections of Sysdig and Kafka live in submodules; everything is imported from here.
from exporter.config.fields import (
    Duration,
    OptionalTime,
    Section,
    read_secret,
)
from exporter.config.kafka import (
    DEFAULT_TOPIC_CONFIGS,
    KAFKA_TOPIC_CONFIGS,
    RETENTION_KEYS,
    CompatibilityLevel,
    KafkaConfig,
    SchemaRegistryConfig,
    TopicRole,
    TopicsConfig,
    retention_limited,
)
from exporter.config.sysdig import (
    CA_BUNDLE_VARIABLES,
    GpuConfig,
    ResourcesConfig,
    StorageConfig,
    SysdigConfig,
    SysdigLimitsConfig,
)
from exporter.errors import ConfigError
from exporter.model import ORG_KEYS, RESOURCES, Resource, resource_order
from exporter.periods import format_duration
from exporter.shards import instance_id, shard_of
from exporter.yamlfile import Location, Positions, UniqueKeyLoader, read_yaml_positions

__all__ = [
    "CA_BUNDLE_VARIABLES", "DEFAULT_TOPIC_CONFIGS", "ENV_DELIMITER", "ENV_PREFIX",
    "KAFKA_TOPIC_CONFIGS", "RETENTION_KEYS", "BackfillConfig", "BillingConfig",
    "CompatibilityLevel", "Config", "Duration", "GpuConfig", "IdleConfig", "KafkaConfig",
    "LoggingConfig", "OptionalTime", "OrgConfig", "OrgKeyConfig", "PeriodsConfig", "PricingConfig",
    "ResourcesConfig", "SchemaRegistryConfig", "Section", "ShardConfig", "SharedCostsConfig",
    "StorageConfig", "SysdigConfig", "SysdigLimitsConfig", "TopicRole", "TopicsConfig",
    "WebConfig", "WorkerConfig", "format_validation_error", "load_config", "masked_dict",
    "read_secret", "retention_limited",
]

ENV_PREFIX = "CHARGEBACK_"
ENV_DELIMITER = "__"


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
        # cpu and memory first, then GPUs by name: whether each is charged is checked with the
        # resources section (`Config._idle`).
        return {r: v[r] for r in sorted(v, key=resource_order)}


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

    @field_validator("idle")
    @classmethod
    def _idle(cls, v: IdleConfig, info: ValidationInfo) -> IdleConfig:
        """Idle is measured for resources the exporter charges and nodes offer: cpu, memory and
        the GPU resources `resources.gpu.resources` produces (claims have no node allocatable)."""
        resources = info.data.get("resources")
        if resources is None:
            return v
        gpu = resources.gpu
        offered = [*RESOURCES, *sorted(set(gpu.resources.values()), key=resource_order)] \
            if gpu.enabled else list(RESOURCES)
        for r in v.resources:
            if r not in offered:
                why = ("resources.gpu.resources names the GPU ones" if gpu.enabled
                       else "resources.gpu is disabled")
                raise ValueError(f"resources: {r} is not a resource charged from node "
                                 f"allocatable ({', '.join(offered)}; {why})")
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
