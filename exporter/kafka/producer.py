"""Kafka adapters: the transactional period sink, the checkpoint store, topic admin, readers.

Exactly-once, as a `read_committed` consumer sees it, rests on three things:
- every period's records, manifests and checkpoint are produced in ONE transaction;
- the checkpoint is read back with `read_committed` on start, so the next period is the one
  after the last committed one;
- a stable `transactional.id`: `init_transactions` of a restarted instance aborts whatever its
  predecessor left open and fences it, so a zombie can never commit a duplicate.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from exporter.clock import Clock
from exporter.config import RETENTION_KEYS, KafkaConfig, retention_limited
from exporter.errors import (
    CommitUncertain,
    ConfigError,
    FencedError,
    SinkError,
    SinkUnavailable,
    TopicMissing,
)
from exporter.retry import call_with_retries
from exporter.sink import BATCH_HEADER, CheckpointState, OutMessage

log = logging.getLogger("exporter.kafka")
T = TypeVar("T")

_MIN_ATTEMPT_SECONDS = 1.0  # the shortest wait for the broker worth an attempt
# How long closing waits for the abort of a transaction still open (a stop past the shutdown
# grace): the coordinator aborts it anyway, at the successor's init_transactions or after
# transaction.timeout.ms, and nothing of it is visible to read_committed meanwhile.
_CLOSE_ABORT_SECONDS = 2.0

_FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.TRANSACTION_COORDINATOR_FENCED}


def client_config(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings shared by producer, consumer and admin: brokers and security."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "security.protocol": cfg.security_protocol,
        # librdkafka's own log lines go through our JSON logs (and their secret scrubbing).
        "logger": logging.getLogger("exporter.librdkafka"),
    }
    if cfg.sasl_mechanism:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
    if cfg.sasl_username:
        conf["sasl.username"] = cfg.sasl_username
    password = cfg.resolved_sasl_password()
    if password:
        conf["sasl.password"] = password
    if cfg.ssl_ca_location:
        conf["ssl.ca.location"] = str(cfg.ssl_ca_location)
    if cfg.ssl_certificate_location:
        conf["ssl.certificate.location"] = str(cfg.ssl_certificate_location)
    if cfg.ssl_key_location:
        conf["ssl.key.location"] = str(cfg.ssl_key_location)
    if cfg.ssl_key_password:
        conf["ssl.key.password"] = cfg.ssl_key_password.get_secret_value()
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        # Verification of the broker's certificate and hostname is on; it can't be configured off here.
        conf["enable.ssl.certificate.verification"] = True
        conf["ssl.endpoint.identification.algorithm"] = "https"
    return conf


def _construct(factory: Callable[[dict[str, Any]], T], conf: dict[str, Any]) -> T:
    """Build a librdkafka client; a setting it rejects is a configuration error, not a crash."""
    try:
        return factory(conf)
    except KafkaException as exc:
        err = _error_of(exc)
        text = err.str() if err is not None else str(exc)
        raise ConfigError(f"kafka.extra or kafka settings rejected by librdkafka: {text}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"kafka.extra or kafka settings rejected by librdkafka: {exc}") from None


def _describe(err: KafkaError | None) -> str:
    if err is None:
        return "unknown error"
    return f"{err.name()}: {err.str()}"


def _error_of(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _is_fenced(err: KafkaError | None) -> bool:
    return err is not None and err.code() in _FENCED_CODES


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
        self._admin = _construct(AdminClient, client_config(cfg))

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
                f"Kafka {self._cfg.bootstrap_servers}: unreachable: {_describe(_error_of(exc))}"
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
                    err = _error_of(exc)
                    if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue
                    raise SinkError(f"Kafka: cannot create topic {name}: {_describe(err)}") from None
        self._verify([n for n in specs if n not in missing])

    def _verify(self, names: Sequence[str]) -> None:
        if not names:
            return
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
        try:
            described = self._admin.describe_configs(resources, request_timeout=self._timeout)
        except KafkaException as exc:  # pragma: no cover - broker specific
            raise SinkUnavailable(f"Kafka: describe_configs failed: {_describe(_error_of(exc))}") from None
        for res, fut in described.items():
            wanted = self.specs()[res.name][1]
            try:
                entries = {k: str(e.value) for k, e in fut.result().items() if e.value is not None}
            except KafkaException as exc:
                # Not every broker serves DescribeConfigs, and it needs its own ACL.
                self._unreported(res.name, wanted, _describe(_error_of(exc)))
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


class KafkaPeriodSink:
    """`PeriodSink` over a transactional confluent-kafka producer."""

    def __init__(self, cfg: KafkaConfig, clock: Clock, *, attempts: int = 5,
                 admin: TopicAdmin | None = None,
                 on_abort: Callable[[str], None] | None = None,
                 on_delivery_error: Callable[[], None] | None = None,
                 on_retention: Callable[[str, str, bool], None] | None = None) -> None:
        self._cfg = cfg
        self._clock = clock
        self._attempts = attempts
        self._admin = admin or TopicAdmin(cfg, timeout=float(cfg.connect_timeout),
                                          on_retention=on_retention)
        self._producer: Producer | None = None
        self._needs_init = False
        self._closed = False
        self._on_abort = on_abort
        self._on_delivery_error = on_delivery_error

    def _config(self) -> dict[str, Any]:
        conf = client_config(self._cfg)
        conf.update({
            "enable.idempotence": True,
            "acks": "all",
            "transactional.id": self._cfg.transactional_id,
            "transaction.timeout.ms": self._cfg.transaction_timeout * 1000,
            "linger.ms": 5,
            "compression.type": "zstd",
            "message.timeout.ms": self._cfg.transaction_timeout * 1000,
        })
        conf.update(self._cfg.extra)
        return conf

    def start(self) -> None:
        """Check the topics, then register the producer. Each step waits for the broker at most
        `kafka.connect_timeout` in all, its retries included; then its last error is raised."""
        self._closed = False
        self._within_connect_timeout(self._admin.ensure, "kafka topics")
        self._within_connect_timeout(self._init_producer, "kafka init_transactions")
        log.info("kafka producer ready", extra={"transactional_id": self._cfg.transactional_id})

    def _within_connect_timeout(self, step: Callable[[float], None], what: str) -> None:
        budget = float(self._cfg.connect_timeout)
        # A network wait, bounded in wall time (monotonic) whatever clock the caller injected;
        # each attempt gets what is left of the budget, so the last one ends with it.
        deadline = time.monotonic() + budget
        call_with_retries(lambda: step(max(_MIN_ATTEMPT_SECONDS, deadline - time.monotonic())),
                          clock=self._clock, attempts=self._attempts, max_delay=budget, what=what)

    def _init_producer(self, timeout: float | None = None) -> None:
        """A new producer, registered with the transaction coordinator.

        `init_transactions` fences any earlier producer with this transactional.id and lets the
        coordinator finish whatever transaction that one left in doubt (commit or abort).
        """
        producer = _construct(Producer, self._config())
        try:
            producer.init_transactions(self._cfg.connect_timeout if timeout is None else timeout)
        except KafkaException as exc:
            err = _error_of(exc)
            if _is_fenced(err):
                raise FencedError(f"Kafka: fenced at start: {_describe(err)}") from None
            if err is not None and err.retriable():
                raise SinkUnavailable(
                    f"Kafka {self._cfg.bootstrap_servers}: init_transactions: {_describe(err)}"
                ) from None
            raise SinkError(f"Kafka: init_transactions failed: {_describe(err)}") from None
        self._producer = producer
        self._needs_init = False

    def recover(self) -> None:
        """Resolve a transaction left in doubt: a new producer, so the coordinator settles it.

        Call after `CommitUncertain`, before reading the checkpoint to learn the outcome.
        Blocking; raises `SinkUnavailable` while the broker is unreachable. No-op otherwise.
        """
        if self._needs_init:
            self._init_producer()

    def _discard(self) -> None:
        # A producer whose transaction state is unknown can be neither aborted nor reused.
        self._producer = None
        self._needs_init = True

    def _produce(self, m: OutMessage) -> None:
        assert self._producer is not None
        while True:
            try:
                # No per-message callback: once fenced, librdkafka invokes callbacks with a Python
                # error already set, which can deadlock; commit_transaction reports failed delivery.
                self._producer.produce(m.topic, value=m.value, key=m.key, headers=list(m.headers))
                return
            except BufferError:
                # The local queue is full: serve delivery reports, which frees room.
                self._producer.poll(0.1)

    def publish(self, messages: Sequence[OutMessage], checkpoint: OutMessage) -> None:
        if self._closed:
            raise SinkError("Kafka sink used after close()")
        if self._needs_init:
            self._init_producer()
        if self._producer is None:
            raise SinkError("Kafka sink used before start()")
        producer = self._producer
        committing = False
        try:
            producer.begin_transaction()
            for m in messages:
                self._produce(m)
            self._produce(checkpoint)
            committing = True
            self._commit(producer)
        except KafkaException as exc:
            err = _error_of(exc)
            if _is_fenced(err) or (err is not None and err.fatal()):
                self._safe_abort("fenced" if _is_fenced(err) else "fatal")
                if _is_fenced(err):
                    raise FencedError(
                        f"Kafka: another instance with transactional.id {self._cfg.transactional_id} "
                        f"took over ({_describe(err)}); stopping"
                    ) from None
                raise SinkError(f"Kafka: fatal producer error: {_describe(err)}") from None
            if self._on_delivery_error is not None:
                self._on_delivery_error()
            if committing and err is not None and not err.txn_requires_abort():
                # EndTxn may or may not have reached the coordinator: the outcome is unknown.
                self._discard()
                raise CommitUncertain(
                    f"Kafka: commit outcome unknown ({_describe(err)}); the transaction is settled "
                    "when the producer is re-created"
                ) from None
            self._safe_abort(_describe(err))
            raise SinkUnavailable(f"Kafka: transaction aborted: {_describe(err)}") from None
        except BaseException:
            self._safe_abort("interrupted")
            raise

    def _commit(self, producer: Producer) -> None:
        # A network wait bounded in wall time (monotonic), whatever clock the caller injected.
        deadline = time.monotonic() + self._cfg.transaction_timeout
        while True:
            try:
                producer.commit_transaction(self._cfg.transaction_timeout)
                return
            except KafkaException as exc:
                err = _error_of(exc)
                if err is not None and err.retriable() and not err.txn_requires_abort() \
                        and time.monotonic() < deadline:
                    continue
                raise

    def _safe_abort(self, reason: str, timeout: float | None = None) -> None:
        if self._producer is None:
            return
        try:
            self._producer.abort_transaction(self._cfg.transaction_timeout if timeout is None else timeout)
            log.warning("transaction aborted", extra={"reason": reason})
            if self._on_abort is not None:
                self._on_abort(reason)
        except KafkaException as exc:
            err = _error_of(exc)
            if err is not None and err.code() == KafkaError._STATE:
                return  # no transaction open: nothing to abort
            # Fenced, or the broker is unreachable: nothing of the batch is visible, but this
            # producer's state is unknown; the next publish starts with a new one.
            self._discard()

    def close(self) -> None:
        if self._producer is not None:
            self._safe_abort("close", min(float(self._cfg.transaction_timeout), _CLOSE_ABORT_SECONDS))
        if self._producer is not None:
            self._producer.flush(1)
        self._producer = None
        # Closed is final until `start`: a commit left in doubt must not re-create the producer.
        self._needs_init = False
        self._closed = True


def consumer_config(cfg: KafkaConfig, group: str | None = None) -> dict[str, Any]:
    conf = client_config(cfg)
    conf.update({
        "group.id": group or f"chargeback-reader-{uuid.uuid4().hex[:12]}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "receive.message.max.bytes": 400_000_000,
    })
    return conf


@dataclass(frozen=True, slots=True)
class ReadMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes]


def read_topic(cfg: KafkaConfig, topic: str, timeout: float = 30.0,
               clock: Clock | None = None) -> Iterator[ReadMessage]:
    """Read every committed message of `topic` from the beginning to its current end.

    Uses `read_committed`, assigns all partitions explicitly (no group coordination), and stops
    when every partition has reached the offsets its end had when reading started.
    """
    consumer = _construct(Consumer, consumer_config(cfg))
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise SinkUnavailable(f"Kafka {cfg.bootstrap_servers}: {_describe(_error_of(exc))}") from None
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise TopicMissing(f"Kafka: topic {topic} does not exist")
        ends: dict[int, int] = {}
        for p in tmeta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                                       cached=False)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        done: set[int] = set()
        idle = 0
        while len(done) < len(ends):
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                if idle > timeout:
                    raise SinkUnavailable(f"Kafka: reading {topic} stalled")
                continue
            idle = 0
            part = msg.partition() or 0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    done.add(part)
                    continue
                raise SinkUnavailable(f"Kafka: reading {topic}: {_describe(error)}")
            offset = msg.offset() or 0
            if offset >= ends[part] - 1:
                done.add(part)
            if offset >= ends[part]:
                continue
            headers: dict[str, bytes] = {}
            for item in msg.headers() or []:
                hk, hv = item[0], item[1]
                headers[str(hk)] = hv if isinstance(hv, bytes) else str(hv or "").encode()
            key = msg.key()
            value = msg.value()
            yield ReadMessage(topic, part, offset,
                              key.encode() if isinstance(key, str) else key,
                              value.encode() if isinstance(value, str) else value, headers)
    finally:
        consumer.close()


class KafkaCheckpointStore:
    """Reads an instance's checkpoint back from the compacted checkpoint topic."""

    def __init__(self, cfg: KafkaConfig, decode: Callable[[bytes], CheckpointState],
                 clock: Clock) -> None:
        self._cfg = cfg
        self._decode = decode
        self._clock = clock

    def read(self) -> CheckpointState | None:
        key = self._cfg.transactional_id.encode()

        def once() -> CheckpointState | None:
            last: CheckpointState | None = None
            for m in read_topic(self._cfg, self._cfg.topics.checkpoint):
                if m.key == key and m.value is not None:
                    last = dataclasses.replace(self._decode(m.value),
                                               batch=m.headers.get(BATCH_HEADER))
            return last

        return call_with_retries(once, clock=self._clock, attempts=5, max_delay=120,
                                 what="kafka checkpoint")
