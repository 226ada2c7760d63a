"""One `PeriodSink` + `CheckpointStore` contract, run against `MemorySink` and `KafkaPeriodSink`.

The worker and `exporter.publication.ExactlyOnceSink` rely on exactly these behaviours, so the
in-memory double used by the worker tests is held to what the real broker does (the shape of
arroyo's `StreamsTestMixin`). Kafka-only behaviours, not modelled in memory:
- an in-doubt transaction that never reached the coordinator stays open until the next
  `init_transactions`, stalling `read_committed` readers of its partitions meanwhile (memory
  drops it at once: nothing of it is visible either way, which is what the contract states);
- `close()` from another thread while `publish` runs is only exercised on memory (the worker's
  shutdown tests); confluent-kafka's producer is not meant to be aborted concurrently.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from chargeback_simulator.localbroker import LocalBroker
from exporter.clock import FakeClock
from exporter.config import Config
from exporter.errors import (
    CommitUncertain,
    FencedError,
    SinkError,
    SinkUnavailable,
    SourceUnavailable,
)
from exporter.kafka import KafkaCheckpointStore, KafkaPeriodSink, read_topic
from exporter.publication import ExactlyOnceSink
from exporter.sink import (
    BATCH_HEADER,
    CheckpointState,
    CheckpointStore,
    FixedBatch,
    OutMessage,
    PeriodSink,
)
from tests.fakes.memory import MemoryBroker, MemorySink, decode_checkpoint
from tests.fakes.sinks import CountingSink
from tests.rigs.kafka import T0, make_config

H = 3600


@dataclass(frozen=True)
class Seen:
    """One message as a `read_committed` reader of its topic sees it."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def seen(m: OutMessage) -> Seen:
    return Seen(m.key, m.value, dict(m.headers))


class ChunkFailed(SourceUnavailable):
    """A chunk of the period could not be measured (a retryable source error)."""


class Generated:
    """A batch generated while it is published: `messages`, one by one; generation raises
    `ChunkFailed` after `fail_after` messages when set. Counts its generations."""

    def __init__(self, messages: Sequence[OutMessage], checkpoint: OutMessage,
                 fail_after: int | None = None,
                 each: Callable[[int], None] | None = None) -> None:
        self._messages = list(messages)
        self._checkpoint = checkpoint
        self.fail_after = fail_after
        self._each = each  # called before each message is generated, with its index
        self.calls = 0
        self.produced = 0

    def messages(self) -> Iterator[OutMessage]:
        self.calls += 1
        self.produced = 0
        for i, m in enumerate(self._messages):
            if self._each is not None:
                self._each(i)
            if i == self.fail_after:
                raise ChunkFailed("Sysdig: the last chunk's queries failed")
            self.produced += 1
            yield m

    def checkpoint(self) -> OutMessage | None:
        return self._checkpoint


class PeriodSinkContract(ABC):
    """The contract; a subclass supplies one implementation and a `read_committed` view of it."""

    records_topic: str
    manifests_topic: str
    checkpoint_topic: str
    instance: str  # the transactional id, which is also the checkpoint's key

    # -- what an implementation provides ---------------------------------------------------

    @abstractmethod
    def new_sink(self, instance: str | None = None) -> PeriodSink:
        """A sink not yet started, publishing under `instance` (default: `self.instance`)."""

    @abstractmethod
    def new_store(self, instance: str | None = None) -> CheckpointStore:
        """The checkpoint store reading `instance`'s checkpoint (default: `self.instance`)."""

    @abstractmethod
    def committed(self, topic: str) -> list[Seen]:
        """Everything of `topic` a `read_committed` reader sees, in order."""

    @abstractmethod
    def fail_next_publish_midway(self, sink: PeriodSink) -> None:
        """The next publish fails transiently after its first message is in the transaction."""

    @abstractmethod
    def lose_next_commit_answer(self, sink: PeriodSink, *, committed: bool) -> None:
        """The next publish's commit answer is lost: the transaction committed, or it never
        reached the coordinator (`committed=False`); the publish raises `CommitUncertain`."""

    @abstractmethod
    def during_next_publish(self, sink: PeriodSink, action: Callable[[], None]) -> None:
        """Run `action` inside the next publish's transaction, before it commits."""

    # -- helpers ---------------------------------------------------------------------------

    def started(self, instance: str | None = None) -> PeriodSink:
        sink = self.new_sink(instance)
        sink.start()
        return sink

    def batch(self, end: int, tag: str = "b", *, instance: str | None = None,
              batch: bytes | None = None) -> tuple[list[OutMessage], OutMessage]:
        """Three records and a manifest for the period ending at `end`, and its checkpoint."""
        inst = instance or self.instance
        hdr = (("exporter_version", b"contract"),)
        messages = [OutMessage(self.records_topic, f"{tag}-r{i}".encode(),
                               f"{tag} record {i}".encode(), hdr) for i in range(3)]
        messages.append(OutMessage(self.manifests_topic, f"{tag}-m".encode(),
                                   f"{tag} manifest".encode(), hdr))
        body = {"instance": inst, "last_period_end": end, "period_seconds": H, "clusters": {}}
        checkpoint = OutMessage(self.checkpoint_topic, inst.encode(),
                                json.dumps(body, sort_keys=True).encode(),
                                ((BATCH_HEADER, batch or uuid.uuid4().hex.encode()),))
        return messages, checkpoint

    def visible(self, messages: Sequence[OutMessage]) -> None:
        """Exactly `messages` (one copy each) are what a read_committed reader sees of data."""
        def order(s: Seen) -> tuple[bytes, bytes]:
            return s.key or b"", s.value or b""

        for topic in (self.records_topic, self.manifests_topic):
            want = [seen(m) for m in messages if m.topic == topic]
            # Records spread over partitions: a reader sees each partition in order, not the topic.
            assert sorted(self.committed(topic), key=order) == sorted(want, key=order)

    # -- the contract ----------------------------------------------------------------------

    def test_a_published_batch_is_visible_whole_with_its_checkpoint(self) -> None:
        sink = self.started()
        messages, checkpoint = self.batch(T0 + H)
        sink.publish(FixedBatch(messages, checkpoint))
        self.visible(messages)
        assert self.committed(self.checkpoint_topic) == [seen(checkpoint)]
        state = self.new_store().read()
        assert state == CheckpointState(T0 + H, {}, dict(checkpoint.headers)[BATCH_HEADER])

    def test_no_checkpoint_reads_as_none(self) -> None:
        self.started()
        assert self.new_store().read() is None

    def test_the_last_committed_checkpoint_wins_and_carries_its_batch_id(self) -> None:
        """Two batches may carry the same checkpoint value (backfill); the batch id tells them apart."""
        sink = self.started()
        first = self.batch(T0 + H, "one", batch=b"batch-1")
        second = self.batch(T0 + H, "two", batch=b"batch-2")
        sink.publish(FixedBatch(*first))
        sink.publish(FixedBatch(*second))
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"batch-2")
        self.visible([*first[0], *second[0]])

    def test_a_checkpoint_only_batch_moves_the_checkpoint(self) -> None:
        sink = self.started()
        sink.publish(FixedBatch(*self.batch(T0 + H, batch=b"data")))
        _, checkpoint = self.batch(T0 + 2 * H, batch=b"bare")
        sink.publish(FixedBatch([], checkpoint))
        assert self.new_store().read() == CheckpointState(T0 + 2 * H, {}, b"bare")

    def test_a_failed_publish_leaves_nothing_and_the_same_batch_can_be_retried(self) -> None:
        sink = self.started()
        messages, checkpoint = self.batch(T0 + H)
        self.fail_next_publish_midway(sink)
        with pytest.raises(SinkUnavailable):
            sink.publish(FixedBatch(messages, checkpoint))
        self.visible([])
        assert self.new_store().read() is None

        sink.publish(FixedBatch(messages, checkpoint))  # the caller's retry of the same batch
        self.visible(messages)
        assert self.new_store().read() == CheckpointState(T0 + H, {}, dict(checkpoint.headers)[BATCH_HEADER])

    @pytest.mark.parametrize("landed", [True, False], ids=["committed", "not-committed"])
    def test_recover_settles_an_in_doubt_commit(self, landed: bool) -> None:
        sink = self.started()
        before = self.batch(T0 + H, "before", batch=b"before")
        sink.publish(FixedBatch(*before))
        messages, checkpoint = self.batch(T0 + 2 * H, "doubt", batch=b"in-doubt")
        self.lose_next_commit_answer(sink, committed=landed)
        with pytest.raises(CommitUncertain):
            sink.publish(FixedBatch(messages, checkpoint))
        sink.recover()
        state = self.new_store().read()
        assert state is not None and (state.batch == b"in-doubt") is landed
        self.visible([*before[0], *messages] if landed else before[0])

        after = self.batch(T0 + 3 * H, "after", batch=b"after")
        sink.publish(FixedBatch(*after))  # the settled sink publishes again
        assert self.new_store().read() == CheckpointState(T0 + 3 * H, {}, b"after")

    def test_recover_without_anything_in_doubt_is_a_no_op(self) -> None:
        sink = self.started()
        sink.publish(FixedBatch(*self.batch(T0 + H, batch=b"one")))
        sink.recover()
        sink.publish(FixedBatch(*self.batch(T0 + 2 * H, "two", batch=b"two")))
        assert self.new_store().read() == CheckpointState(T0 + 2 * H, {}, b"two")

    @pytest.mark.parametrize("landed", [True, False], ids=["committed", "not-committed"])
    def test_exactly_once_sink_publishes_a_batch_once_across_a_lost_commit_answer(
            self, landed: bool) -> None:
        sink = self.started()
        counted = CountingSink(sink)
        policy = ExactlyOnceSink(counted, self.new_store(), FakeClock(T0))
        messages, checkpoint = self.batch(T0 + H)
        self.lose_next_commit_answer(sink, committed=landed)
        policy.publish(FixedBatch(messages, checkpoint))
        self.visible(messages)
        state = self.new_store().read()
        assert state is not None and state.last_period_end == T0 + H
        assert counted.publishes == (1 if landed else 2)  # sent again only if it did not land
        assert counted.recoveries == 1

    # -- batches generated while they are published (a period measured chunk by chunk) ------

    def test_a_generated_batch_is_published_whole_and_generated_once(self) -> None:
        sink = self.started()
        messages, checkpoint = self.batch(T0 + H, batch=b"gen")
        gen = Generated(messages, checkpoint)
        sink.publish(gen)
        assert gen.calls == 1 and gen.produced == len(messages)
        self.visible(messages)
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"gen")

    def test_a_batch_failing_after_some_messages_leaves_nothing_and_its_error_is_raised(self) -> None:
        """A chunk that fails after earlier chunks were produced: the transaction is aborted."""
        sink = self.started()
        messages, checkpoint = self.batch(T0 + H, batch=b"late-chunk")
        gen = Generated(messages, checkpoint, fail_after=len(messages) - 1)
        with pytest.raises(ChunkFailed):
            sink.publish(gen)
        self.visible([])
        assert self.new_store().read() is None

        gen.fail_after = None
        sink.publish(gen)  # the same batch again: generated afresh
        assert gen.calls == 2
        self.visible(messages)
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"late-chunk")

    def test_a_batch_without_checkpoint_publishes_nothing(self) -> None:
        sink = self.started()
        sink.publish(FixedBatch(*self.batch(T0 + H, batch=b"first")))
        sink.publish(FixedBatch([], None))
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"first")
        messages, _ = self.batch(T0 + 2 * H, "orphans")
        with pytest.raises(SinkError, match="no checkpoint"):
            sink.publish(FixedBatch(messages, None))
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"first")
        self.visible(self.batch(T0 + H)[0])  # the first batch's messages, nothing of the orphans

    def test_exactly_once_sink_regenerates_a_batch_after_a_transient_failure(self) -> None:
        sink = self.started()
        policy = ExactlyOnceSink(CountingSink(sink), self.new_store(), FakeClock(T0))
        messages, checkpoint = self.batch(T0 + H)
        gen = Generated(messages, checkpoint)
        self.fail_next_publish_midway(sink)
        policy.publish(gen)
        assert gen.calls == 2  # the retry measured the period again
        self.visible(messages)
        state = self.new_store().read()
        assert state is not None and state.last_period_end == T0 + H

    def test_exactly_once_sink_does_not_retry_the_batchs_own_error(self) -> None:
        """A source error is the caller's to handle (hold the period), not the sink's to retry."""
        sink = self.started()
        counted = CountingSink(sink)
        policy = ExactlyOnceSink(counted, self.new_store(), FakeClock(T0))
        messages, checkpoint = self.batch(T0 + H)
        gen = Generated(messages, checkpoint, fail_after=2)
        with pytest.raises(ChunkFailed):
            policy.publish(gen)
        assert counted.publishes == 1 and gen.calls == 1
        self.visible([])
        assert self.new_store().read() is None

    def test_publish_before_start_fails_clearly(self) -> None:
        sink = self.new_sink()
        with pytest.raises(SinkError, match=r"before start\(\)"):
            sink.publish(FixedBatch(*self.batch(T0 + H)))
        sink.close()

    def test_publish_after_close_fails_clearly_and_close_is_idempotent(self) -> None:
        sink = self.started()
        sink.publish(FixedBatch(*self.batch(T0 + H, batch=b"kept")))
        sink.close()
        sink.close()
        with pytest.raises(SinkError, match=r"after close\(\)"):
            sink.publish(FixedBatch(*self.batch(T0 + 2 * H, "late")))
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"kept")

    def test_publish_after_close_fails_even_with_a_commit_in_doubt(self) -> None:
        """Closing is final: the in-doubt state must not let a closed sink reconnect."""
        sink = self.started()
        self.lose_next_commit_answer(sink, committed=False)
        with pytest.raises(CommitUncertain):
            sink.publish(FixedBatch(*self.batch(T0 + H)))
        sink.close()
        with pytest.raises(SinkError, match=r"after close\(\)"):
            sink.publish(FixedBatch(*self.batch(T0 + H, "late")))
        self.visible([])

    def test_a_newer_instance_with_the_same_id_fences_the_older(self) -> None:
        old = self.started()
        first = self.batch(T0 + H, "old", batch=b"old")
        old.publish(FixedBatch(*first))
        new = self.started()
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"old")
        with pytest.raises(FencedError):
            old.publish(FixedBatch(*self.batch(T0 + 2 * H, "zombie")))
        second = self.batch(T0 + 2 * H, "new", batch=b"new")
        new.publish(FixedBatch(*second))
        self.visible([*first[0], *second[0]])
        assert self.new_store().read() == CheckpointState(T0 + 2 * H, {}, b"new")

    def test_fencing_inside_a_transaction_aborts_it(self) -> None:
        old = self.started()
        rivals: list[PeriodSink] = []
        self.during_next_publish(old, lambda: rivals.append(self.started()))
        with pytest.raises(FencedError):
            old.publish(FixedBatch(*self.batch(T0 + H, "zombie")))
        assert len(rivals) == 1
        self.visible([])
        assert self.new_store().read() is None

    def test_instances_with_different_ids_neither_fence_nor_read_each_other(self) -> None:
        """The worker and a backfill run side by side under two transactional ids."""
        other = f"{self.instance}-backfill"
        mine, theirs = self.started(), self.started(other)
        a = self.batch(T0 + H, "mine", batch=b"mine")
        b = self.batch(T0 + 5 * H, "theirs", instance=other, batch=b"theirs")
        mine.publish(FixedBatch(*a))
        theirs.publish(FixedBatch(*b))
        mine.publish(FixedBatch(*self.batch(T0 + 2 * H, "mine2", batch=b"mine2")))
        assert self.new_store().read() == CheckpointState(T0 + 2 * H, {}, b"mine2")
        assert self.new_store(other).read() == CheckpointState(T0 + 5 * H, {}, b"theirs")


# --- in memory ------------------------------------------------------------------------------

class TestMemorySink(PeriodSinkContract):
    records_topic = "records"
    manifests_topic = "manifests"
    checkpoint_topic = "checkpoint"
    instance = "contract"

    @pytest.fixture(autouse=True)
    def _broker(self) -> None:
        self.broker = MemoryBroker()

    def new_sink(self, instance: str | None = None) -> MemorySink:
        return MemorySink(self.broker, transactional_id=instance or self.instance)

    def new_store(self, instance: str | None = None) -> CheckpointStore:
        return self.new_sink(instance)

    def committed(self, topic: str) -> list[Seen]:
        return [seen(m) for m in self.broker.committed_messages(topic)]

    def fail_next_publish_midway(self, sink: PeriodSink) -> None:
        assert isinstance(sink, MemorySink)
        sink.fail_nth_publish(sink.attempts + 1)

    def lose_next_commit_answer(self, sink: PeriodSink, *, committed: bool) -> None:
        assert isinstance(sink, MemorySink)
        sink.lose_commit_answer(sink.attempts + 1, committed=committed)

    def during_next_publish(self, sink: PeriodSink, action: Callable[[], None]) -> None:
        assert isinstance(sink, MemorySink)
        sink.in_transaction = action


# --- a real broker --------------------------------------------------------------------------

class _Producer:
    """A transactional producer, delegating to the real one except where a test intervenes.

    `after_first` runs once the first message of the transaction is on the broker (flushed);
    `commit` replaces `commit_transaction`.
    """

    def __init__(self, inner: Any, *, after_first: Callable[[], None] | None = None,
                 commit: Callable[[Any, float], None] | None = None) -> None:
        self._inner = inner
        self._after_first = after_first
        self._commit = commit
        self._produced = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self._inner.produce(*args, **kwargs)
        self._produced += 1
        if self._produced == 1 and self._after_first is not None:
            self._inner.flush(10)
            self._after_first()

    def commit_transaction(self, timeout: float) -> None:
        if self._commit is None:
            self._inner.commit_transaction(timeout)
        else:
            self._commit(self._inner, timeout)


def _kafka_error(code: int, reason: str, *, retriable: bool) -> KafkaException:
    return KafkaException(KafkaError(code, reason, False, retriable, False))


class TestKafkaPeriodSink(PeriodSinkContract):
    @pytest.fixture(autouse=True)
    def _broker(self, noida: LocalBroker) -> Iterator[None]:
        self.cfg: Config = make_config(noida.bootstrap)
        topics = self.cfg.kafka.topics
        self.records_topic, self.manifests_topic = topics.records, topics.manifests
        self.checkpoint_topic, self.instance = topics.checkpoint, self.cfg.kafka.transactional_id
        self.clock = FakeClock(T0)
        self.sinks: list[KafkaPeriodSink] = []
        yield
        for sink in self.sinks:
            sink.close()

    def _kafka(self, instance: str | None) -> Any:
        return self.cfg.kafka.model_copy(update={"transactional_id": instance or self.instance})

    def new_sink(self, instance: str | None = None) -> KafkaPeriodSink:
        sink = KafkaPeriodSink(self._kafka(instance), self.clock)
        self.sinks.append(sink)
        return sink

    def new_store(self, instance: str | None = None) -> CheckpointStore:
        return KafkaCheckpointStore(self._kafka(instance), decode_checkpoint, self.clock)

    def committed(self, topic: str) -> list[Seen]:
        return [Seen(m.key, m.value, dict(m.headers)) for m in read_topic(self.cfg.kafka, topic)]

    def _intervene(self, sink: PeriodSink, **kwargs: Any) -> None:
        assert isinstance(sink, KafkaPeriodSink) and sink._producer is not None
        sink._producer = _Producer(sink._producer, **kwargs)

    def fail_next_publish_midway(self, sink: PeriodSink) -> None:
        def fail() -> None:
            raise _kafka_error(KafkaError._TRANSPORT, "contract: connection lost", retriable=True)

        self._intervene(sink, after_first=fail)

    def lose_next_commit_answer(self, sink: PeriodSink, *, committed: bool) -> None:
        def commit(inner: Any, timeout: float) -> None:
            if committed:
                inner.commit_transaction(timeout)
            else:
                inner.flush(10)  # the batch is on the broker, in a transaction left open
            raise _kafka_error(KafkaError._TIMED_OUT, "contract: EndTxn answer lost", retriable=False)

        self._intervene(sink, commit=commit)

    def during_next_publish(self, sink: PeriodSink, action: Callable[[], None]) -> None:
        self._intervene(sink, after_first=action)

    def test_fenced_while_a_batch_is_generated_stops_and_never_fences_back(self) -> None:
        """The producer learns it was fenced between two chunks: the next produce only says
        `_FATAL`. That is fencing (stop), not a transient failure to retry with a new producer,
        which would fence the newer instance in turn."""
        old = self.started()
        rivals: list[PeriodSink] = []
        messages, checkpoint = self.batch(T0 + H, "zombie", batch=b"zombie")

        def fence_then_flush(i: int) -> None:
            if i == 0:
                rivals.append(self.started())  # before the old producer's first message
            elif i == 1:
                assert isinstance(old, KafkaPeriodSink) and old._producer is not None
                old._producer.flush(10)  # the fenced answer arrives before the next chunk

        policy = ExactlyOnceSink(old, self.new_store(), self.clock)
        with pytest.raises(FencedError):
            policy.publish(Generated(messages, checkpoint, each=fence_then_flush))
        self.visible([])
        second = self.batch(T0 + H, "new", batch=b"new")
        rivals[0].publish(FixedBatch(*second))  # the newer instance was not fenced back
        self.visible(second[0])
        assert self.new_store().read() == CheckpointState(T0 + H, {}, b"new")
