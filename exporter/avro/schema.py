"""Avro schemas: loading, Parsing Canonical Form, fingerprints, and `AvroSchema`.

The `.avsc` files under `schemas/` are the contract. They are read once, through the
`exporter/schemas` link so an installed wheel finds them too, and parsed once. Each
`AvroSchema` encodes through the plain encoder of `exporter.avro.encoder`; canonical form and
fingerprints are fastavro's (`fastavro.schema`), and decoding is fastavro's `schemaless_reader`.

Every library error is translated here into `exporter.errors.EncodingError` with one line that
names the schema, the record (its first field, e.g. `record_id`) and the field.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
import fastavro.schema

from exporter.avro.encoder import UnsupportedSchema, Writer, accepts_null, fullname, record_writer
from exporter.errors import EncodingError
from exporter.money import DecimalSpec

SCHEMA_FILES: Mapping[str, str] = {
    "billing_record": "billing_record.v1.avsc",
    "period_manifest": "period_manifest.v1.avsc",
    "checkpoint": "checkpoint.v1.avsc",
}
"""Schema key -> file under `schemas/`. The key is what `Framing.encode` takes."""

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10


# --------------------------------------------------------------------------------------------
# Parsing Canonical Form and fingerprints (Avro specification, "Schema Fingerprints")
# --------------------------------------------------------------------------------------------


def parsing_canonical_form(schema: Any) -> str:
    """The schema's Parsing Canonical Form (fastavro's): fullnames, only the attributes that
    affect parsing, no whitespace. `schema` is the JSON value of an `.avsc`."""
    return str(fastavro.schema.to_parsing_canonical_form(schema))


def fingerprint(schema: Any) -> int:
    """CRC-64-AVRO of the Parsing Canonical Form (what single-object encoding carries), as the
    unsigned integer whose 8 little-endian bytes follow `C3 01`."""
    digest = fastavro.schema.fingerprint(parsing_canonical_form(schema), "CRC-64-AVRO")
    return int.from_bytes(bytes.fromhex(digest), "little")


def single_object_header(schema: Any) -> bytes:
    """`C3 01` followed by the schema fingerprint, 8 bytes little-endian."""
    return SINGLE_OBJECT_MARKER + fingerprint(schema).to_bytes(8, "little")


# --------------------------------------------------------------------------------------------
# Loaded schemas
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """One parsed schema with everything derived from it once: canonical form, fingerprint,
    fastavro's parsed form (for decoding), the encoders and the decimal specs of top-level
    fields.
    """

    key: str
    text: str
    json: Mapping[str, Any]
    fullname: str
    canonical: str
    fingerprint: int
    parsed: Any
    decimals: Mapping[str, DecimalSpec]
    id_field: str

    @property
    def header(self) -> bytes:
        """The single-object header for this schema."""
        return SINGLE_OBJECT_MARKER + self.fingerprint.to_bytes(8, "little")

    def encoder(self, *, attr: bool = True) -> Writer:
        """A writer for one batch of values, e.g. a period's records: `encoder()(obj)` is the
        body of `obj`, read by attribute (`attr=False`: a dict keyed by field name). Equal
        strings, longs and decimals are encoded once per writer; drop it after the batch.

        The writer raises `EncodingError` naming the record and field when a value does not fit.
        """
        write = record_writer(self.json, attr)

        def encode(datum: Any) -> bytes:
            try:
                return write(datum)
            except EncodingError:
                raise
            except Exception as exc:
                raise self._explain(datum, exc, attr=attr) from exc

        return encode

    def encode(self, datum: Mapping[str, Any]) -> bytes:
        """The Avro binary body of `datum` (a dict keyed by field name). Never blocks.

        Raises `EncodingError` naming the record and field when the datum does not fit.
        """
        return self.encoder(attr=False)(datum)

    def encode_object(self, obj: Any) -> bytes:
        """Like `encode` for an object whose attributes are the fields (e.g. a record dataclass
        whose `to_avro()` would give the same dict); skips building the dict.
        """
        return self.encoder()(obj)

    def decode(self, body: bytes, writer: AvroSchema | None = None) -> dict[str, Any]:
        """Decode a body written with `writer` (default: this schema) into a dict read with this
        schema. Timestamps come back as aware UTC datetimes, decimals as `Decimal`.
        """
        try:
            value = fastavro.schemaless_reader(
                io.BytesIO(body), (writer or self).parsed,
                self.parsed if writer is not None and writer is not self else None,
            )
        except Exception as exc:
            raise EncodingError(f"cannot decode {self.fullname}: {_reason(exc)}") from exc
        if not isinstance(value, dict):
            raise EncodingError(f"cannot decode {self.fullname}: not a record")
        return value

    def _explain(self, datum: Any, exc: Exception, *, attr: bool) -> EncodingError:
        """Find the first field that fails on its own, for a message that names it."""
        ident = _field_of(datum, self.id_field, attr)
        who = f"{self.json['name']} {ident!s}" if isinstance(ident, str) and ident else self.json["name"]
        for fld in self.json["fields"]:
            name = fld["name"]
            missing = object()
            value = _field_of(datum, name, attr, missing)
            if value is missing and "default" not in fld and not accepts_null(fld["type"]):
                return EncodingError(f"{who}: field {name!r} is missing")
            try:
                record_writer(self.json, attr, [fld])(datum)
            except Exception as field_exc:
                return EncodingError(f"{who}: field {name!r}: {_reason(field_exc)}")
        return EncodingError(f"{who}: {_reason(exc)}")


def _field_of(datum: Any, name: str, attr: bool, missing: Any = None) -> Any:
    if attr:
        return getattr(datum, name, missing)
    if isinstance(datum, Mapping):
        return datum.get(name, missing)
    return missing


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, AttributeError) and "encode" in text:
        return "expected string"
    if isinstance(exc, KeyError):
        return f"missing key {text}"
    return (text or type(exc).__name__)[:200]


def _decimal_specs(schema: Mapping[str, Any]) -> dict[str, DecimalSpec]:
    specs: dict[str, DecimalSpec] = {}
    for fld in schema["fields"]:
        t = fld["type"]
        branches = t if isinstance(t, list) else [t]
        for b in branches:
            if isinstance(b, dict) and b.get("logicalType") == "decimal":
                specs[fld["name"]] = DecimalSpec(int(b["precision"]), int(b.get("scale", 0)))
    return specs


def nested_decimal_specs(schema: AvroSchema, field_name: str) -> dict[str, DecimalSpec]:
    """Decimal specs of the record inside an array/record field (e.g. manifest `totals`)."""
    t: Any = next(f["type"] for f in schema.json["fields"] if f["name"] == field_name)
    while isinstance(t, dict) and t.get("type") in ("array", "map"):
        t = t.get("items", t.get("values"))
    if not (isinstance(t, dict) and t.get("type") == "record"):
        raise KeyError(f"{field_name} is not a record, array of records or map of records")
    return _decimal_specs(t)


def build_schema(key: str, text: str) -> AvroSchema:
    """Parse one `.avsc` text and derive everything `AvroSchema` holds.

    Raises `EncodingError` when the text is not a valid Avro record schema.
    """
    try:
        doc = json.loads(text)
        parsed = fastavro.parse_schema(doc)
    except Exception as exc:
        raise EncodingError(f"schema {key}: not a valid Avro schema: {_reason(exc)}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "record":
        raise EncodingError(f"schema {key}: top level must be a record")
    canonical = parsing_canonical_form(doc)
    try:
        record_writer(doc, attr=True)
    except UnsupportedSchema as exc:
        raise EncodingError(f"schema {key}: the encoder does not support it: {exc}") from exc
    first = doc["fields"][0]["name"] if doc["fields"] else ""
    return AvroSchema(
        key=key, text=text, json=doc, fullname=fullname(doc["name"], doc.get("namespace")),
        canonical=canonical, fingerprint=fingerprint(doc), parsed=parsed,
        decimals=_decimal_specs(doc), id_field=first,
    )


def schema_text(key: str) -> str:
    """The `.avsc` text of a current schema, as shipped in the package."""
    try:
        name = SCHEMA_FILES[key]
    except KeyError:
        raise EncodingError(f"unknown schema {key!r}; known: {', '.join(SCHEMA_FILES)}") from None
    return (resources.files("exporter") / "schemas" / name).read_text(encoding="utf-8")


@cache
def load_schema(key: str) -> AvroSchema:
    """The current schema `key` (see `SCHEMA_FILES`), loaded and compiled once per process."""
    return build_schema(key, schema_text(key))


class SchemaSet:
    """Schemas known by fingerprint: the current ones, plus any older released versions added
    so that old messages still decode (read with the current schema of the same full name).
    """

    def __init__(self, schemas: Iterable[AvroSchema] = ()) -> None:
        self._by_fp: dict[int, AvroSchema] = {}
        self._by_name: dict[str, AvroSchema] = {}
        self._by_key: dict[str, AvroSchema] = {}
        for s in schemas:
            self.add(s, current=True)

    @classmethod
    def default(cls) -> SchemaSet:
        """The current schemas of `SCHEMA_FILES`."""
        return cls(load_schema(k) for k in SCHEMA_FILES)

    def add(self, schema: AvroSchema, *, current: bool = False) -> None:
        """Know `schema` by fingerprint; `current` makes it the reader for its full name."""
        self._by_fp[schema.fingerprint] = schema
        if current or schema.fullname not in self._by_name:
            self._by_name[schema.fullname] = schema
            self._by_key[schema.key] = schema

    def get(self, key: str) -> AvroSchema:
        """The current schema for a `SCHEMA_FILES` key or a full name."""
        found = self._by_key.get(key) or self._by_name.get(key)
        if found is None:
            raise EncodingError(f"unknown schema {key!r}")
        return found

    def by_fingerprint(self, fp: int) -> AvroSchema | None:
        return self._by_fp.get(fp)

    def reader_for(self, writer: AvroSchema) -> AvroSchema:
        return self._by_name.get(writer.fullname, writer)
