"""`AvroCodec`: billing records, manifests and checkpoints as framed Avro Kafka messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from exporter.avro.framing import Framing
from exporter.config import TopicsConfig
from exporter.errors import EncodingError
from exporter.records import BillingRecord, Checkpoint, PeriodManifest
from exporter.sink import CheckpointState, OutMessage

RECORD_SCHEMA = "billing_record"
MANIFEST_SCHEMA = "period_manifest"
CHECKPOINT_SCHEMA = "checkpoint"


def workload_partition_key(record: BillingRecord) -> bytes:
    """What a record's partition is chosen by: its workload, `cluster/namespace/kind/name`
    (FOCUS ResourceId) in UTF-8, the same for every resource, period and revision of it."""
    return (f"{record.cluster}/{record.namespace}/{record.workload_kind}/"
            f"{record.workload_name}").encode()


class AvroCodec:
    """Encodes with one framing (single-object or Confluent); keys are the deterministic ids."""

    def __init__(self, framing: Framing, topics: TopicsConfig) -> None:
        self.framing = framing
        self.topics = topics

    def records(self, records: Sequence[Any], headers: Sequence[tuple[str, bytes]],
                bodies: Mapping[str, bytes] | None = None) -> list[OutMessage]:
        """Framed records keyed by `record_id` and partitioned by workload
        (`workload_partition_key`); `bodies` holds Avro bodies already encoded (by record_id),
        which are framed as they are."""
        topic = self.topics.records
        h = (*headers, ("schema", RECORD_SCHEMA.encode()))
        encode = self.framing.encode_object
        get = (bodies or {}).get
        return [OutMessage(topic, r.record_id.encode(),
                           encode(topic, RECORD_SCHEMA, r, get(r.record_id)), h,
                           workload_partition_key(r))
                for r in records]

    def manifests(self, manifests: Sequence[Any], headers: Sequence[tuple[str, bytes]]) -> list[OutMessage]:
        topic = self.topics.manifests
        h = (*headers, ("schema", MANIFEST_SCHEMA.encode()))
        return [OutMessage(topic, m.manifest_id.encode(),
                           self.framing.encode_object(topic, MANIFEST_SCHEMA, m), h)
                for m in manifests]

    def checkpoint(self, instance: str, last_period_end: int, period_seconds: int, now_ms: int,
                   clusters: Mapping[str, int] | None = None,
                   claims: Mapping[str, int] | None = None) -> OutMessage:
        """The instance's checkpoint; `clusters` maps each published cluster to the end (epoch
        seconds) of the last period that carried it, `claims` each cluster whose claims were
        billed to the end of the last period that billed one."""
        topic = self.topics.checkpoint
        cp = Checkpoint(instance=instance, last_period_end=last_period_end * 1000,
                        period_seconds=period_seconds, updated_at=now_ms,
                        clusters={c: end * 1000 for c, end in sorted((clusters or {}).items())},
                        claims={c: end * 1000 for c, end in sorted((claims or {}).items())})
        return OutMessage(topic, instance.encode(),
                          self.framing.encode_object(topic, CHECKPOINT_SCHEMA, cp))

    def decode_checkpoint(self, value: bytes) -> CheckpointState:
        """The checkpoint's period end and clusters, in epoch seconds."""
        cp = Checkpoint.from_avro(self.framing.decode(value))
        return CheckpointState(cp.last_period_end // 1000,
                               {c: end // 1000 for c, end in cp.clusters.items()},
                               claims={c: end // 1000 for c, end in cp.claims.items()})

    def decode_record(self, value: bytes) -> BillingRecord:
        return BillingRecord.from_avro(self.framing.decode(value))

    def decode_manifest(self, value: bytes) -> PeriodManifest:
        return PeriodManifest.from_avro(self.framing.decode(value))

    def decode_any(self, value: bytes) -> tuple[str, Any]:
        """(schema key, decoded object) for a value of any of the three schemas."""
        name = self.framing.schema_of(value)
        if name.endswith(".BillingRecord"):
            return RECORD_SCHEMA, self.decode_record(value)
        if name.endswith(".PeriodManifest"):
            return MANIFEST_SCHEMA, self.decode_manifest(value)
        if name.endswith(".Checkpoint"):
            return CHECKPOINT_SCHEMA, Checkpoint.from_avro(self.framing.decode(value))
        raise EncodingError(f"unexpected schema {name}")
