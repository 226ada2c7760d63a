"""What a backfill reads back from Kafka, and the identity it writes under.

The backfill's own transactional id (never the live worker's), the last manifest published per
(period, cluster) from the compacted manifests topic (ADR 0002), the backfill's own checkpoint
with the range it was committed for, and the live worker's checkpoint. `RangeCheckpointSink`
tags every checkpoint the backfill commits with its range, so that a rerun of the same range
resumes where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.clock import Clock
from exporter.config import Config
from exporter.errors import ConfigError, SinkError, TopicMissing
from exporter.kafka import ReadMessage, read_topic
from exporter.model import STORAGE
from exporter.periods import Period
from exporter.pipeline import Prior
from exporter.retry import call_with_retries
from exporter.shards import instance_id
from exporter.sink import Batch, PeriodSink, TaggedBatch
from exporter.wiring import build_checkpoints

SUFFIX = "-backfill"
FROM_HEADER = "backfill_from"
TO_HEADER = "backfill_to"
"""Headers of the backfill's checkpoint message: the range it belongs to (epoch seconds, ASCII)."""


def resolve_ids(cfg: Config, flag: str | None = None) -> tuple[str, str]:
    """(live worker's transactional id, backfill's transactional id).

    The live id is `kafka.transactional_id` without a trailing `-backfill` (a Job configured
    with `<id>-backfill` as its Kafka id still finds the worker's), per shard when sharded
    (`Config.instance_id`). The Helm Job sets
    `CHARGEBACK_BACKFILL__TRANSACTIONAL_ID`. The backfill id is `--transactional-id`,
    else `backfill.transactional_id`, else `<live id>-backfill`; never the live one, which would
    fence the worker. Raises `ConfigError`.
    """
    base = cfg.kafka.transactional_id.removesuffix(SUFFIX)
    if not base:
        raise ConfigError(f"kafka.transactional_id: {cfg.kafka.transactional_id!r} leaves no live id")
    live = instance_id(base, cfg.shard.name)
    own = (flag or "").strip() or cfg.backfill.transactional_id or live + SUFFIX
    if own == live:
        raise ConfigError(
            f"backfill: transactional id {own!r} is the live worker's; the two would fence each "
            "other (leave backfill.transactional_id unset to use <id>-backfill)"
        )
    return live, own


@dataclass(frozen=True, slots=True)
class Published:
    """The last manifest published for a (period, cluster); `claims`: it billed claims."""

    revision: int
    content_hash: str
    method: str
    claims: bool = False

    @property
    def prior(self) -> Prior:
        return Prior(self.revision, self.content_hash, self.claims)


@dataclass(frozen=True, slots=True)
class BackfillCheckpoint:
    """The backfill's own checkpoint: the end of its done prefix, and the range it was run for."""

    end: int
    start: int | None
    stop: int | None

    def resumes(self, start: int, end: int) -> bool:
        """Whether a backfill of `[start, end)` continues from here (same range, inside it)."""
        return (self.start, self.stop) == (start, end) and start < self.end < end


def _missing_topic(exc: SinkError) -> bool:
    return isinstance(exc, TopicMissing)


def read_all(cfg: Config, topic: str, clock: Clock) -> list[ReadMessage]:
    """Every committed message of `topic` (none when the topic does not exist yet)."""

    def once() -> list[ReadMessage]:
        try:
            return list(read_topic(cfg.kafka, topic, clock=clock))
        except SinkError as exc:
            if _missing_topic(exc):
                return []
            raise

    return call_with_retries(once, clock=clock, attempts=5, max_delay=120, what=f"kafka {topic}")


def read_published(cfg: Config, codec: Any, clock: Clock) -> dict[tuple[Period, str], Published]:
    """(period, cluster) -> the last manifest per `manifest_id` in the manifests topic.

    Messages of one `manifest_id` share a key, hence a partition, so offset order is publication
    order; a tombstone (null value) forgets the id.
    """
    last: dict[bytes, tuple[Period, str, Published]] = {}
    for m in read_all(cfg, cfg.kafka.topics.manifests, clock):
        key = m.key or b""
        if m.value is None:
            last.pop(key, None)
            continue
        man = codec.decode_manifest(m.value)
        claims = any(t.resource.startswith(STORAGE + ".") for t in man.totals)
        last[key] = (man.period, man.cluster,
                     Published(man.revision, man.content_hash, man.method, claims))
    return {(p, c): pub for p, c, pub in last.values()}


def read_backfill_checkpoint(cfg: Config, codec: Any, clock: Clock,
                             instance: str) -> BackfillCheckpoint | None:
    """The backfill's checkpoint (key = its transactional id), or None if it never committed."""
    found: BackfillCheckpoint | None = None
    key = instance.encode()
    for m in read_all(cfg, cfg.kafka.topics.checkpoint, clock):
        if m.key != key:
            continue
        if m.value is None:
            found = None
            continue
        found = BackfillCheckpoint(codec.decode_checkpoint(m.value).last_period_end,
                                   _int_header(m, FROM_HEADER),
                                   _int_header(m, TO_HEADER))
    return found


def _int_header(m: ReadMessage, name: str) -> int | None:
    raw = m.headers.get(name)
    try:
        return int(raw.decode("ascii")) if raw is not None else None
    except (UnicodeDecodeError, ValueError):
        return None


def read_live_checkpoint(cfg: Config, clock: Clock, live_id: str) -> int | None:
    """The live worker's committed `last_period_end`, or None (no checkpoint, or no topic yet)."""
    try:
        state = build_checkpoints(cfg, clock, transactional_id=live_id).read()
    except SinkError as exc:
        if _missing_topic(exc):
            return None
        raise
    return None if state is None else state.last_period_end


class RangeCheckpointSink:
    """A `PeriodSink` that tags each checkpoint with the backfill's range (for resumption)."""

    def __init__(self, sink: PeriodSink, start: int, end: int) -> None:
        self._sink = sink
        self._headers = ((FROM_HEADER, str(start).encode()), (TO_HEADER, str(end).encode()))

    def start(self) -> None:
        self._sink.start()

    def publish(self, batch: Batch) -> None:
        self._sink.publish(TaggedBatch(batch, self._headers))

    def recover(self) -> None:
        self._sink.recover()

    def close(self) -> None:
        self._sink.close()
