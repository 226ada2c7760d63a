"""Avro: the schemas of `schemas/`, the binary encoder, decoding, framings and messages.

This package owns everything between a record object and the bytes of a Kafka message value:
`schema` (loading, Parsing Canonical Form, fingerprints, `AvroSchema`, `SchemaSet`), `encoder`
(the plain writers), `framing` (the `Framing` protocol and the single-object encoding),
`registry` (the Confluent wire format through a Schema Registry) and `messages` (`AvroCodec`:
records, manifests and checkpoints as `OutMessage`s). It is the only importer of fastavro, and
`registry` the only importer of `confluent_kafka.schema_registry`; none of it produces or
consumes (that is `exporter.kafka`). It may import `exporter.config`, `errors`, `money`,
`records` and `sink`. `registry` and `messages` are imported by their module paths: the first
loads the registry client, the second imports `exporter.records`, which imports this package.
"""

from exporter.avro.framing import Framing, SingleObjectFraming, body_of
from exporter.avro.schema import (
    SCHEMA_FILES,
    AvroSchema,
    SchemaSet,
    build_schema,
    fingerprint,
    load_schema,
    nested_decimal_specs,
    schema_text,
)

__all__ = [
    "SCHEMA_FILES",
    "AvroSchema",
    "Framing",
    "SchemaSet",
    "SingleObjectFraming",
    "body_of",
    "build_schema",
    "fingerprint",
    "load_schema",
    "nested_decimal_specs",
    "schema_text",
]
