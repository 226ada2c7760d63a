"""Wrappers around a real `PeriodSink` that count, or disturb, what is asked of it."""

from __future__ import annotations

from collections.abc import Collection

from exporter.errors import CommitUncertain
from exporter.sink import Batch, PeriodSink


class CountingSink:
    """A `PeriodSink` forwarding to `inner` and counting its publishes and recoveries."""

    def __init__(self, inner: PeriodSink) -> None:
        self.inner = inner
        self.publishes = 0
        self.recoveries = 0

    def start(self) -> None:
        self.inner.start()

    def publish(self, batch: Batch) -> None:
        self.publishes += 1
        self.inner.publish(batch)

    def recover(self) -> None:
        self.recoveries += 1
        self.inner.recover()

    def close(self) -> None:
        self.inner.close()


class LostAck(CountingSink):
    """The real sink, except that chosen publishes (counted from 1) commit and then report an
    unknown outcome (the broker committed, the answer to EndTxn was lost); with `commit` False
    those publishes send nothing (the transaction never reached the coordinator) and report the
    same."""

    def __init__(self, inner: PeriodSink, lose: Collection[int], commit: bool = True) -> None:
        super().__init__(inner)
        self.lose = lose
        self.commit = commit

    def publish(self, batch: Batch) -> None:
        self.publishes += 1
        if self.commit or self.publishes not in self.lose:
            self.inner.publish(batch)
        if self.publishes in self.lose:
            raise CommitUncertain("Kafka: commit outcome unknown (test: answer lost)")
