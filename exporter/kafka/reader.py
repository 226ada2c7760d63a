"""Reading a topic back as a `read_committed` consumer sees it, from the beginning to its end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from exporter.clock import Clock
from exporter.config import KafkaConfig
from exporter.errors import SinkUnavailable, TopicMissing
from exporter.kafka.client import client_config, construct, describe, error_of


def consumer_config(cfg: KafkaConfig, group: str | None = None) -> dict[str, Any]:
    """Settings of a `read_committed` reader that commits nothing (a fresh group by default)."""
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
    """One message as read back: where it was, and its key, value and headers."""

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
    consumer = construct(Consumer, consumer_config(cfg))
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise SinkUnavailable(f"Kafka {cfg.bootstrap_servers}: {describe(error_of(exc))}") from None
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
                raise SinkUnavailable(f"Kafka: reading {topic}: {describe(error)}")
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
