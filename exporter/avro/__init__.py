"""Avro: the schemas of `schemas/`, the binary encoder, decoding, framings and messages."""

from exporter.avro.schema import (
    SCHEMA_FILES,
    AvroSchema,
    Framing,
    FrozenMap,
    SchemaSet,
    SingleObjectFraming,
    body_of,
    build_schema,
    fingerprint,
    load_schema,
    nested_decimal_specs,
    schema_text,
    varint,
)

__all__ = [
    "SCHEMA_FILES",
    "AvroSchema",
    "Framing",
    "FrozenMap",
    "SchemaSet",
    "SingleObjectFraming",
    "body_of",
    "build_schema",
    "fingerprint",
    "load_schema",
    "nested_decimal_specs",
    "schema_text",
    "varint",
]
