"""The plain Avro binary encoder: one writer (a closure) per schema node, built per batch.

A record's writer reads each field (by key, or by attribute for record objects) and joins what
its fields' writers return; decimals become two's-complement big-endian bytes by `int.to_bytes`.
Writers are built per batch (`AvroSchema.encoder`), and each string, long and decimal writer
keeps the bytes it wrote per value: a period's records repeat the same cluster, namespace, org
values, bounds and prices thousands of times. The memo lives and dies with the batch's writer,
so nothing is shared between threads or kept between periods.

fastavro's `schemaless_writer` is the test oracle, byte for byte on random records; it is not a
production fallback. Unlike fastavro the encoder refuses a decimal with more digits than the
schema's precision or scale: fastavro accepts 1234567890123.5 under precision 18, and the
reference `avro` package rescales decimals wrongly (style rule A9.4). This module needs no Avro
library at all.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from exporter.money import CONTEXT

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def fullname(name: str, namespace: str | None) -> str:
    """The full name of a named type declared as `name` within `namespace`."""
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


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


Writer = Callable[[Any], bytes]
"""Encodes one value of a schema node into its Avro binary bytes."""
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


class UnsupportedSchema(Exception):
    """The schema uses a construct the encoder does not implement (the shipped ones do not)."""


def _getter(fld: Mapping[str, Any], attr: bool) -> Callable[[Any], Any]:
    """How a record writer reads one field: missing fields are written as their default (or
    null), as fastavro does; a required field that is missing raises."""
    name = fld["name"]
    if "default" in fld or accepts_null(fld["type"]):
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
        full = fullname(schema["name"], schema.get("namespace", namespace))
        if full in self.named and only is None:
            raise UnsupportedSchema(f"named type {full} used twice")
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
            if schema in PRIMITIVES:
                return self.primitive(schema, None)
            raise UnsupportedSchema(f"reference to named type {schema}")
        kind = schema["type"]
        logical = schema.get("logicalType")
        if isinstance(kind, dict | list):
            return self.value(kind, namespace)
        if kind == "bytes" and logical == "decimal":
            return _memoised(_decimal(int(schema["precision"]), int(schema.get("scale", 0))),
                             _is_finite_decimal)
        if kind in PRIMITIVES:
            return self.primitive(kind, logical)
        if kind == "record":
            return self.record(schema, namespace)
        if kind == "array":
            return self.array(self.value(schema["items"], namespace))
        if kind == "map":
            return self.map(self.value(schema["values"], namespace))
        if kind == "enum":
            return self.enum(schema, namespace)
        raise UnsupportedSchema(f"type {kind}")

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
            raise UnsupportedSchema("union other than [null, T]")
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
        full = fullname(schema["name"], schema.get("namespace", namespace))
        if full in self.named:
            raise UnsupportedSchema(f"named type {full} used twice")
        self.named.add(full)
        table = {s: _count(i) for i, s in enumerate(schema["symbols"])}

        def write(v: Any) -> bytes:
            return table[v]

        return write


def accepts_null(schema: Any) -> bool:
    """Whether a field of this type may be left out (it is then written as null)."""
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def record_writer(schema: Mapping[str, Any], attr: bool,
                  only: Sequence[Mapping[str, Any]] | None = None) -> Writer:
    """The writer `encode(datum) -> bytes` of a record schema (or of only some of its fields)."""
    return _Builder(attr=attr).record(schema, None, only)
