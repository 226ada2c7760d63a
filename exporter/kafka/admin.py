"""Topic admin: creates the exporter's topics, or checks the ones that exist."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from exporter.config import RETENTION_KEYS, KafkaConfig, retention_limited
from exporter.errors import SinkError, SinkUnavailable, TopicMissing
from exporter.kafka.client import client_config, construct, describe, error_of

log = logging.getLogger("exporter.kafka")


class TopicAdmin:
    """Creates or verifies the exporter's topics.

    Every topic is created with its full `kafka.topic_configs` (unlimited retention unless
    configured). An existing topic is checked: manifests and checkpoint must be compacted (else
    `SinkError`), and a retention shorter than configured, where its cleanup.policy deletes, is
    reported in one warning per topic and through `on_retention(topic, setting, short)`.
    """

    def __init__(self, cfg: KafkaConfig, timeout: float = 15.0,
                 on_retention: Callable[[str, str, bool], None] | None = None) -> None:
        self._cfg = cfg
        self._timeout = timeout
        self._on_retention = on_retention
        self._admin = construct(AdminClient, client_config(cfg))

    def specs(self) -> dict[str, tuple[int, dict[str, str]]]:
        """topic -> (partitions, config), the config as `kafka.topic_configs` has it."""
        t = self._cfg.topics
        conf = self._cfg.topic_configs
        return {
            t.records: (self._cfg.partitions, dict(conf["records"])),
            t.manifests: (self._cfg.partitions, dict(conf["manifests"])),
            t.checkpoint: (1, dict(conf["checkpoint"])),
        }

    def ensure(self, timeout: float | None = None) -> None:
        """Create missing topics (if allowed) and check existing ones. Raises SinkError.

        `timeout` bounds the wait for the broker's metadata (default: the admin's timeout)."""
        try:
            meta = self._admin.list_topics(timeout=self._timeout if timeout is None else timeout)
        except KafkaException as exc:
            raise SinkUnavailable(
                f"Kafka {self._cfg.bootstrap_servers}: unreachable: {describe(error_of(exc))}"
            ) from None
        existing = set(meta.topics)
        specs = self.specs()
        missing = [name for name in specs if name not in existing]
        if missing and not self._cfg.create_topics:
            raise TopicMissing(
                f"Kafka {self._cfg.bootstrap_servers}: topic(s) {', '.join(missing)} do not exist "
                "and kafka.create_topics is false"
            )
        if missing:
            new = [
                NewTopic(name, num_partitions=parts, replication_factor=self._cfg.replication_factor,
                         config=conf)
                for name, (parts, conf) in specs.items() if name in missing
            ]
            for name, fut in self._admin.create_topics(new, request_timeout=self._timeout).items():
                try:
                    fut.result()
                    conf = specs[name][1]
                    log.info("topic created", extra={
                        "topic": name, "cleanup_policy": conf.get("cleanup.policy"),
                        "retention_ms": conf.get("retention.ms"),
                        "retention_bytes": conf.get("retention.bytes")})
                except KafkaException as exc:
                    err = error_of(exc)
                    if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue
                    raise SinkError(f"Kafka: cannot create topic {name}: {describe(err)}") from None
        self._verify([n for n in specs if n not in missing])

    def _verify(self, names: Sequence[str]) -> None:
        if not names:
            return
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
        try:
            described = self._admin.describe_configs(resources, request_timeout=self._timeout)
        except KafkaException as exc:  # pragma: no cover - broker specific
            raise SinkUnavailable(f"Kafka: describe_configs failed: {describe(error_of(exc))}") from None
        for res, fut in described.items():
            wanted = self.specs()[res.name][1]
            try:
                entries = {k: str(e.value) for k, e in fut.result().items() if e.value is not None}
            except KafkaException as exc:
                # Not every broker serves DescribeConfigs, and it needs its own ACL.
                self._unreported(res.name, wanted, describe(error_of(exc)))
                continue
            policy = entries.get("cleanup.policy")
            if policy is not None and "compact" in wanted["cleanup.policy"] and "compact" not in policy:
                raise SinkError(
                    f"Kafka: topic {res.name} has cleanup.policy={policy}, expected compact"
                )
            self._check_retention(res.name, wanted, entries)

    def _unreported(self, topic: str, wanted: Mapping[str, str], reason: str) -> None:
        log.warning("topic retention not reported by the broker", extra={
            "topic": topic, "reason": reason, "configured_retention_ms": wanted.get("retention.ms"),
            "configured_retention_bytes": wanted.get("retention.bytes")})

    def _check_retention(self, topic: str, wanted: Mapping[str, str],
                         actual: Mapping[str, str]) -> None:
        if any(key not in actual for key in RETENTION_KEYS):
            self._unreported(topic, wanted, "no retention.ms or retention.bytes in DescribeConfigs")
            return
        # Kafka's default policy is delete; under compact alone retention deletes nothing.
        deletes = retention_limited(actual.get("cleanup.policy", "delete"))
        short = {key: deletes and _shorter(actual[key], wanted.get(key, "-1"))
                 for key in RETENTION_KEYS}
        if self._on_retention is not None:
            for key, is_short in short.items():
                self._on_retention(topic, key, is_short)
        if any(short.values()):
            extra: dict[str, Any] = {"topic": topic,
                                     "cleanup_policy": actual.get("cleanup.policy", "delete")}
            for key in (k for k, is_short in short.items() if is_short):
                field = key.replace(".", "_")
                extra[field] = actual[key]
                extra[f"configured_{field}"] = wanted.get(key, "-1")
            log.warning("topic retention shorter than configured", extra=extra)


def _shorter(actual: str, configured: str) -> bool:
    """Whether a retention.ms/.bytes value keeps less than the configured one (-1: unlimited)."""
    try:
        have, want = int(actual), int(configured)
    except ValueError:
        return False
    if have < 0:
        return False
    return want < 0 or have < want
