"""Every metric the exporter exposes, declared in one place, on an injected registry."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MetricName = Literal[
    "chargeback_periods_exported_total",
    "chargeback_records_produced_total",
    "chargeback_last_closed_period_end_seconds",
    "chargeback_export_lag_seconds",
    "chargeback_sysdig_request_seconds",
    "chargeback_sysdig_errors_total",
    "chargeback_kafka_delivery_errors_total",
    "chargeback_transaction_aborts_total",
    "chargeback_unallocated_share",
    "chargeback_period_failures_total",
    "chargeback_period_duration_seconds",
    "chargeback_coarse_periods_total",
    "chargeback_period_held",
    "chargeback_held_period_age_seconds",
    "chargeback_cluster_missing",
    "chargeback_expected_clusters",
    "chargeback_topic_retention_short",
]


class Metrics:
    """The exporter's metrics. Tests pass a fresh `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.periods_exported = Counter(
            "chargeback_periods_exported", "Periods published (committed transactions).",
            ["mode"], registry=r)
        self.records_produced = Counter(
            "chargeback_records_produced", "Billing records in committed transactions.",
            ["mode"], registry=r)
        self.last_closed_period_end = Gauge(
            "chargeback_last_closed_period_end_seconds",
            "End (epoch seconds) of the last period committed to Kafka.", registry=r)
        self.export_lag = Gauge(
            "chargeback_export_lag_seconds",
            "Now minus the end of the last committed period.", registry=r)
        self.sysdig_latency = Histogram(
            "chargeback_sysdig_request_seconds", "Sysdig query latency.", ["query"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.sysdig_errors = Counter(
            "chargeback_sysdig_errors", "Sysdig responses that were not 200, by status.",
            ["status"], registry=r)
        self.kafka_delivery_errors = Counter(
            "chargeback_kafka_delivery_errors", "Messages whose delivery failed.", registry=r)
        self.transaction_aborts = Counter(
            "chargeback_transaction_aborts", "Kafka transactions aborted.", registry=r)
        self.unallocated_share = Gauge(
            "chargeback_unallocated_share",
            "Share of chargeable quantity unallocated or invalid in the last period.",
            ["cluster", "org_key", "resource"], registry=r)
        self.period_failures = Counter(
            "chargeback_period_failures", "Period exports that failed, by reason.", ["reason"],
            registry=r)
        self.period_duration = Histogram(
            "chargeback_period_duration_seconds", "Wall time to export one period.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.coarse_periods = Counter(
            "chargeback_coarse_periods",
            "Periods measured at a coarser step than periods.resolution (Sysdig retention), by step.",
            ["step"], registry=r)
        self.period_held = Gauge(
            "chargeback_period_held",
            "1 while the next period is held (not published) for this reason, else 0.",
            ["reason"], registry=r)
        self.held_period_age = Gauge(
            "chargeback_held_period_age_seconds",
            "Now minus the end of the period being held; 0 when no period is held.", registry=r)
        self.cluster_missing = Gauge(
            "chargeback_cluster_missing",
            "1 when an expected cluster had no usage or no request series in the last measured "
            "period (`what`: usage, requests), else 0.",
            ["cluster", "what"], registry=r)
        self.expected_clusters = Gauge(
            "chargeback_expected_clusters",
            "Clusters the exporter expects in every period (configured, seen or recently "
            "published).", registry=r)
        self.topic_retention_short = Gauge(
            "chargeback_topic_retention_short",
            "1 when an existing topic deletes data sooner than kafka.topic_configs says "
            "(`config`: retention.ms, retention.bytes), else 0; checked at start.",
            ["topic", "config"], registry=r)

    def topic_retention(self, topic: str, setting: str, short: bool) -> None:
        """Record one topic's retention check (hooked into the Kafka topic admin)."""
        self.topic_retention_short.labels(topic, setting).set(1 if short else 0)

    def observe_sysdig(self, query: str, status: int | None, seconds: float) -> None:
        """Record one Sysdig request (hooked into the Sysdig client)."""
        name = query.split(" ", 1)[0]
        self.sysdig_latency.labels(name).observe(max(0.0, seconds))
        if status != 200:
            self.sysdig_errors.labels(str(status) if status is not None else "transport").inc()
