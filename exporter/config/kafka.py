"""The `kafka` section: brokers, topics and their settings, the schema registry."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from exporter.config.fields import Duration, Section, read_secret

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
