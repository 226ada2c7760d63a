"""The composition root: the one place that builds concrete adapters from `Config` and a `Clock`.

It owns every factory the subcommands call: the Sysdig client, retention model and usage source;
the org model and rate card read from the files the configuration names; the Avro framing and
codec; the export pipeline; the transactional Kafka sink and checkpoint store; the health server;
the dashboard installer. Each returns its concrete type, so a caller sees exactly what it gets.

It may import any `exporter` module (configuration, domain and adapters). Only the subcommand
modules import it (and tests and benchmarks, to build the real adapters); no domain or adapter
module does, so dependencies point one way. Modules that pull in heavy clients (confluent-kafka,
the schema registry) are imported inside the factories that need them, so that a command that
does not use them starts faster; their types come in under `TYPE_CHECKING`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.clock import Clock, SystemClock
from exporter.config import Config
from exporter.errors import ConfigError
from exporter.org import AllowedValues, OrgModel, read_allow_lists
from exporter.queries import GpuNames, StorageNames
from exporter.sysdig import Retention, RetentionModel, ShardSource, SysdigClient, SysdigSource

if TYPE_CHECKING:
    from exporter.avro import SingleObjectFraming
    from exporter.avro.messages import AvroCodec
    from exporter.avro.registry import ConfluentFraming
    from exporter.dashboard import DashboardInstaller
    from exporter.health import HealthServer, HealthState
    from exporter.kafka import KafkaCheckpointStore, KafkaPeriodSink
    from exporter.metrics import Metrics
    from exporter.model import PricedLine
    from exporter.pipeline import Pipeline
    from exporter.pricing import RateCard
    from exporter.source import UsageSource

OnRequest = Callable[[str, int | None, float], None]
"""Called after each Sysdig request with (query, HTTP status or None, seconds)."""


# --- Sysdig -----------------------------------------------------------------------------------

def _token(cfg: Config) -> str:
    token = cfg.sysdig.resolved_token()
    if not token:
        raise ConfigError(
            "sysdig.token: not set (use sysdig.token, sysdig.token_file or CHARGEBACK_SYSDIG__TOKEN)"
        )
    return token


def build_client(cfg: Config, clock: Clock, on_request: OnRequest | None = None, *,
                 warn: bool = True) -> SysdigClient:
    """The Sysdig client described by `cfg.sysdig`: every call to Sysdig goes through it.

    Raises `ConfigError` when no token is set.
    """
    token = _token(cfg)
    verify = cfg.sysdig.tls_verify()
    if not cfg.sysdig.verify_tls and warn:
        logging.getLogger("exporter.sysdig").warning(
            "TLS certificate verification of Sysdig is off (sysdig.verify_tls: false)",
            extra={"sysdig_url": cfg.sysdig.url})
    return SysdigClient(
        cfg.sysdig.url, token, clock=clock, timeout=cfg.sysdig.timeout, verify=verify,
        attempts=cfg.sysdig.max_attempts, max_retry_time=cfg.sysdig.max_retry_time,
        on_request=on_request, series_cap=cfg.sysdig.limits.segments,
        pool_size=cfg.sysdig.max_concurrency,
    )


def build_retention(cfg: Config, clock: Clock, client: SysdigClient | None = None) -> Retention:
    """The retention model of `cfg` (the one the worker, the report and the backfill use).

    `client` reads the timelines; without one a client of `cfg.sysdig` is built. Raises
    `ConfigError` when no token is set.
    """
    if client is None and cfg.sysdig.retention_tiers:
        client = build_client(cfg, clock, warn=False)
    return Retention(client, clock=clock, resolution=cfg.periods.resolution,
                     refresh=cfg.sysdig.retention_refresh, enabled=cfg.sysdig.retention_tiers)


def build_source(cfg: Config, clock: Clock, on_request: OnRequest | None = None,
                 retention: RetentionModel | None = None, org: OrgModel | None = None,
                 clusters: tuple[str, ...] | None = None, client: SysdigClient | None = None,
                 ) -> SysdigSource:
    """The Sysdig usage source described by `cfg.sysdig` and `cfg.periods`, of `cfg.clusters`
    (this replica's: see `Config.clusters`) or of `clusters`.

    `retention` replaces the configured retention model (a backfill pins each period's step);
    `org` is the org model already built from `cfg.org` (else it is built here); `client`
    the Sysdig client already built (else one is built with `on_request`).
    """
    client = build_client(cfg, clock, on_request) if client is None else client
    org = OrgModel(cfg.org) if org is None else org
    return SysdigSource(
        client, clock=clock, label_columns=org.label_columns(),
        resolution=cfg.periods.resolution, grain=cfg.periods.grain,
        clusters=cfg.clusters if clusters is None else clusters,
        limits=cfg.sysdig.query_limits(), prefetch=cfg.sysdig.prefetch_groups,
        retention=build_retention(cfg, clock, client) if retention is None else retention,
        gpu=gpu_names(cfg), gpu_resources=cfg.resources.gpu.resources if cfg.resources.gpu.enabled
        else None, storage=storage_names(cfg),
        allocatable=cfg.idle.resources if cfg.idle.enabled else None,
        allocatable_metric=cfg.idle.metric,
    )


def gpu_names(cfg: Config) -> GpuNames | None:
    """The GPU metric and label names of `cfg.resources.gpu`, or None when GPUs are off."""
    gpu = cfg.resources.gpu
    if not gpu.enabled:
        return None
    return GpuNames(tuple(gpu.resources), gpu.utilization_metric, gpu.utilization_pod_label,
                    gpu.utilization_namespace_label)


def storage_names(cfg: Config) -> StorageNames | None:
    """The claim metric and label names of `cfg.resources.storage`, or None when off."""
    storage = cfg.resources.storage
    if not storage.enabled:
        return None
    return StorageNames(storage.capacity_metric, storage.info_metric, storage.mount_metric,
                        storage.claim_label, storage.class_label)


def build_usage_source(cfg: Config, clock: Clock, on_request: OnRequest | None = None,
                       retention: RetentionModel | None = None, org: OrgModel | None = None,
                       ) -> SysdigSource | ShardSource:
    """What the pipeline measures with: `build_source`, or for a hash shard without
    `sysdig.clusters` the `ShardSource` that finds the shard's clusters in each period.

    Arguments as `build_source`.
    """
    if not cfg.discovers_clusters:
        return build_source(cfg, clock, on_request, retention, org)
    client = build_client(cfg, clock, on_request)
    org = OrgModel(cfg.org) if org is None else org
    pinned = build_retention(cfg, clock, client) if retention is None else retention

    def restricted(clusters: tuple[str, ...]) -> SysdigSource:
        return build_source(cfg, clock, retention=pinned, org=org, clusters=clusters,
                            client=client)

    return ShardSource(client, owns=cfg.shard.owns, shard=cfg.shard.describe(),
                       restricted=restricted, grain=cfg.periods.grain)


def build_dashboard_installer(cfg: Config, clock: Clock | None = None) -> DashboardInstaller:
    """An installer of the Sysdig dashboard for `cfg.sysdig` (URL, token, TLS, timeout).

    `clock` times its requests (the system clock when None: it never sleeps, as dashboard
    calls are not retried). Raises `ConfigError` when no token is set.
    """
    from exporter.dashboard import DashboardInstaller

    return DashboardInstaller(build_client(cfg, SystemClock() if clock is None else clock,
                                           warn=False))


# --- the files the configuration names -------------------------------------------------------

@dataclass(frozen=True)
class Referenced:
    """What the worker builds from the files the configuration names."""

    org: OrgModel
    rate_card: RateCard | None


def load_referenced(cfg: Config) -> Referenced:
    """Read and validate every allow-list and the rate card `cfg` names: the worker's loading,
    which `check-config` runs too.

    Raises one `ConfigError` whose `problems` are every problem found, each a line naming the
    file and, where the parser gives it, the line and column.
    """
    from exporter.pricing import RateCard

    problems: list[str] = []
    org: OrgModel | None = None
    allowed: dict[str, AllowedValues] = {}
    try:
        allowed = read_allow_lists(cfg.org)
        org = OrgModel(cfg.org, allowed)
    except ConfigError as exc:
        problems.extend(exc.problems)
    card = None
    if cfg.pricing.rate_card_file is not None:
        try:
            card = RateCard.load(cfg.pricing.rate_card_file, period_length=cfg.periods.length,
                                 other_labels=cfg.org.other_labels, allowed=allowed)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError.of(problems)
    assert org is not None
    return Referenced(org, card)


# --- Avro and the export path ----------------------------------------------------------------

def build_framing(cfg: Config) -> SingleObjectFraming | ConfluentFraming:
    """The configured Avro framing: single-object (default) or Confluent via a registry."""
    from exporter.avro import SingleObjectFraming

    if cfg.kafka.framing == "confluent":
        from exporter.avro.registry import ConfluentFraming

        assert cfg.kafka.schema_registry is not None
        return ConfluentFraming.from_config(cfg.kafka.schema_registry)
    return SingleObjectFraming()


def build_codec(cfg: Config) -> AvroCodec:
    """The codec of the configured framing and topics."""
    from exporter.avro.messages import AvroCodec

    return AvroCodec(build_framing(cfg), cfg.kafka.topics)


def build_pipeline(cfg: Config, clock: Clock, metrics: Metrics | None = None,
                   source: UsageSource | None = None) -> Pipeline:
    """The export pipeline described by `cfg`; `source` replaces the Sysdig source (tests)."""
    from exporter import coverage as cov
    from exporter.pipeline import Pipeline
    from exporter.shared_costs import distribute

    on_request = metrics.observe_sysdig if metrics is not None else None
    files = load_referenced(cfg)
    src = source if source is not None else build_usage_source(cfg, clock, on_request=on_request,
                                                               org=files.org)
    card = files.rate_card
    pricer = card.price_lines if card is not None else None
    shared_cfg = cfg.shared_costs

    def share(lines: Sequence[PricedLine]) -> list[PricedLine]:
        return list(distribute(lines, shared_cfg).lines)

    return Pipeline(
        source=src, org=files.org, codec=build_codec(cfg), clock=clock,
        settle_delay=cfg.periods.settle_delay, pricer=pricer,
        distribute=share if shared_cfg.enabled else None,
        coverage_fn=cov.label_coverage, min_coverage=cfg.periods.min_coverage,
        incomplete_policy=cfg.periods.incomplete_policy,
        clusters=cfg.clusters, retired_clusters=cfg.sysdig.retired_clusters,
        publish_empty=cfg.periods.publish_empty,
        storage=cfg.resources.storage.enabled,
        clusters_without_claims=cfg.resources.storage.clusters_without_claims,
        idle=cfg.idle.enabled, idle_rule=card.idle if card is not None else None,
    )


# --- Kafka ------------------------------------------------------------------------------------

def build_sink(cfg: Config, clock: Clock, metrics: Metrics | None = None,
               transactional_id: str | None = None) -> KafkaPeriodSink:
    """The transactional Kafka sink of this replica (`Config.instance_id`: the configured
    transactional id, per shard when sharded); `transactional_id` overrides it (backfill)."""
    from exporter.kafka import KafkaPeriodSink

    kcfg = cfg.kafka.model_copy(update={"transactional_id": transactional_id or cfg.instance_id})
    if metrics is None:
        return KafkaPeriodSink(kcfg, clock)
    aborts = metrics.transaction_aborts

    def on_abort(reason: str) -> None:
        aborts.inc()

    return KafkaPeriodSink(kcfg, clock, on_abort=on_abort,
                           on_delivery_error=metrics.kafka_delivery_errors.inc,
                           on_retention=metrics.topic_retention)


def build_checkpoints(cfg: Config, clock: Clock,
                      transactional_id: str | None = None) -> KafkaCheckpointStore:
    """The checkpoint store of this replica (`Config.instance_id`), or of `transactional_id`."""
    from exporter.kafka import KafkaCheckpointStore

    kcfg = cfg.kafka.model_copy(update={"transactional_id": transactional_id or cfg.instance_id})
    codec = build_codec(cfg)
    return KafkaCheckpointStore(kcfg, codec.decode_checkpoint, clock)


def build_worker_parts(cfg: Config, clock: Clock, metrics: Metrics
                       ) -> tuple[Pipeline, KafkaPeriodSink, KafkaCheckpointStore]:
    """The worker's real adapters: Sysdig source, Avro codec, transactional Kafka sink and
    checkpoints (no I/O yet)."""
    return (build_pipeline(cfg, clock, metrics), build_sink(cfg, clock, metrics),
            build_checkpoints(cfg, clock))


# --- HTTP -------------------------------------------------------------------------------------

def build_health_server(cfg: Config, state: HealthState, metrics: Metrics) -> HealthServer:
    """The `/healthz`, `/readyz` and `/metrics` server at `cfg.web.listen_address` (not started).

    Raises `ConfigError` for an unusable listen address.
    """
    from exporter.health import HealthServer

    return HealthServer(cfg.web.listen_address, state, metrics.registry)
