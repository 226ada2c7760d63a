"""Avro schemas, the binary encoder, and the single-object framing.

The `.avsc` files under `schemas/` are the contract. They are read once, through the
`exporter/schemas` link so an installed wheel finds them too, and parsed once.

Encoding goes through one plain encoder built from each schema at load time: a writer
(closure) per schema node, with decimals turned into two's-complement big-endian bytes by
`int.to_bytes`. fastavro's `schemaless_writer` is its test oracle, byte for byte on random
records; it is not a production fallback. Unlike fastavro the encoder also checks decimal
precision and scale: fastavro accepts 1234567890123.5 under precision 18, and the reference
`avro` package rescales decimals wrongly (style rule A9.4). Canonical form and fingerprints
are fastavro's (`fastavro.schema`); decoding is fastavro's `schemaless_reader`.

Framings wrap a body for a Kafka message value. `SingleObjectFraming` is the Avro
single-object encoding (`C3 01`, the 8-byte little-endian CRC-64-AVRO fingerprint of the
schema's Parsing Canonical Form, then the body) and needs no registry; the Confluent wire
format lives in `exporter.registry`. Both satisfy the `Framing` protocol.

Every library error is translated here into `exporter.errors.EncodingError` with one line that
names the schema, the record (its first field, e.g. `record_id`) and the field.
"""

from __future__ import annotations

import io
import json
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any, Protocol

import fastavro
import fastavro.schema

from exporter.errors import EncodingError
from exporter.money import CONTEXT, DecimalSpec

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

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


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
# Immutable maps
# --------------------------------------------------------------------------------------------


class FrozenMap(dict[str, Any]):
    """A dict that refuses changes: the label maps that records and their ids share."""

    __slots__ = ()

    def _immutable(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is immutable")

    __setitem__ = __delitem__ = __ior__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy would otherwise rebuild it item by item through __setitem__.
        return (type(self), (list(self.items()),))


# --------------------------------------------------------------------------------------------
# Decimals
# --------------------------------------------------------------------------------------------


def _unscaled(value: Any, scale: int, precision: int) -> int:
    """The unscaled integer of an exact decimal; the encoder's slow path and its error text."""
    if not isinstance(value, Decimal):
        raise TypeError(f"expected Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    scaled = CONTEXT.scaleb(value, scale)
    n = int(scaled)
    if scaled != n:
        raise ValueError(f"{value} has more than {scale} decimals (quantize it first)")
    if not -(10**precision) < n < 10**precision:
        raise ValueError(f"{value} has more than {precision} digits at scale {scale}")
    return n


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------
#
# One writer per schema node: plain closures, no generated code. A record's writer reads each
# field (by key, or by attribute for record objects) and joins what its fields' writers return.
# Writers are built per batch (`AvroSchema.encoder`), and each string, long and decimal writer
# keeps the bytes it wrote per value: a period's records repeat the same cluster, namespace, org
# values, bounds and prices thousands of times. The memo lives and dies with the batch's
# writer, so nothing is shared between threads or kept between periods. fastavro's
# `schemaless_writer` is the oracle it is tested against, byte for byte; unlike fastavro it
# also refuses a decimal with more digits than the schema's precision or scale.

Writer = Callable[[Any], bytes]
_INT32 = 1 << 31
_INT64 = 1 << 63
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_pack_float = struct.Struct("<f").pack
_pack_double = struct.Struct("<d").pack


def varint(n: int) -> bytes:
    """The Avro variable-length encoding of a non-negative integer (zig-zag is the caller's)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> int:
    return n << 1 if n >= 0 else ((-n) << 1) - 1


# The varints of 0..127: one byte each, the common case of lengths and counts.
_ONE_BYTE: tuple[bytes, ...] = tuple(bytes((i,)) for i in range(128))


def _count(n: int) -> bytes:
    """A non-negative length or block count."""
    z = n << 1
    return _ONE_BYTE[z] if z < 128 else varint(z)


def _as_int(v: Any, logical: str | None) -> int:
    if isinstance(v, datetime) and logical == "timestamp-millis":
        if v.tzinfo is None:
            raise TypeError("naive datetime for timestamp-millis (give an aware UTC datetime)")
        delta = v - _EPOCH
        # Same arithmetic as fastavro, so both agree on sub-millisecond input.
        return (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise TypeError(f"expected int, got {type(v).__name__}")


def _long(bits: int, logical: str | None) -> Writer:
    limit = _INT32 if bits == 32 else _INT64
    kind = "int" if bits == 32 else "long"

    def write(v: Any) -> bytes:
        n = v if type(v) is int else _as_int(v, logical)
        if not -limit <= n < limit:
            raise ValueError(f"{n} does not fit an Avro {kind}")
        return varint(_zigzag(n))

    return write


def _string(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"expected string, got {type(v).__name__}")
    b = v.encode()
    return _count(len(b)) + b


def _bytes(v: Any) -> bytes:
    if not isinstance(v, bytes | bytearray):
        raise TypeError(f"expected bytes, got {type(v).__name__}")
    return _count(len(v)) + bytes(v)


def _boolean(v: Any) -> bytes:
    if v is True:
        return b"\x01"
    if v is False:
        return b"\x00"
    raise TypeError(f"expected boolean, got {type(v).__name__}")


def _null(v: Any) -> bytes:
    if v is None:
        return b""
    raise TypeError(f"expected null, got {type(v).__name__}")


def _decimal(precision: int, scale: int) -> Writer:
    def write(v: Any) -> bytes:
        n = _unscaled(v, scale, precision)
        # fastavro sizes by the magnitude's bit length plus a sign bit, rounded up to bytes
        # (a negative number's bit_length is its magnitude's).
        raw = n.to_bytes((n.bit_length() + 8) >> 3, "big", signed=True)
        return _count(len(raw)) + raw

    return write


_PRIMITIVE_WRITERS: Mapping[str, Writer] = {
    "bytes": _bytes, "boolean": _boolean, "null": _null,
    "float": _pack_float, "double": _pack_double,
}


class _Unsupported(Exception):
    """The schema uses a construct the encoder does not implement (the shipped ones do not)."""


def _getter(fld: Mapping[str, Any], attr: bool) -> Callable[[Any], Any]:
    """How a record writer reads one field: missing fields are written as their default (or
    null), as fastavro does; a required field that is missing raises."""
    name = fld["name"]
    if "default" in fld or _accepts_null(fld["type"]):
        default = fld.get("default")
        if attr:
            return lambda datum: getattr(datum, name, default)
        return lambda datum: datum.get(name, default)
    return operator.attrgetter(name) if attr else operator.itemgetter(name)


def _memoised(plain: Writer, accept: Callable[[Any], bool]) -> Writer:
    """`plain`, keeping the bytes it wrote for each value `accept` admits. `accept` admits one
    exact type, so equal values of other types (1 == Decimal(1) == True) never share bytes and
    still go through `plain`'s checks."""
    memo: dict[Any, bytes] = {}

    def write(v: Any) -> bytes:
        if not accept(v):
            return plain(v)
        b = memo.get(v)
        if b is None:
            b = memo[v] = plain(v)
        return b

    return write


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_finite_decimal(v: Any) -> bool:
    return type(v) is Decimal and v.is_finite()


@dataclass
class _Builder:
    """Builds the writer of a schema for one batch; `named` guards against named types used
    twice."""

    attr: bool
    named: set[str] = field(default_factory=set)

    def record(self, schema: Mapping[str, Any], namespace: str | None,
               only: Sequence[Mapping[str, Any]] | None = None) -> Writer:
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        if full in self.named and only is None:
            raise _Unsupported(f"named type {full} used twice")
        self.named.add(full)
        ns = full.rpartition(".")[0] or None
        fields = [(_getter(f, self.attr), self.value(f["type"], ns))
                  for f in (schema["fields"] if only is None else only)]

        def write(datum: Any) -> bytes:
            return b"".join([put(get(datum)) for get, put in fields])

        return write

    def value(self, schema: Any, namespace: str | None) -> Writer:
        if isinstance(schema, list):
            return self.union(schema, namespace)
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return self.primitive(schema, None)
            raise _Unsupported(f"reference to named type {schema}")
        kind = schema["type"]
        logical = schema.get("logicalType")
        if isinstance(kind, dict | list):
            return self.value(kind, namespace)
        if kind == "bytes" and logical == "decimal":
            return _memoised(_decimal(int(schema["precision"]), int(schema.get("scale", 0))),
                             _is_finite_decimal)
        if kind in _PRIMITIVES:
            return self.primitive(kind, logical)
        if kind == "record":
            return self.record(schema, namespace)
        if kind == "array":
            return self.array(self.value(schema["items"], namespace))
        if kind == "map":
            return self.map(self.value(schema["values"], namespace))
        if kind == "enum":
            return self.enum(schema, namespace)
        raise _Unsupported(f"type {kind}")

    @staticmethod
    def primitive(kind: str, logical: str | None) -> Writer:
        if kind in ("int", "long"):
            return _memoised(_long(32 if kind == "int" else 64, logical), _is_int)
        if kind == "string":
            return _memoised(_string, _is_str)
        return _PRIMITIVE_WRITERS[kind]

    def union(self, branches: list[Any], namespace: str | None) -> Writer:
        kinds = [b if isinstance(b, str) else b.get("type") for b in branches]
        if len(branches) != 2 or "null" not in kinds:
            raise _Unsupported("union other than [null, T]")
        null_at = kinds.index("null")
        null_tag, value_tag = _count(null_at), _count(1 - null_at)
        inner = self.value(branches[1 - null_at], namespace)

        def write(v: Any) -> bytes:
            return null_tag if v is None else value_tag + inner(v)

        return write

    @staticmethod
    def array(item: Writer) -> Writer:
        def write(c: Any) -> bytes:
            if not c:
                return b"\x00"
            return b"".join([_count(len(c)), *(item(x) for x in c), b"\x00"])

        return write

    @staticmethod
    def map(value: Writer) -> Writer:
        def write(c: Any) -> bytes:
            if not c:
                return b"\x00"
            parts = [_count(len(c))]
            for k, x in c.items():
                parts.append(_string(k))
                parts.append(value(x))
            parts.append(b"\x00")
            return b"".join(parts)

        return write

    def enum(self, schema: Mapping[str, Any], namespace: str | None) -> Writer:
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        if full in self.named:
            raise _Unsupported(f"named type {full} used twice")
        self.named.add(full)
        table = {s: _count(i) for i, s in enumerate(schema["symbols"])}

        def write(v: Any) -> bytes:
            return table[v]

        return write


def _accepts_null(schema: Any) -> bool:
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _compile(schema: Mapping[str, Any], attr: bool, only: Sequence[Mapping[str, Any]] | None = None
             ) -> Writer:
    """The writer `encode(datum) -> bytes` of a record schema (or of only some of its fields)."""
    return _Builder(attr=attr).record(schema, None, only)


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
        write = _compile(self.json, attr)

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
            if value is missing and "default" not in fld and not _accepts_null(fld["type"]):
                return EncodingError(f"{who}: field {name!r} is missing")
            try:
                _compile(self.json, attr, [fld])(datum)
            except Exception as field_exc:
                return EncodingError(f"{who}: field {name!r}: {_reason(field_exc)}")
        return EncodingError(f"{who}: {_reason(exc)}")


def _field_of(datum: Any, name: str, attr: bool, missing: Any = None) -> Any:
    if attr:
        return getattr(datum, name, missing)
    if isinstance(datum, Mapping):
        return datum.get(name, missing)
    return missing


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!s:.40}" if isinstance(value, Decimal | int | float) \
        else type(value).__name__


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
        _compile(doc, attr=True)
    except _Unsupported as exc:
        raise EncodingError(f"schema {key}: the encoder does not support it: {exc}") from exc
    first = doc["fields"][0]["name"] if doc["fields"] else ""
    return AvroSchema(
        key=key, text=text, json=doc, fullname=_fullname(doc["name"], doc.get("namespace")),
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


# --------------------------------------------------------------------------------------------
# Framings
# --------------------------------------------------------------------------------------------


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
