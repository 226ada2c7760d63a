"""The one period-publication policy: publish a batch exactly once, for the worker and backfill.

A batch is one period's messages and its checkpoint, published by a `PeriodSink` in one
transaction; its messages are generated while they are produced (`sink.Batch`), so a retry
generates them again from the source. Transient failures abort the transaction, so retrying the
same batch is safe; an error of the batch itself (the source's, incomplete data) is not the
sink's to retry and is raised at once, the transaction aborted. A
commit whose outcome is unknown (`CommitUncertain`: the answer to EndTxn was lost) is not: the
batch may already be visible. The policy then settles the transaction (`PeriodSink.recover`)
and reads the instance's committed checkpoint. Every batch's checkpoint carries a fresh
`batch_id` header, so "the last committed checkpoint is this batch's" answers "did it land?"
exactly, even when two batches carry the same checkpoint value (backfill keeps its checkpoint
at the end of its finished prefix while later periods are published).

Imports: the sink protocols, the retry policy and the clock; nothing concrete.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

from exporter.clock import Clock
from exporter.errors import CommitUncertain
from exporter.retry import call_with_retries
from exporter.sink import BATCH_HEADER, Batch, CheckpointStore, OutMessage, PeriodSink, TaggedBatch

log = logging.getLogger("exporter.publication")


class ExactlyOnceSink:
    """A `PeriodSink` that publishes each batch once, whatever fails in between.

    `publish` retries transient failures (up to `attempts` or `max_delay` seconds on `clock`)
    and settles an in-doubt commit before trying again; it returns when the batch is
    committed, or raises the last error (nothing of the batch is then visible). `checkpoints`
    reads the checkpoints of the same transactional id as `sink` publishes under.
    """

    def __init__(self, sink: PeriodSink, checkpoints: CheckpointStore, clock: Clock, *,
                 attempts: int = 3, max_delay: float = 60.0,
                 batch_id: Callable[[], bytes] = lambda: uuid.uuid4().hex.encode()) -> None:
        self._sink = sink
        self._checkpoints = checkpoints
        self._clock = clock
        self._attempts = attempts
        self._max_delay = max_delay
        self._batch_id = batch_id

    def start(self) -> None:
        self._sink.start()

    def recover(self) -> None:
        self._sink.recover()

    def close(self) -> None:
        self._sink.close()

    def publish(self, batch: Batch) -> None:
        batch_id = self._batch_id()
        watched = _Watched(TaggedBatch(batch, ((BATCH_HEADER, batch_id),)))

        def once() -> None:
            watched.error = None
            try:
                self._sink.publish(watched)
            except CommitUncertain:
                if self._landed(batch_id):
                    return
                raise
            except BaseException as exc:
                if exc is watched.error:
                    raise _BatchFailed(exc) from None
                raise

        try:
            call_with_retries(once, clock=self._clock, attempts=self._attempts,
                              max_delay=self._max_delay, what="publish")
        except _BatchFailed as failed:
            raise failed.error from None

    def _landed(self, batch: bytes) -> bool:
        """Settle the in-doubt transaction, then ask the checkpoint whether it was this batch's.

        Raises `SinkUnavailable` while the broker is away (the caller retries the batch).
        """
        self._sink.recover()
        committed = self._checkpoints.read()
        landed = committed is not None and committed.batch == batch
        log.warning("commit outcome settled", extra={"batch": batch.decode(), "committed": landed})
        return landed


class _BatchFailed(Exception):
    """Carries an error of the batch's own past the retries, which are for the sink's."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Watched:
    """A batch that remembers the error its own generation raised (not a sink's)."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self.error: BaseException | None = None

    def messages(self) -> Iterator[OutMessage]:
        try:
            yield from self._batch.messages()
        except GeneratorExit:
            raise  # closed by the sink, which failed itself
        except BaseException as exc:
            self.error = exc
            raise

    def checkpoint(self) -> OutMessage | None:
        try:
            return self._batch.checkpoint()
        except BaseException as exc:
            self.error = exc
            raise
