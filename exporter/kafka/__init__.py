"""Kafka: the transactional period sink, the checkpoint store, topic admin, readers."""

from exporter.kafka.producer import (
    KafkaCheckpointStore,
    KafkaPeriodSink,
    ReadMessage,
    TopicAdmin,
    client_config,
    consumer_config,
    read_topic,
)

__all__ = [
    "KafkaCheckpointStore",
    "KafkaPeriodSink",
    "ReadMessage",
    "TopicAdmin",
    "client_config",
    "consumer_config",
    "read_topic",
]
