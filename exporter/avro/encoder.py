"""The plain Avro binary encoder: one writer (a closure) per schema node, built per batch.

A record's writer reads each field (by key, or by attribute for record objects) and joins what
its fields' writers return; decimals become two's-complement big-endian bytes by `int.to_bytes`.
Writers are built per batch (`AvroSchema.encoder`), and a record's writer keeps the bytes of each
scalar field's values (`_record_writer`): a period's records repeat the same cluster, namespace,
org values, bounds and prices thousands of times, so most records are found whole in the memo by
C builtins. The memo lives and dies with the batch's writer, so nothing is shared between threads
or kept between periods.

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
        fields = list(schema["fields"] if only is None else only)
        getters = [_getter(f, self.attr) for f in fields]
        writers = [self.value(f["type"], ns) for f in fields]
        return _record_writer([f["name"] for f in fields], getters, writers,
                              [{} if _scalar(f["type"]) else None for f in fields], self.attr)

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
            return _decimal(int(schema["precision"]), int(schema.get("scale", 0)))
        if kind in PRIMITIVES:
            return self.primitive(kind, logical)
        if kind == "record":
            return self.record(schema, namespace)
        if kind == "array":
            return self.array(self.value(schema["items"], namespace))
        if kind == "map":
            return self.map(self.value(schema["values"], namespace), schema["values"] == "string")
        if kind == "enum":
            return self.enum(schema, namespace)
        raise UnsupportedSchema(f"type {kind}")

    @staticmethod
    def primitive(kind: str, logical: str | None) -> Writer:
        if kind in ("int", "long"):
            return _long(32 if kind == "int" else 64, logical)
        if kind == "string":
            return _string
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
    def map(value: Writer, of_strings: bool = False) -> Writer:
        def plain(c: Any) -> bytes:
            if not c:
                return b"\x00"
            parts = [_count(len(c))]
            for k, x in c.items():
                parts.append(_string(k))
                parts.append(value(x))
            parts.append(b"\x00")
            return b"".join(parts)

        if not of_strings:
            return plain
        # Maps of strings repeat (a workload's labels, the org label sources): their bytes are
        # kept by their items in order. Only strings equal strings, so a hit is what `plain`
        # would write.
        memo: dict[tuple[tuple[Any, Any], ...], bytes] = {}

        def write(c: Any) -> bytes:
            try:
                items = tuple(c.items())
                known = memo.get(items)
            except (AttributeError, TypeError):
                return plain(c)
            if known is None:
                known = memo[items] = plain(c)
            return known

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


_SCALARS = frozenset({"null", "boolean", "int", "long", "string", "enum"})


def _scalar(schema: Any) -> bool:
    """Whether values of this type are hashable scalars that a record writer may memoise:
    null, boolean, int, long, string, enum, decimal, or a union of those."""
    if isinstance(schema, list):
        return all(_scalar(b) for b in schema)
    if isinstance(schema, str):
        return schema in _SCALARS
    kind = schema["type"]
    if isinstance(kind, dict | list):
        return _scalar(kind)
    return kind in _SCALARS or (kind == "bytes" and schema.get("logicalType") == "decimal")


def _record_writer(names: Sequence[str], getters: Sequence[Callable[[Any], Any]],
                   writers: Sequence[Writer], scalar: Sequence[dict[Any, bytes] | None],
                   attr: bool) -> Writer:
    """The writer of a record's fields, with a memo of the bytes of each scalar field's values
    (`scalar`: the field's memo, or None for a field of another type).

    Slow path, the definition: each field read (`getters`), checked and written by its writer,
    the results joined in field order; the scalar fields' bytes are kept in their memo by
    value, and the tuple of their value types as validated.

    Fast path, the same bytes: every scalar field read at once (`attrgetter` or `itemgetter`)
    and looked up in its memo (`map(dict.get, ...)`), both in C. It is taken only when the
    value types are a combination validated before, so equal values of another type
    (`True == 1 == Decimal(1)`) never borrow bytes and still meet their writer's checks; a value
    not in its memo yet (an id, a quantity) is written by its writer and kept. Equal values of
    one type have equal bytes (a decimal's bytes are its value at the schema's scale), so a hit
    is exactly what the writer would return. Other fields (maps, arrays, records, bytes,
    floats) go through their writer every time.
    """
    keyed = [i for i, s in enumerate(scalar) if s is not None]
    rest = [i for i, s in enumerate(scalar) if s is None]
    if not keyed:
        def plain(datum: Any) -> bytes:
            return b"".join([put(get(datum)) for get, put in zip(getters, writers, strict=True)])

        return plain
    fetch = operator.attrgetter if attr else operator.itemgetter
    read: Callable[[Any], tuple[Any, ...]] = fetch(*[names[i] for i in keyed])
    if len(keyed) == 1:  # one name: the getter returns the value, not a 1-tuple
        one = fetch(names[keyed[0]])

        def read(datum: Any) -> tuple[Any, ...]:
            return (one(datum),)
    memos = [memo for memo in scalar if memo is not None]
    validated: set[tuple[type, ...]] = set()
    rest_fields = [(getters[i], writers[i]) for i in rest]
    # The parts are the keyed fields' bytes then the others'; `order` puts them in field order.
    position = {field: at for at, field in enumerate([*keyed, *rest])}
    order = operator.itemgetter(*[position[i] for i in range(len(names))])

    def slow(datum: Any) -> bytes:
        parts = [put(get(datum)) for get, put in zip(getters, writers, strict=True)]
        values = [getters[i](datum) for i in keyed]
        for memo, i, value in zip(memos, keyed, values, strict=True):
            memo[value] = parts[i]
        validated.add(tuple(map(type, values)))
        return b"".join(parts)

    def write(datum: Any) -> bytes:
        try:
            values = read(datum)
            parts = list(map(dict.get, memos, values))
        except (AttributeError, KeyError, TypeError):  # a field left out, an unhashable value
            return slow(datum)
        if tuple(map(type, values)) not in validated:
            return slow(datum)
        if None in parts:  # values not seen yet (ids, quantities): written and kept one by one
            at = parts.index(None)
            while True:
                i = keyed[at]
                parts[at] = memos[at][values[at]] = writers[i](values[at])
                try:
                    at = parts.index(None, at + 1)
                except ValueError:
                    break
        parts.extend([put(get(datum)) for get, put in rest_fields])
        joined: tuple[bytes, ...] | bytes = order(parts)
        return b"".join(joined) if isinstance(joined, tuple) else joined

    return write


def accepts_null(schema: Any) -> bool:
    """Whether a field of this type may be left out (it is then written as null)."""
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def record_writer(schema: Mapping[str, Any], attr: bool,
                  only: Sequence[Mapping[str, Any]] | None = None) -> Writer:
    """The writer `encode(datum) -> bytes` of a record schema (or of only some of its fields)."""
    return _Builder(attr=attr).record(schema, None, only)
