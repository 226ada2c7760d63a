"""Sysdig chargeback exporter: usage from Sysdig to exactly-once Avro billing records on Kafka."""

__version__ = "0.1.0"
