"""Framings: how an Avro body is wrapped into a Kafka message value, and unwrapped again.

`SingleObjectFraming` is the Avro single-object encoding (`C3 01`, the 8-byte little-endian
CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, then the body) and needs no
registry; the Confluent wire format is `exporter.avro.registry.ConfluentFraming`. Both satisfy
the `Framing` protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from exporter.avro.schema import SINGLE_OBJECT_HEADER_LEN, SINGLE_OBJECT_MARKER, AvroSchema, SchemaSet
from exporter.errors import EncodingError


class Framing(Protocol):
    """How an Avro body is wrapped into a Kafka message value, and unwrapped again."""

    name: str

    def encode(self, topic: str, schema: str, record: Mapping[str, Any]) -> bytes:
        """Frame `record` under schema `schema` (a `SCHEMA_FILES` key) for `topic`.

        May block on the first call per (topic, schema) to reach a registry; later calls never
        block. Raises `EncodingError` for a record that does not fit its schema, `SinkError`
        when a registry rejects the schema, `SinkUnavailable` when it cannot be reached.
        Deterministic: the same record always gives the same bytes.
        """
        ...

    def encode_object(self, topic: str, schema: str, obj: Any, body: bytes | None = None) -> bytes:
        """Like `encode` for a record object (attributes are the fields, see
        `AvroSchema.encode_object`); the fast path for billing records. `body`, when given, is
        `obj` already encoded with the current schema `schema` and is framed as it is.
        """
        ...

    def decode(self, data: bytes) -> dict[str, Any]:
        """Unwrap and decode a message value into a dict read with the current schema of the
        same name. Raises `EncodingError` for bytes that are not in this framing or carry an
        unknown schema. May block to fetch an unknown schema id from a registry.
        """
        ...

    def schema_of(self, data: bytes) -> str:
        """The full name of the writer schema of a framed message value."""
        ...


class SingleObjectFraming:
    """Avro single-object encoding: no registry, the fingerprint identifies the schema."""

    name = "single-object"

    def __init__(self, schemas: SchemaSet | None = None) -> None:
        self._schemas = schemas or SchemaSet.default()

    def encode(self, topic: str, schema: str, record: Mapping[str, Any]) -> bytes:
        s = self._schemas.get(schema)
        return s.header + s.encode(record)

    def encode_object(self, topic: str, schema: str, obj: Any, body: bytes | None = None) -> bytes:
        s = self._schemas.get(schema)
        return s.header + (s.encode_object(obj) if body is None else body)

    def _writer(self, data: bytes) -> AvroSchema:
        if len(data) < SINGLE_OBJECT_HEADER_LEN or data[:2] != SINGLE_OBJECT_MARKER:
            raise EncodingError("not an Avro single-object message (no C3 01 marker)")
        fp = int.from_bytes(data[2:SINGLE_OBJECT_HEADER_LEN], "little")
        writer = self._schemas.by_fingerprint(fp)
        if writer is None:
            raise EncodingError(f"unknown schema fingerprint {fp:016x} in single-object message")
        return writer

    def decode(self, data: bytes) -> dict[str, Any]:
        writer = self._writer(data)
        return self._schemas.reader_for(writer).decode(data[SINGLE_OBJECT_HEADER_LEN:], writer)

    def schema_of(self, data: bytes) -> str:
        return self._writer(data).fullname


def body_of(data: bytes) -> bytes:
    """The Avro body inside a framed value (single-object or Confluent), for content hashes."""
    if data[:2] == SINGLE_OBJECT_MARKER:
        return data[SINGLE_OBJECT_HEADER_LEN:]
    if data[:1] == b"\x00" and len(data) >= 5:
        return data[5:]
    raise EncodingError("not a framed Avro value (neither C3 01 nor Confluent magic byte 0)")
