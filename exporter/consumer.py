"""What the billing platform sees: committed records, latest revision per `record_id`.

Consumers read with `isolation.level=read_committed` and upsert by `record_id`, keeping the
highest `revision`. `latest_records` is that rule, used by `tail --latest`, the demo and the
FOCUS export.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from exporter.avro.messages import AvroCodec
from exporter.config import KafkaConfig
from exporter.kafka import read_topic
from exporter.records import BillingRecord, PeriodManifest


def read_records(cfg: KafkaConfig, codec: AvroCodec, timeout: float | None = None
                 ) -> Iterator[BillingRecord]:
    """Every committed billing record, in topic order (per partition)."""
    for m in read_topic(cfg, cfg.topics.records, timeout=timeout or cfg.connect_timeout):
        if m.value is not None:
            yield codec.decode_record(m.value)


def read_manifests(cfg: KafkaConfig, codec: AvroCodec, timeout: float | None = None
                   ) -> Iterator[PeriodManifest]:
    """Every committed manifest, in topic order (per partition)."""
    for m in read_topic(cfg, cfg.topics.manifests, timeout=timeout or cfg.connect_timeout):
        if m.value is not None:
            yield codec.decode_manifest(m.value)


def latest_records(records: Iterable[BillingRecord]) -> dict[str, BillingRecord]:
    """Upsert by `record_id`, keeping the highest revision (ties: the later one)."""
    out: dict[str, BillingRecord] = {}
    for r in records:
        cur = out.get(r.record_id)
        if cur is None or r.revision >= cur.revision:
            out[r.record_id] = r
    return out


def plain(value: Any) -> Any:
    """JSON-ready: Decimals as strings (exact), epoch-ms fields as RFC 3339, nested too."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "__slots__"):
        return {k: plain(getattr(value, k)) for k in value.__slots__}
    return value


_MS_FIELDS = {"period_start", "period_end", "generated_at", "last_period_end", "updated_at"}


def to_json(obj: Any) -> str:
    doc = plain(obj)
    if isinstance(doc, dict):
        for k in _MS_FIELDS & set(doc):
            if isinstance(doc[k], int):
                doc[k] = datetime.fromtimestamp(doc[k] / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
