"""Confluent wire format through a Schema Registry (the `confluent` framing).

A value is `00`, the 4-byte big-endian schema id, then the Avro body. Subjects follow the
TopicNameStrategy (`<topic>-value`). The first value per (topic, schema) goes through
confluent-kafka's `AvroSerializer`, which registers the schema (or, with auto-registration
off, looks it up) and returns the framed bytes; the id is kept, the serializer's body is checked
against ours, and every later value is framed with our encoder (the same bytes, without a
registry round trip or the serializer's per-value work). Decoding resolves ids through
`SchemaRegistryClient.get_schema` and reads with the current schema of the same full name.

Before its first registration under a subject, the framing sets the subject's compatibility
level (`kafka.schema_registry.compatibility`, BACKWARD_TRANSITIVE by default) unless the subject
already has it: `GET /config/{subject}`, then `PUT` when it differs. A registry that refuses the
level (an authorizer's 403, a read-only subject's 422) is reported in one warning and
registration goes on: the level guards future schema changes, not this one.

Registry answers become exporter errors at this boundary: 409 (incompatible schema), 401/403,
a schema missing with auto-registration off, 422 become `SinkError`; 408, 429, 5xx and
transport failures become `SinkUnavailable`. Messages are one line and never carry credentials.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from exporter.avro.schema import AvroSchema, SchemaSet, build_schema
from exporter.config import SchemaRegistryConfig
from exporter.errors import ConfigError, EncodingError, ExporterError, SinkError, SinkUnavailable

# Named for the concern, not the module path: log filters and tests select it by this name.
log = logging.getLogger("exporter.registry")
MAGIC = b"\x00"
HEADER_LEN = 5


def redact_url(url: str) -> str:
    """`url` without user info, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def registry_client(url: str, *, user_info: str | None = None, ca_location: Path | None = None,
                    timeout: float = 10.0, max_retries: int = 2) -> SchemaRegistryClient:
    """A `SchemaRegistryClient` for `url` with optional basic auth (`user:password`).

    Raises `ConfigError` (naming the setting, never its value) for a malformed URL or user info.
    """
    conf: dict[str, Any] = {"url": url, "timeout": timeout, "max.retries": max_retries}
    if user_info is not None:
        if ":" not in user_info:
            raise ConfigError("kafka.schema_registry.basic_auth_user_info: expected user:password")
        conf["basic.auth.user.info"] = user_info
    if ca_location is not None:
        conf["ssl.ca.location"] = str(ca_location)
    try:
        return SchemaRegistryClient(conf)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"kafka.schema_registry: {str(exc).splitlines()[0]}") from exc


def subject_for(topic: str) -> str:
    """TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"


class ConfluentFraming:
    """Confluent wire format (`00` + schema id + body); satisfies `exporter.avro.Framing`.

    Thread-safe. `encode` blocks on the registry only the first time per (topic, schema).
    """

    name = "confluent"

    def __init__(self, client: SchemaRegistryClient, *, url: str, auto_register: bool = True,
                 schemas: SchemaSet | None = None,
                 compatibility: str | None = "BACKWARD_TRANSITIVE") -> None:
        self._client = client
        self._url = redact_url(url)
        self._auto_register = auto_register
        self._compatibility = compatibility if auto_register else None
        self._levels_checked: set[str] = set()
        self._schemas = schemas or SchemaSet.default()
        self._prefixes: dict[tuple[str, str], bytes] = {}
        self._by_id: dict[int, tuple[AvroSchema, AvroSchema]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: SchemaRegistryConfig, schemas: SchemaSet | None = None,
                    *, timeout: float = 10.0) -> ConfluentFraming:
        """Build the framing from the `kafka.schema_registry` config section."""
        client = registry_client(config.url, user_info=config.resolved_user_info(),
                                 ca_location=config.ca_location, timeout=timeout)
        return cls(client, url=config.url, auto_register=config.auto_register, schemas=schemas,
                   compatibility=config.compatibility)

    # -- encoding ------------------------------------------------------------------------

    def encode(self, topic: str, schema: str, record: Mapping[str, Any]) -> bytes:
        s = self._schemas.get(schema)
        body = s.encode(record)
        prefix = self._prefixes.get((topic, s.key)) or self._first(topic, s, record, body)
        return prefix + body

    def encode_object(self, topic: str, schema: str, obj: Any, body: bytes | None = None) -> bytes:
        s = self._schemas.get(schema)
        if body is None:
            body = s.encode_object(obj)
        prefix = self._prefixes.get((topic, s.key)) or self._first(topic, s, obj.to_avro(), body)
        return prefix + body

    def _first(self, topic: str, s: AvroSchema, record: Mapping[str, Any], body: bytes) -> bytes:
        with self._lock:
            cached = self._prefixes.get((topic, s.key))
            if cached is not None:
                return cached
            serializer = AvroSerializer(
                self._client, s.text,
                # TopicNameStrategy pinned: the library default also queries subject
                # associations first, and our subject must be exactly `<topic>-value`.
                conf={"auto.register.schemas": self._auto_register, "normalize.schemas": False,
                      "subject.name.strategy.type": "TOPIC"},
            )
            subject = subject_for(topic)
            self._ensure_level(subject, s.fullname)
            try:
                framed = serializer(dict(record), SerializationContext(topic, MessageField.VALUE))
            except Exception as exc:
                raise self._translate(exc, subject, s.fullname) from exc
            if framed is None or framed[:1] != MAGIC or len(framed) < HEADER_LEN:
                raise EncodingError(f"{s.fullname}: serializer returned no Confluent frame")
            if framed[HEADER_LEN:] != body:
                raise EncodingError(
                    f"{s.fullname}: our encoder and AvroSerializer disagree on "
                    f"{s.id_field} {record.get(s.id_field)!s:.64}; not publishing"
                )
            prefix = bytes(framed[:HEADER_LEN])
            self._prefixes[(topic, s.key)] = prefix
            return prefix

    def schema_id(self, topic: str, schema: str) -> int:
        """Register (or, with auto-registration off, look up) `schema` under the topic's
        subject and return its id; for a fail-fast check at startup. Blocks on the registry.
        """
        s = self._schemas.get(schema)
        subject = subject_for(topic)
        candidate = Schema(s.text, "AVRO")
        with self._lock:
            self._ensure_level(subject, s.fullname)
        try:
            if self._auto_register:
                return int(self._client.register_schema(subject, candidate))
            found = self._client.lookup_schema(subject, candidate).schema_id
        except Exception as exc:
            raise self._translate(exc, subject, s.fullname) from exc
        if found is None:
            raise SinkError(f"schema registry at {self._url} returned no id for {subject}")
        return int(found)

    def _ensure_level(self, subject: str, what: str) -> None:
        """Give `subject` the configured compatibility level, once per subject; hold the lock.

        Raises what `_translate` makes of a registry that is unreachable, unavailable or
        rejects the credentials (registration would fail the same way); any other refusal is
        one warning, and the subject is not asked again by this process.
        """
        wanted = self._compatibility
        if wanted is None or subject in self._levels_checked:
            return
        current: str | None
        try:
            current = str(self._client.get_compatibility(subject))
        except Exception as exc:
            current = self._level_unknown(exc, subject, what)
        if current != wanted:
            try:
                self._client.set_compatibility(subject, wanted)
                log.info("schema registry subject compatibility set", extra={
                    "subject": subject, "compatibility": wanted, "previous": current or "global"})
            except Exception as exc:
                self._refused(exc, subject, what, current)
        self._levels_checked.add(subject)

    def _level_unknown(self, exc: Exception, subject: str, what: str) -> str | None:
        """None for a subject without a level of its own (or unreadable); raises otherwise."""
        if isinstance(exc, SchemaRegistryError) and exc.http_status_code in (403, 404):
            return None
        raise self._translate(exc, subject, what) from exc

    def _refused(self, exc: Exception, subject: str, what: str, current: str | None) -> None:
        status = exc.http_status_code if isinstance(exc, SchemaRegistryError) else None
        if status is None or status in (401, 408, 429) or status >= 500:
            raise self._translate(exc, subject, what) from exc
        assert isinstance(exc, SchemaRegistryError)
        detail = (str(exc.error_message or "").splitlines() or [""])[0][:160]
        if current is None:
            try:
                current = f"{self._client.get_compatibility()} (global)"
            except Exception:
                current = "unknown"
        log.warning("schema registry refused the subject compatibility", extra={
            "registry": self._url, "subject": subject, "compatibility": self._compatibility,
            "current_compatibility": current, "status": status,
            "error": f"HTTP {status} (code {exc.error_code}): {detail}"})

    # -- decoding ------------------------------------------------------------------------

    def _writer(self, data: bytes) -> tuple[AvroSchema, AvroSchema]:
        if len(data) < HEADER_LEN or data[:1] != MAGIC:
            raise EncodingError("not a Confluent-framed value (no magic byte 0)")
        schema_id = int.from_bytes(data[1:HEADER_LEN], "big")
        found = self._by_id.get(schema_id)
        if found is not None:
            return found
        try:
            registered = self._client.get_schema(schema_id)
        except Exception as exc:
            raise self._translate(exc, f"schema id {schema_id}", f"schema id {schema_id}") from exc
        if registered.schema_type not in (None, "AVRO") or registered.schema_str is None:
            raise EncodingError(f"schema id {schema_id} is not an Avro schema")
        writer = build_schema(f"registry:{schema_id}", registered.schema_str)
        pair = (writer, self._schemas.reader_for(writer))
        self._by_id[schema_id] = pair
        return pair

    def decode(self, data: bytes) -> dict[str, Any]:
        writer, reader = self._writer(data)
        return reader.decode(data[HEADER_LEN:], writer)

    def schema_of(self, data: bytes) -> str:
        return self._writer(data)[0].fullname

    # -- errors --------------------------------------------------------------------------

    def _translate(self, exc: Exception, subject: str, what: str) -> ExporterError:
        if isinstance(exc, ExporterError):
            return exc
        where = f"schema registry at {self._url}"
        if isinstance(exc, SchemaRegistryError):
            status, code = exc.http_status_code, exc.error_code
            detail = (str(exc.error_message or "").splitlines() or [""])[0][:160]
            if status == 409:
                return SinkError(f"{where} rejected {what} for subject {subject}: incompatible "
                                 f"with the registered versions under its compatibility level "
                                 f"(HTTP 409)")
            if status in (401, 403):
                return SinkError(f"{where} refused access (HTTP {status}); check "
                                 f"kafka.schema_registry.basic_auth_user_info")
            if status == 404 and code in (40401, 40403):
                if subject.startswith("schema id"):
                    return EncodingError(f"{where} does not know {subject}")
                return SinkError(f"{what} is not registered under subject {subject} and "
                                 f"auto-registration is off (HTTP 404, code {code})")
            if status == 422:
                return SinkError(f"{where} rejected {what} as invalid: {detail} (HTTP 422)")
            if status in (408, 429) or status >= 500:
                return SinkUnavailable(f"{where} is unavailable: HTTP {status} {detail}".rstrip())
            return SinkError(f"{where} answered HTTP {status} (code {code}) for {subject}: {detail}")
        if isinstance(exc, ValueError | TypeError):
            text = str(exc).strip()
            return EncodingError(f"{what}: {text.splitlines()[0][:200] if text else type(exc).__name__}")
        if _tls_failure(exc):
            return SinkError(f"{where}: TLS certificate verification failed; set "
                             f"kafka.schema_registry.ca_location to the CA that signed it")
        return SinkUnavailable(f"{where} unreachable: {type(exc).__name__}")


def _tls_failure(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a certificate verification failure."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
