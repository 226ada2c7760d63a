"""The checkpoint store: an instance's checkpoint, read back from the compacted topic."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from exporter.clock import Clock
from exporter.config import KafkaConfig
from exporter.kafka.reader import read_topic
from exporter.retry import call_with_retries
from exporter.sink import BATCH_HEADER, CheckpointState


class KafkaCheckpointStore:
    """Reads an instance's checkpoint back from the compacted checkpoint topic."""

    def __init__(self, cfg: KafkaConfig, decode: Callable[[bytes], CheckpointState],
                 clock: Clock) -> None:
        self._cfg = cfg
        self._decode = decode
        self._clock = clock

    def read(self) -> CheckpointState | None:
        key = self._cfg.transactional_id.encode()

        def once() -> CheckpointState | None:
            last: CheckpointState | None = None
            for m in read_topic(self._cfg, self._cfg.topics.checkpoint):
                if m.key == key and m.value is not None:
                    last = dataclasses.replace(self._decode(m.value),
                                               batch=m.headers.get(BATCH_HEADER))
            return last

        return call_with_retries(once, clock=self._clock, attempts=5, max_delay=120,
                                 what="kafka checkpoint")
