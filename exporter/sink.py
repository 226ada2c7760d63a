"""The sink seam: a period's messages and its checkpoint, published atomically."""

from __future__ import annotations

import zlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

# Header of every checkpoint message: a fresh id per publication attempt's batch, by which an
# in-doubt commit is settled (`exporter.publication`).
BATCH_HEADER = "batch_id"


class OutMessage(NamedTuple):
    """One encoded Kafka message.

    A named tuple, not a dataclass: it holds only strings and bytes, so the cyclic collector
    stops tracking it after one pass, and a period's ten thousand messages do not make its
    full passes longer.
    """

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    # What the partition is chosen by (`partition_for`); None: the key. A billing record
    # carries its workload, so that one workload's records share a partition, in order.
    partition_key: bytes | None = None


def partition_for(partition_key: bytes, partitions: int) -> int:
    """The partition of `partition_key` among `partitions`: CRC-32 (zlib, as librdkafka's
    `consistent` partitioner hashes a key) modulo the count. Stable across processes and
    replicas, so every shard puts a workload on the same partition."""
    return zlib.crc32(partition_key) % partitions


class Batch(Protocol):
    """What one transaction publishes: messages generated while they are produced, then a
    checkpoint.

    A period's batch computes its messages chunk by chunk from the source, so that only one
    chunk's records are alive at a time; a retry of the transaction generates them again.
    """

    def messages(self) -> Iterator[OutMessage]:
        """The batch's messages, in order, generated afresh on every call (each publication
        attempt calls it once). May raise while generating (a source error, incomplete data):
        the sink then aborts the transaction and raises that error unchanged."""
        ...

    def checkpoint(self) -> OutMessage | None:
        """The checkpoint, asked for once `messages()` is exhausted (it may depend on what was
        generated). None: nothing to commit, allowed only when `messages()` yielded nothing;
        the sink then publishes nothing."""
        ...


@dataclass(frozen=True, slots=True)
class FixedBatch:
    """A `Batch` of messages known in advance (a checkpoint-only transaction, tests)."""

    items: Sequence[OutMessage]
    last: OutMessage | None

    def messages(self) -> Iterator[OutMessage]:
        return iter(self.items)

    def checkpoint(self) -> OutMessage | None:
        return self.last


@dataclass(frozen=True, slots=True)
class TaggedBatch:
    """`batch` with `headers` added to its checkpoint."""

    batch: Batch
    headers: tuple[tuple[str, bytes], ...]

    def messages(self) -> Iterator[OutMessage]:
        return self.batch.messages()

    def checkpoint(self) -> OutMessage | None:
        checkpoint = self.batch.checkpoint()
        if checkpoint is None:
            return None
        return checkpoint._replace(headers=(*checkpoint.headers, *self.headers))


@contextmanager
def generated(batch: Batch) -> Iterator[Iterator[OutMessage]]:
    """`batch.messages()`, closed at the end of the block even when it was left early (a
    failed produce), so that the source stops fetching the period's remaining chunks."""
    messages = batch.messages()
    try:
        yield messages
    finally:
        if isinstance(messages, Generator):
            messages.close()


class PeriodSink(Protocol):
    """Publishes batches so that a `read_committed` consumer sees all of a batch or none of it."""

    def start(self) -> None:
        """Connect, verify or create topics, and fence any previous instance. Blocking.

        Raises `SinkUnavailable` if the broker cannot be reached within the configured bound,
        `SinkError` for a missing topic that may not be created, `FencedError` if fenced.
        """
        ...

    def publish(self, batch: Batch) -> None:
        """Publish `batch.messages()`, as they are generated, and then `batch.checkpoint()` in
        one transaction. Blocking, all or nothing; a batch whose checkpoint is None publishes
        nothing.

        On any failure the transaction is aborted before the error is raised, so nothing of the
        batch is visible; the caller may retry the same batch (its messages are generated
        again). An error raised by the batch itself is raised unchanged. Raises `FencedError`
        when a newer instance took over (the caller must stop), `SinkUnavailable` for transient
        failures, `SinkError` for a batch that yields messages and then no checkpoint.
        """
        ...

    def recover(self) -> None:
        """Settle a transaction left in doubt by `CommitUncertain`. Blocking.

        Afterwards a `read_committed` read of the checkpoint tells whether that transaction
        committed. Raises `SinkUnavailable` while the broker is unreachable; no-op otherwise.
        """
        ...

    def close(self) -> None:
        """Release the producer; an open transaction is aborted. Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """What an instance's last committed checkpoint says.

    `last_period_end`: where the next period starts (epoch seconds). `clusters`: every cluster
    the instance has published, with the end (epoch seconds) of the last period that carried it;
    `claims` the same for the clusters whose claims it billed (`completeness.ClaimWatch`).
    `batch`: the `batch_id` header of the transaction that committed it (None before it existed).
    """

    last_period_end: int
    clusters: Mapping[str, int] = field(default_factory=dict)
    batch: bytes | None = None
    claims: Mapping[str, int] = field(default_factory=dict)


class CheckpointStore(Protocol):
    """Where the last committed checkpoint of an instance is read back from."""

    def read(self) -> CheckpointState | None:
        """Return the committed checkpoint, or None if there is none.

        Reads only committed data (`read_committed`). Blocking; raises `SinkUnavailable`.
        """
        ...
