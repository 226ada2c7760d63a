"""The one period-publication policy: publish a batch exactly once, for the worker and backfill.

A batch is one period's messages and its checkpoint, published by a `PeriodSink` in one
transaction. Transient failures abort the transaction, so retrying the same batch is safe. A
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
from collections.abc import Callable, Sequence

from exporter.clock import Clock
from exporter.errors import CommitUncertain
from exporter.retry import call_with_retries
from exporter.sink import BATCH_HEADER, CheckpointStore, OutMessage, PeriodSink

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

    def publish(self, messages: Sequence[OutMessage], checkpoint: OutMessage) -> None:
        batch = self._batch_id()
        tagged = checkpoint._replace(headers=(*checkpoint.headers, (BATCH_HEADER, batch)))

        def once() -> None:
            try:
                self._sink.publish(messages, tagged)
            except CommitUncertain:
                if self._landed(batch):
                    return
                raise

        call_with_retries(once, clock=self._clock, attempts=self._attempts,
                          max_delay=self._max_delay, what=f"publish {checkpoint.topic}")

    def _landed(self, batch: bytes) -> bool:
        """Settle the in-doubt transaction, then ask the checkpoint whether it was this batch's.

        Raises `SinkUnavailable` while the broker is away (the caller retries the batch).
        """
        self._sink.recover()
        committed = self._checkpoints.read()
        landed = committed is not None and committed.batch == batch
        log.warning("commit outcome settled", extra={"batch": batch.decode(), "committed": landed})
        return landed
