"""The transactional period sink: a period's messages and checkpoint in one transaction.

Exactly-once, as a `read_committed` consumer sees it, rests on three things:
- every period's records, manifests and checkpoint are produced in ONE transaction;
- the checkpoint is read back with `read_committed` on start, so the next period is the one
  after the last committed one;
- a stable `transactional.id`: `init_transactions` of a restarted instance aborts whatever its
  predecessor left open and fences it, so a zombie can never commit a duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from exporter.clock import Clock
from exporter.config import KafkaConfig
from exporter.errors import CommitUncertain, FencedError, SinkError, SinkUnavailable
from exporter.kafka.admin import TopicAdmin
from exporter.kafka.client import client_config, construct, describe, error_of
from exporter.retry import call_with_retries
from exporter.sink import Batch, OutMessage, generated, partition_for

log = logging.getLogger("exporter.kafka")

_MIN_ATTEMPT_SECONDS = 1.0  # the shortest wait for the broker worth an attempt
# How long closing waits for the abort of a transaction still open (a stop past the shutdown
# grace): the coordinator aborts it anyway, at the successor's init_transactions or after
# transaction.timeout.ms, and nothing of it is visible to read_committed meanwhile.
_CLOSE_ABORT_SECONDS = 2.0

_FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.TRANSACTION_COORDINATOR_FENCED}


def _is_fenced(err: KafkaError | None) -> bool:
    return err is not None and err.code() in _FENCED_CODES


def _cause(producer: Producer, err: KafkaError | None) -> KafkaError | None:
    """The error behind `err`. A produce call on a producer that has become fatal (fenced while
    a period's chunks were being built) only says `_FATAL`; the transactional API then raises the
    fatal error itself, fencing included, which is what decides between stopping and retrying."""
    if err is None or err.code() != KafkaError._FATAL:
        return err
    try:
        producer.abort_transaction(_CLOSE_ABORT_SECONDS)
    except KafkaException as exc:
        cause = error_of(exc)
        if cause is not None and (cause.fatal() or _is_fenced(cause)):
            return cause
    return err


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
        self._partitions: dict[str, int] = {}  # topic -> partition count, read at start

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
        # Records are partitioned by workload (`OutMessage.partition_key`), which needs the count.
        self._partitions.clear()
        self._within_connect_timeout(lambda t: self._partition_count(self._cfg.topics.records, t),
                                     "kafka topic metadata")
        log.info("kafka producer ready", extra={"transactional_id": self._cfg.transactional_id})

    def _within_connect_timeout(self, step: Callable[[float], object], what: str) -> None:
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
        producer = construct(Producer, self._config())
        try:
            producer.init_transactions(self._cfg.connect_timeout if timeout is None else timeout)
        except KafkaException as exc:
            err = error_of(exc)
            if _is_fenced(err):
                raise FencedError(f"Kafka: fenced at start: {describe(err)}") from None
            if err is not None and err.retriable():
                raise SinkUnavailable(
                    f"Kafka {self._cfg.bootstrap_servers}: init_transactions: {describe(err)}"
                ) from None
            raise SinkError(f"Kafka: init_transactions failed: {describe(err)}") from None
        self._producer = producer
        self._needs_init = False

    def _partition_count(self, topic: str, timeout: float | None = None) -> int:
        """The number of partitions of `topic`, read once from the producer's metadata.

        Raises `SinkUnavailable` while the broker does not report it.
        """
        count = self._partitions.get(topic)
        if count is not None:
            return count
        assert self._producer is not None
        wait = float(self._cfg.connect_timeout) if timeout is None else timeout
        try:
            meta = self._producer.list_topics(topic, timeout=wait).topics.get(topic)
        except KafkaException as exc:
            raise SinkUnavailable(f"Kafka: metadata of topic {topic}: {describe(error_of(exc))}") from None
        if meta is None or meta.error is not None or not meta.partitions:
            why = describe(meta.error) if meta is not None and meta.error is not None else "no partitions"
            raise SinkUnavailable(f"Kafka: metadata of topic {topic}: {why}")
        count = self._partitions[topic] = len(meta.partitions)
        return count

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
                if m.partition_key is None:
                    self._producer.produce(m.topic, value=m.value, key=m.key,
                                           headers=list(m.headers))
                else:
                    partition = partition_for(m.partition_key, self._partition_count(m.topic))
                    self._producer.produce(m.topic, value=m.value, key=m.key,
                                           headers=list(m.headers), partition=partition)
                return
            except BufferError:
                # The local queue is full: serve delivery reports, which frees room.
                self._producer.poll(0.1)

    def publish(self, batch: Batch) -> None:
        if self._closed:
            raise SinkError("Kafka sink used after close()")
        if self._needs_init:
            self._init_producer()
        if self._producer is None:
            raise SinkError("Kafka sink used before start()")
        producer = self._producer
        committing = False
        began = False
        try:
            # Produced as generated: librdkafka sends them while the next chunk is computed,
            # and the transaction stays open (invisible to read_committed) until the commit.
            with generated(batch) as messages:
                for m in messages:
                    if not began:
                        producer.begin_transaction()
                        began = True
                    self._produce(m)
            checkpoint = batch.checkpoint()
            if checkpoint is None:
                if began:
                    raise SinkError("Kafka: a batch produced messages but no checkpoint; aborted")
                return
            if not began:
                producer.begin_transaction()
            self._produce(checkpoint)
            committing = True
            self._commit(producer)
        except KafkaException as exc:
            err = _cause(producer, error_of(exc))
            if _is_fenced(err) or (err is not None and (err.fatal() or err.code() == KafkaError._FATAL)):
                self._safe_abort("fenced" if _is_fenced(err) else "fatal")
                if _is_fenced(err):
                    raise FencedError(
                        f"Kafka: another instance with transactional.id {self._cfg.transactional_id} "
                        f"took over ({describe(err)}); stopping"
                    ) from None
                raise SinkError(f"Kafka: fatal producer error: {describe(err)}") from None
            if self._on_delivery_error is not None:
                self._on_delivery_error()
            if committing and err is not None and not err.txn_requires_abort():
                # EndTxn may or may not have reached the coordinator: the outcome is unknown.
                self._discard()
                raise CommitUncertain(
                    f"Kafka: commit outcome unknown ({describe(err)}); the transaction is settled "
                    "when the producer is re-created"
                ) from None
            self._safe_abort(describe(err))
            raise SinkUnavailable(f"Kafka: transaction aborted: {describe(err)}") from None
        except BaseException as exc:
            # The batch's own error (the source, incomplete data) or an interruption.
            self._safe_abort(type(exc).__name__ if began else "interrupted")
            raise

    def _commit(self, producer: Producer) -> None:
        # A network wait bounded in wall time (monotonic), whatever clock the caller injected.
        deadline = time.monotonic() + self._cfg.transaction_timeout
        while True:
            try:
                producer.commit_transaction(self._cfg.transaction_timeout)
                return
            except KafkaException as exc:
                err = error_of(exc)
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
            err = error_of(exc)
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
