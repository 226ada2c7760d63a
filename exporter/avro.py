"""Avro schemas, the binary encoder, and the single-object framing.

The `.avsc` files under `schemas/` are the contract. They are read once, through the
`exporter/schemas` link so an installed wheel finds them too, and parsed once.

Encoding goes through an encoder generated from each schema at load time: one function per
record type that binds the fields to locals and joins their parts, zig-zag varints from lookup
tables, memoised repeated strings and timestamps, and decimals turned into two's-complement
big-endian bytes with `int.to_bytes`. Its output is byte-for-byte what
fastavro's `schemaless_writer` produces for the same valid datum (tests check this on random
records), about three times faster. Unlike both libraries it also checks decimal precision and
scale: fastavro accepts 1234567890123.5 under precision 18, and the reference `avro` package
rescales decimals wrongly (style rule A9.4).

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
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any, Protocol

import fastavro

from exporter.errors import EncodingError

SCHEMA_FILES: Mapping[str, str] = {
    "billing_record": "billing_record.v1.avsc",
    "period_manifest": "period_manifest.v1.avsc",
    "checkpoint": "checkpoint.v1.avsc",
}
"""Schema key -> file under `schemas/`. The key is what `Framing.encode` takes."""

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10
ROUNDING = ROUND_HALF_EVEN
"""The one rounding mode for every quantity and amount (banker's rounding: no bias in sums)."""

# A context wide enough that scaling any sane decimal by 10**scale is exact.
_EXACT = Context(prec=120, Emax=999_999, Emin=-999_999)


# --------------------------------------------------------------------------------------------
# Parsing Canonical Form and CRC-64-AVRO (Avro specification, "Schema Fingerprints")
# --------------------------------------------------------------------------------------------

CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The 64-bit Rabin fingerprint the Avro spec calls CRC-64-AVRO, as an unsigned int."""
    fp = CRC64_EMPTY
    table = _CRC64_TABLE
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def parsing_canonical_form(schema: Any) -> str:
    """The schema's Parsing Canonical Form: fullnames, only the attributes that affect parsing
    (`name`, `type`, `fields`, `symbols`, `items`, `values`, `size`) in that order, no
    whitespace. Logical types, docs, defaults and aliases are dropped. `schema` is the JSON
    value (dict, list or str) of an `.avsc`.
    """
    defined: set[str] = set()

    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    def walk(s: Any, namespace: str | None) -> str:
        if isinstance(s, list):
            return "[" + ",".join(walk(branch, namespace) for branch in s) + "]"
        if isinstance(s, str):
            if s in _PRIMITIVES:
                return q(s)
            return q(_fullname(s, namespace))
        if not isinstance(s, dict):
            raise ValueError(f"not an Avro schema: {s!r}")
        kind = s["type"]
        if isinstance(kind, dict | list):
            return walk(kind, namespace)
        if kind in _PRIMITIVES:
            return q(kind)
        if kind in ("record", "error", "enum", "fixed"):
            ns = s.get("namespace", namespace)
            name = _fullname(s["name"], ns)
            ns = name.rpartition(".")[0] or None
            defined.add(name)
            if kind == "enum":
                symbols = ",".join(q(sym) for sym in s["symbols"])
                return f'{{"name":{q(name)},"type":"enum","symbols":[{symbols}]}}'
            if kind == "fixed":
                return f'{{"name":{q(name)},"type":"fixed","size":{int(s["size"])}}}'
            fields = ",".join(
                f'{{"name":{q(f["name"])},"type":{walk(f["type"], ns)}}}' for f in s["fields"]
            )
            return f'{{"name":{q(name)},"type":"record","fields":[{fields}]}}'
        if kind == "array":
            return f'{{"type":"array","items":{walk(s["items"], namespace)}}}'
        if kind == "map":
            return f'{{"type":"map","values":{walk(s["values"], namespace)}}}'
        # A reference to a named type written as {"type": "Name"}.
        return q(_fullname(kind, namespace))

    return walk(schema, None)


def fingerprint(schema: Any) -> int:
    """CRC-64-AVRO of the Parsing Canonical Form (what single-object encoding carries)."""
    return crc64_avro(parsing_canonical_form(schema).encode("utf-8"))


def single_object_header(schema: Any) -> bytes:
    """`C3 01` followed by the schema fingerprint, 8 bytes little-endian."""
    return SINGLE_OBJECT_MARKER + fingerprint(schema).to_bytes(8, "little")


# --------------------------------------------------------------------------------------------
# Immutable maps
# --------------------------------------------------------------------------------------------


class FrozenMap(dict[str, Any]):
    """A dict that refuses changes. The encoder may reuse the bytes it last wrote for the
    same FrozenMap object, which is only sound because it cannot change in between."""

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


@dataclass(frozen=True, slots=True)
class DecimalSpec:
    """An Avro `decimal` logical type: at most `precision` digits, `scale` of them decimals."""

    precision: int
    scale: int
    quantum: Decimal = field(init=False, repr=False, compare=False)
    max_value: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantum", Decimal(1).scaleb(-self.scale))
        object.__setattr__(self, "max_value", Decimal(10**self.precision - 1).scaleb(-self.scale))

    def rounded(self, value: Any) -> Decimal | None:
        """`quantize(value, self, ...)` for the plain case, without building an error text:
        the rounded value when `value` is a finite Decimal that fits, else None (and
        `quantize` is the one to call, for its error)."""
        if type(value) is Decimal and value.is_finite():
            try:
                q = value.quantize(self.quantum, ROUNDING, _EXACT)
            except ArithmeticError:
                return None
            if -self.max_value <= q <= self.max_value:
                return q
        return None


def quantize(value: Decimal | int, spec: DecimalSpec, what: str) -> Decimal:
    """`value` rounded half-even to `spec.scale` decimals, checked against `spec.precision`.

    Raises `EncodingError` naming `what` when the value is not finite or needs more than
    `precision` digits once rounded. This is the only rounding step between the pricing
    arithmetic and the Avro bytes; the encoder itself never rounds.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite():
        raise EncodingError(f"{what}: expected a finite Decimal, got {_describe(value)}")
    try:
        rounded = value.quantize(spec.quantum, rounding=ROUNDING, context=_EXACT)
    except InvalidOperation as exc:
        raise EncodingError(f"{what}: {value} does not fit decimal({spec.precision},{spec.scale})") from exc
    if abs(rounded) > spec.max_value:
        raise EncodingError(
            f"{what}: {value} needs more than {spec.precision} digits at scale {spec.scale} "
            f"(maximum {spec.max_value})"
        )
    return rounded


def _unscaled(value: Any, scale: int, precision: int) -> int:
    """The unscaled integer of an exact decimal; the encoder's slow path and its error text."""
    if not isinstance(value, Decimal):
        raise TypeError(f"expected Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    scaled = _EXACT.scaleb(value, scale)
    n = int(scaled)
    if scaled != n:
        raise ValueError(f"{value} has more than {scale} decimals (quantize it first)")
    if not -(10**precision) < n < 10**precision:
        raise ValueError(f"{value} has more than {precision} digits at scale {scale}")
    return n


# --------------------------------------------------------------------------------------------
# The generated encoder
# --------------------------------------------------------------------------------------------
#
# Each record type becomes one function that binds its fields to locals and returns
# `b"".join((part, part, ...))`; every part is an expression. Maps and arrays become helper
# functions with a loop. Values that repeat across a period's records (org values, units,
# timestamps, the coverage decimal) are memoised; ids and quantities are not.

_SMALL = 1 << 14
_STR_CACHE_MAX = 1 << 14
_LONG_CACHE_MAX = 1 << 12
_INT32 = 1 << 31
_INT64 = 1 << 63
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> int:
    return n << 1 if n >= 0 else ((-n) << 1) - 1


# Zig-zag varints of the non-negative counts and lengths below _SMALL, by value.
_LEN: tuple[bytes, ...] = tuple(_varint(n << 1) for n in range(_SMALL))
_SMALL_LONGS: dict[int, bytes] = {n: _varint(_zigzag(n)) for n in range(-_SMALL // 2, _SMALL // 2)}


def _count(n: int) -> bytes:
    return _LEN[n] if n < _SMALL else _varint(n << 1)


def _as_int(v: Any, logical: str | None) -> int:
    if isinstance(v, datetime) and logical == "timestamp-millis":
        if v.tzinfo is None:
            raise TypeError("naive datetime for timestamp-millis (give an aware UTC datetime)")
        delta = v - _EPOCH
        # Same arithmetic as fastavro, so both encoders agree on sub-millisecond input.
        return (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise TypeError(f"expected int, got {type(v).__name__}")


def _long_writer(memo: dict[int, bytes], bits: int, logical: str | None) -> Callable[[Any], bytes]:
    """The slow path that encodes an int or timestamp and fills `memo` (one memo per width,
    so a 64-bit value never passes as a 32-bit one)."""
    limit = _INT32 if bits == 32 else _INT64
    kind = "int" if bits == 32 else "long"

    def slow(v: Any) -> bytes:
        if type(v) is not int:
            v = _as_int(v, logical)
        hit = memo.get(v)
        if hit is not None:
            return hit
        if not -limit <= v < limit:
            raise ValueError(f"{v} does not fit an Avro {kind}")
        out = _varint(_zigzag(v))
        if len(memo) >= len(_SMALL_LONGS) + _LONG_CACHE_MAX:
            memo.clear()
            memo.update(_SMALL_LONGS)
        memo[v] = out
        return out

    return slow


_LONGS32: dict[int, bytes] = dict(_SMALL_LONGS)
_LONGS64: dict[int, bytes] = dict(_SMALL_LONGS)
# Length-prefixed UTF-8 of strings seen recently (org values, kinds, units repeat a lot).
_STRS: dict[str, bytes] = {}


def _str_slow(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"expected string, got {type(v).__name__}")
    b = v.encode()
    out = _count(len(b)) + b
    if len(_STRS) >= _STR_CACHE_MAX:
        _STRS.clear()
    _STRS[v] = out
    return out


def _plain_string(v: Any) -> bytes:
    """A length-prefixed UTF-8 string, not memoised (ids are unique)."""
    if not isinstance(v, str):
        raise TypeError(f"expected string, got {type(v).__name__}")
    b = v.encode()
    return _count(len(b)) + b


def _decimal_writer(precision: int, scale: int) -> Callable[[Any], bytes]:
    """Length-prefixed two's-complement bytes of a decimal, as fastavro writes them.

    Remembers the last two values by identity: a period's records share one coverage object,
    and a workload's two records alternate between the CPU and the memory price.
    """
    limit = 10**precision
    factor = Decimal(10**scale)
    mul = _EXACT.multiply
    last: list[tuple[Any, bytes]] = [(None, b""), (None, b"")]

    def write(v: Any) -> bytes:
        prev = last[0]
        if v is prev[0]:
            return prev[1]
        older = last[1]
        if v is older[0]:
            last[0], last[1] = older, prev
            return older[1]
        if type(v) is not Decimal:
            _unscaled(v, scale, precision)  # raises the right TypeError
        scaled = mul(v, factor)
        n = int(scaled)
        if scaled != n or not -limit < n < limit:
            _unscaled(v, scale, precision)  # raises with the reason
        # fastavro sizes by the magnitude's bit length plus a sign bit, rounded up to bytes
        # (a negative number's bit_length is its magnitude's).
        raw = n.to_bytes((n.bit_length() + 8) >> 3, "big", signed=True)
        out = _LEN[len(raw)] + raw
        last[0], last[1] = (v, out), prev
        return out

    return write


def _bad(what: str) -> Callable[[Any], bytes]:
    def fail(v: Any) -> bytes:
        raise TypeError(f"expected {what}, got {type(v).__name__}")

    return fail


def _plain_bytes(v: Any) -> bytes:
    if not isinstance(v, bytes | bytearray):
        raise TypeError(f"expected bytes, got {type(v).__name__}")
    return _count(len(v)) + bytes(v)


class _Unsupported(Exception):
    """The generator does not handle this schema construct; fastavro is used instead."""


_RUNTIME: dict[str, Any] = {
    "FrozenMap": FrozenMap,
    "_LEN": _LEN,
    "_count": _count,
    "_plain_string": _plain_string,
    "_STRS": _STRS,
    "_str_slow": _str_slow,
    "_LONGS32": _LONGS32,
    "_LONGS64": _LONGS64,
    "_plain_bytes": _plain_bytes,
    "_bad_bool": _bad("boolean"),
    "_bad_null": _bad("null"),
    "_pack_f": struct.Struct("<f").pack,
    "_pack_d": struct.Struct("<d").pack,
}


@dataclass
class _Codegen:
    """Turns a schema into Python source: one function per record, map and array type."""

    attr: bool
    consts: dict[str, Any] = field(default_factory=dict)
    functions: list[list[str]] = field(default_factory=list)
    named: set[str] = field(default_factory=set)

    def const(self, value: Any, hint: str) -> str:
        name = f"_{hint}{len(self.consts)}"
        self.consts[name] = value
        return name

    def function(self, hint: str) -> tuple[str, list[str]]:
        name = f"_{hint}{len(self.functions)}"
        body: list[str] = []
        self.functions.append(body)
        return name, body

    def access(self, obj: str, fld: Mapping[str, Any]) -> str:
        name = fld["name"]
        if not name.isidentifier():
            raise _Unsupported(f"field name {name!r}")
        if "default" in fld and fld["default"] is not None:
            # A field added with a default (schema evolution): written as the default when
            # absent, as fastavro does. The default object is only ever read.
            default = self.const(fld["default"], "default")
            return (f"getattr({obj}, {name!r}, {default})" if self.attr
                    else f"{obj}.get({name!r}, {default})")
        if "default" not in fld and not _accepts_null(fld["type"]):
            return f"{obj}.{name}" if self.attr else f"{obj}[{name!r}]"
        # fastavro writes a missing field as its default, and as null when it has none.
        return f"getattr({obj}, {name!r}, None)" if self.attr else f"{obj}.get({name!r})"

    def record(self, schema: Mapping[str, Any], namespace: str | None, cache_strings: bool,
               only: Sequence[Mapping[str, Any]] | None = None) -> str:
        """Compile a record type into a function; return its name."""
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        if full in self.named and only is None:
            raise _Unsupported(f"named type {full} used twice")
        self.named.add(full)
        ns = full.rpartition(".")[0] or None
        fname, body = self.function("rec")
        body.append(f"def {fname}(datum):")
        parts: list[str] = []
        fields = schema["fields"]
        for i, fld in enumerate(fields if only is None else only):
            local = f"v{i}"
            body.append(f"    {local} = {self.access('datum', fld)}")
            # The record's first field is its id (unique per record): not worth memoising.
            memo = cache_strings and not (only is None and i == 0)
            parts.append(self.value(fld["type"], local, ns, memo))
        body.append(f"    return b''.join(({', '.join(parts)},))" if parts else "    return b''")
        return fname

    def value(self, schema: Any, v: str, namespace: str | None, memo: bool = True) -> str:
        """An expression giving the bytes of local `v` under `schema`."""
        if isinstance(schema, list):
            return self.union(schema, v, namespace)
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return self.primitive(schema, None, v, memo)
            raise _Unsupported(f"reference to named type {schema}")
        kind = schema["type"]
        logical = schema.get("logicalType")
        if isinstance(kind, dict | list):
            return self.value(kind, v, namespace, memo)
        if kind == "bytes" and logical == "decimal":
            writer = _decimal_writer(int(schema["precision"]), int(schema.get("scale", 0)))
            return f"{self.const(writer, 'dec')}({v})"
        if kind in _PRIMITIVES:
            return self.primitive(kind, logical, v, memo)
        if kind == "record":
            return f"{self.record(schema, namespace, True)}({v})"
        if kind in ("array", "map"):
            return f"{self.container(schema, namespace)}({v})"
        if kind == "enum":
            full = _fullname(schema["name"], schema.get("namespace", namespace))
            if full in self.named:
                raise _Unsupported(f"named type {full} used twice")
            self.named.add(full)
            table = {s: _varint(i << 1) for i, s in enumerate(schema["symbols"])}
            return f"{self.const(table, 'enum')}[{v}]"
        raise _Unsupported(f"type {kind}")

    def container(self, schema: Mapping[str, Any], namespace: str | None) -> str:
        fname, body = self.function(schema["type"])
        is_map = schema["type"] == "map"
        # A map that cannot change (`FrozenMap`) written twice in a row (a workload's records
        # share theirs) reuses its bytes; only FrozenMaps are ever remembered.
        last = self.const([(None, b"")], "last") if is_map else None
        body.append(f"def {fname}(c):")
        body.append("    if not c:")
        body.append("        return b'\\x00'")
        if last is not None:
            body.append(f"    prev = {last}[0]")
            body.append("    if c is prev[0]:")
            body.append("        return prev[1]")
        body.append("    parts = [_count(len(c))]")
        body.append("    ap = parts.append")
        if is_map:
            body.append("    for k, x in c.items():")
            body.append(f"        ap({self.primitive('string', None, 'k', True)})")
            body.append(f"        ap({self.value(schema['values'], 'x', namespace)})")
        else:
            body.append("    for x in c:")
            body.append(f"        ap({self.value(schema['items'], 'x', namespace)})")
        body.append("    ap(b'\\x00')")
        body.append("    out = b''.join(parts)")
        if last is not None:
            body.append("    if isinstance(c, FrozenMap):")
            body.append(f"        {last}[0] = (c, out)")
        body.append("    return out")
        return fname

    def primitive(self, kind: str, logical: str | None, v: str, memo: bool) -> str:
        if kind == "string":
            if not memo:
                return f"_plain_string({v})"
            return f"(_STRS.get({v}) or _str_slow({v}))"
        if kind in ("int", "long"):
            w = "32" if kind == "int" else "64"
            slow = _long_writer(_LONGS32 if kind == "int" else _LONGS64, int(w), logical)
            return f"((type({v}) is int and _LONGS{w}.get({v})) or {self.const(slow, 'long')}({v}))"
        if kind == "boolean":
            return f"(b'\\x01' if {v} is True else b'\\x00' if {v} is False else _bad_bool({v}))"
        if kind == "null":
            return f"(b'' if {v} is None else _bad_null({v}))"
        if kind == "bytes":
            return f"_plain_bytes({v})"
        if kind == "float":
            return f"_pack_f({v})"
        if kind == "double":
            return f"_pack_d({v})"
        raise _Unsupported(kind)  # pragma: no cover - _PRIMITIVES is closed

    def union(self, branches: list[Any], v: str, namespace: str | None) -> str:
        kinds = [b if isinstance(b, str) else b.get("type") for b in branches]
        if len(branches) != 2 or "null" not in kinds:
            raise _Unsupported("union other than [null, T]")
        null_at = kinds.index("null")
        inner = self.value(branches[1 - null_at], v, namespace)
        return f"({_LEN[null_at]!r} if {v} is None else {_LEN[1 - null_at]!r} + {inner})"

    def source(self) -> str:
        # Helpers are defined before the functions that call them at run time; order of
        # definition does not matter for name lookup, so emit them in creation order.
        return "\n\n".join("\n".join(body) for body in self.functions)


def _accepts_null(schema: Any) -> bool:
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _compile(schema: Mapping[str, Any], attr: bool, only: Sequence[Mapping[str, Any]] | None = None
             ) -> Callable[[Any], bytes]:
    """Generate `encode(datum) -> bytes` for a record schema (or only some of its fields)."""
    gen = _Codegen(attr=attr)
    entry = gen.record(schema, None, True, only)
    namespace: dict[str, Any] = dict(_RUNTIME)
    namespace.update(gen.consts)
    full = _fullname(schema["name"], schema.get("namespace"))
    exec(compile(gen.source(), f"<avro encoder {full}>", "exec"), namespace)  # noqa: S102
    fn: Callable[[Any], bytes] = namespace[entry]
    return fn


# --------------------------------------------------------------------------------------------
# Loaded schemas
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """One parsed schema with everything derived from it once: canonical form, fingerprint,
    fastavro's parsed form, the generated encoders and the decimal specs of top-level fields.
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
    _encode_item: Callable[[Any], bytes] | None
    _encode_attr: Callable[[Any], bytes] | None

    @property
    def header(self) -> bytes:
        """The single-object header for this schema."""
        return SINGLE_OBJECT_MARKER + self.fingerprint.to_bytes(8, "little")

    @property
    def generated(self) -> bool:
        """Whether the fast generated encoder is in use (else fastavro)."""
        return self._encode_item is not None

    def encode(self, datum: Mapping[str, Any]) -> bytes:
        """The Avro binary body of `datum` (a dict keyed by field name). Never blocks.

        Raises `EncodingError` naming the record and field when the datum does not fit.
        """
        enc = self._encode_item
        try:
            if enc is not None:
                return enc(datum)
            return fastavro_encode(self, datum)
        except EncodingError:
            raise
        except Exception as exc:
            raise self._explain(datum, exc, attr=False) from exc

    def encode_object(self, obj: Any) -> bytes:
        """Like `encode` for an object whose attributes are the fields (e.g. a record dataclass
        whose `to_avro()` would give the same dict); skips building the dict.
        """
        enc = self._encode_attr
        try:
            if enc is not None:
                return enc(obj)
            return fastavro_encode(self, obj.to_avro())
        except EncodingError:
            raise
        except Exception as exc:
            raise self._explain(obj, exc, attr=True) from exc

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
                if self.generated:
                    _compile(self.json, attr, [fld])(datum)
                else:
                    fastavro_encode_field(self, fld, value)
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
        by_item: Callable[[Any], bytes] | None = _compile(doc, attr=False)
        by_attr: Callable[[Any], bytes] | None = _compile(doc, attr=True)
    except _Unsupported:
        by_item = by_attr = None
    first = doc["fields"][0]["name"] if doc["fields"] else ""
    return AvroSchema(
        key=key, text=text, json=doc, fullname=_fullname(doc["name"], doc.get("namespace")),
        canonical=canonical, fingerprint=crc64_avro(canonical.encode("utf-8")), parsed=parsed,
        decimals=_decimal_specs(doc), id_field=first, _encode_item=by_item, _encode_attr=by_attr,
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


def fastavro_encode(schema: AvroSchema, datum: Mapping[str, Any]) -> bytes:
    """fastavro's `schemaless_writer` output: the reference the generated encoder must match."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema.parsed, datum)
    return buf.getvalue()


def fastavro_encode_field(schema: AvroSchema, fld: Mapping[str, Any], value: Any) -> bytes:
    """fastavro encoding of one field value (used to locate a failing field)."""
    sub = fastavro.parse_schema(
        {"type": "record", "name": "Probe", "namespace": schema.fullname.rpartition(".")[0] or None,
         "fields": [dict(fld)]},
    )
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, sub, {fld["name"]: value})
    return buf.getvalue()


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
