"""Kafka: the transactional period sink, the checkpoint store, topic admin and the reader.

This package is the only importer of `confluent_kafka` (besides `exporter.avro.registry`, which
uses its Schema Registry client): `client` (the librdkafka settings every client shares and
error helpers), `producer` (`KafkaPeriodSink`, one transaction per period), `admin`
(`TopicAdmin`), `reader` (`read_topic`, as a `read_committed` consumer sees a topic) and
`checkpoints` (`KafkaCheckpointStore`). It deals in bytes (`exporter.sink.OutMessage`,
`ReadMessage`): it may import `exporter.config`, `clock`, `errors`, `retry` and `sink`, never
`exporter.avro` or the record types.
"""

from exporter.kafka.admin import TopicAdmin
from exporter.kafka.checkpoints import KafkaCheckpointStore
from exporter.kafka.client import client_config
from exporter.kafka.producer import KafkaPeriodSink
from exporter.kafka.reader import ReadMessage, consumer_config, read_topic

__all__ = [
    "KafkaCheckpointStore",
    "KafkaPeriodSink",
    "ReadMessage",
    "TopicAdmin",
    "client_config",
    "consumer_config",
    "read_topic",
]
