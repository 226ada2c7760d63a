"""Subcommands `check-config` and `report`, and the adapters they build from configuration."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from exporter.clock import Clock, SystemClock
from exporter.config import Config, load_config, masked_dict
from exporter.errors import ConfigError
from exporter.logs import register_secret, setup
from exporter.model import ChargeLine
from exporter.org import AllowedValues, OrgModel, read_allow_lists
from exporter.periods import (
    Period,
    align_down,
    closed_periods,
    iso,
    iter_periods,
    parse_duration,
    parse_time,
)
from exporter.retention import Retention, RetentionModel, TimelinesClient
from exporter.sysdig import SysdigSource
from exporter.units import charge_lines

if TYPE_CHECKING:
    from exporter.pricing import RateCard


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand that reads configuration accepts."""
    parser.add_argument(
        "--config.file", dest="config_file", type=Path,
        default=Path(env_file) if (env_file := os.environ.get("CHARGEBACK_CONFIG_FILE")) else None,
        help="YAML configuration file (env CHARGEBACK_CONFIG_FILE)",
    )
    parser.add_argument("--log.level", dest="log_level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log.format", dest="log_format", default=None, choices=("json", "text"))


def config_from_args(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Config:
    """Load the configuration named by the flags, and set up logging and secret scrubbing."""
    cfg = load_config(args.config_file, overrides=overrides)
    register_secrets(cfg)
    setup(args.log_level or cfg.logging.level, args.log_format or cfg.logging.format)
    return cfg


def register_secrets(cfg: Config) -> None:
    register_secret(cfg.sysdig.resolved_token())
    register_secret(cfg.kafka.resolved_sasl_password())
    if cfg.kafka.ssl_key_password is not None:
        register_secret(cfg.kafka.ssl_key_password.get_secret_value())
    if cfg.kafka.schema_registry is not None:
        info = cfg.kafka.schema_registry.resolved_user_info()
        register_secret(info)
        if info and ":" in info:
            register_secret(info.split(":", 1)[1])


def build_client(cfg: Config, clock: Clock, on_request: Any = None, *, warn: bool = True,
                 ) -> TimelinesClient:
    """The Sysdig client described by `cfg.sysdig` (queries and retention timelines).

    Raises `ConfigError` when no token is set.
    """
    token = cfg.sysdig.resolved_token()
    if not token:
        raise ConfigError(
            "sysdig.token: not set (use sysdig.token, sysdig.token_file or CHARGEBACK_SYSDIG__TOKEN)"
        )
    verify = cfg.sysdig.tls_verify()
    if not cfg.sysdig.verify_tls and warn:
        logging.getLogger("exporter.sysdig").warning(
            "TLS certificate verification of Sysdig is off (sysdig.verify_tls: false)",
            extra={"sysdig_url": cfg.sysdig.url})
    return TimelinesClient(
        cfg.sysdig.url, token, clock=clock, timeout=cfg.sysdig.timeout, verify=verify,
        attempts=cfg.sysdig.max_attempts, max_retry_time=cfg.sysdig.max_retry_time,
        on_request=on_request,
    )


def build_retention(cfg: Config, clock: Clock, client: TimelinesClient | None = None) -> Retention:
    """The retention model of `cfg` (the one the worker, the report and the backfill use).

    `client` reads the timelines; without one a client of `cfg.sysdig` is built. Raises
    `ConfigError` when no token is set.
    """
    if client is None and cfg.sysdig.retention_tiers:
        client = build_client(cfg, clock, warn=False)
    return Retention(client, clock=clock, resolution=cfg.periods.resolution,
                     refresh=cfg.sysdig.retention_refresh, enabled=cfg.sysdig.retention_tiers)


def build_source(cfg: Config, clock: Clock, on_request: Any = None,
                 retention: RetentionModel | None = None, org: OrgModel | None = None,
                 ) -> SysdigSource:
    """The Sysdig usage source described by `cfg.sysdig` and `cfg.periods`.

    `retention` replaces the configured retention model (a backfill pins each period's step);
    `org` is the org model already built from `cfg.org` (else it is built here).
    """
    client = build_client(cfg, clock, on_request)
    org = OrgModel(cfg.org) if org is None else org
    return SysdigSource(
        client, clock=clock, label_columns=org.label_columns(),
        resolution=cfg.periods.resolution, grain=cfg.periods.grain,
        clusters=cfg.sysdig.clusters, concurrency=cfg.sysdig.max_concurrency,
        retention=build_retention(cfg, clock, client) if retention is None else retention,
    )


def check_team(cfg: Config, clock: Clock) -> None:
    """At start: refuse a token whose Sysdig team sees only part of the fleet (`exporter.teams`).

    Raises `TeamScopeError` (exit 2) unless `sysdig.allow_scoped_team`, `ConfigError` without a
    token, `SourceAuthError` for a rejected one.
    """
    from exporter.teams import check_team_scope

    check_team_scope(build_client(cfg, clock), f"Sysdig {cfg.sysdig.url} (team scope)",
                     allow=cfg.sysdig.allow_scoped_team)


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


def _readable(path: Path | None, what: str) -> Callable[[], object]:
    """A check that `path` (a file another library opens, such as a certificate) can be read."""
    def check() -> None:
        if path is None:
            return
        try:
            with path.open("rb") as file:
                file.read(1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    return check


def check_files(cfg: Config) -> None:
    """Read every file `cfg` names, as the worker and its clients will: secrets, CA bundles,
    TLS material, allow-lists and the rate card.

    Raises one `ConfigError` with every problem (`problems`: one line each), in the order of
    the configuration's sections.
    """
    kafka, registry = cfg.kafka, cfg.kafka.schema_registry
    checks: list[Callable[[], object]] = [
        cfg.sysdig.resolved_token, cfg.sysdig.tls_verify, kafka.resolved_sasl_password,
        _readable(kafka.ssl_ca_location, "kafka.ssl_ca_location"),
        _readable(kafka.ssl_certificate_location, "kafka.ssl_certificate_location"),
        _readable(kafka.ssl_key_location, "kafka.ssl_key_location"),
    ]
    if registry is not None:
        checks += [registry.resolved_user_info,
                   _readable(registry.ca_location, "kafka.schema_registry.ca_location")]
    checks.append(lambda: load_referenced(cfg))
    problems: list[str] = []
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError.of(problems)


# --- check-config -------------------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config_file)
    # Every file is read so that a missing mount or a broken rate card fails here, not at 3 a.m.
    check_files(cfg)
    register_secrets(cfg)
    sys.stdout.write(yaml.safe_dump(masked_dict(cfg), sort_keys=False))
    return 0


# --- report ---------------------------------------------------------------------------------

def report_window(args: argparse.Namespace, cfg: Config, clock: Clock) -> list[Period]:
    length = cfg.periods.length
    if args.start or args.end:
        if not (args.start and args.end):
            raise ConfigError("--from and --to go together")
        try:
            start, end = parse_time(args.start), parse_time(args.end)
        except ValueError as exc:
            raise ConfigError(f"--from/--to: {exc}") from None
        periods = list(iter_periods(start, end, length))
    else:
        try:
            last = parse_duration(args.last)
        except ValueError as exc:
            raise ConfigError(f"--last: {exc}") from None
        now = clock.time()
        settle = cfg.periods.settle_delay
        # The closed periods are those the worker publishes (end + settle delay passed); the
        # window is the last of them, as many as cover `last`.
        newest_end = align_down(int(now) - settle, length)
        count = max(1, -(-last // length))
        periods = list(closed_periods(newest_end - count * length, now, length, settle))
    if not periods:
        raise ConfigError("the window holds no complete, closed period")
    return periods


def collect_lines(source: SysdigSource, cfg: Config, periods: list[Period]
                  ) -> tuple[list[ChargeLine], list[int]]:
    """The charge lines of `periods`, and the step each period was measured at."""
    org = OrgModel(cfg.org)
    lines: list[ChargeLine] = []
    steps: list[int] = []
    for p in periods:
        usage = source.fetch(p)
        steps.append(usage.step_seconds)
        lines.extend(charge_lines(usage, org))
    return lines, steps


def cmd_report(args: argparse.Namespace, clock: Clock | None = None) -> int:
    from exporter import report
    from exporter.pricing import price_lines

    clock = clock or SystemClock()
    cfg = config_from_args(args)
    coverage = getattr(args, "coverage", False)
    if coverage and args.format == "csv":
        raise ConfigError("--coverage: --format csv is not available (coverage has two tables); "
                          "use --format table or json")
    periods = report_window(args, cfg, clock)
    # Loaded before Sysdig is asked, so a broken rate card or allow-list costs no queries.
    files = load_referenced(cfg)
    card = None if coverage else files.rate_card
    check_team(cfg, clock)
    source = build_source(cfg, clock, org=files.org)
    lines, steps = collect_lines(source, cfg, periods)
    window = (iso(periods[0].start), iso(periods[-1].end))
    warning = report.coarse_warning(steps, cfg.periods.resolution)
    if warning is not None:
        sys.stderr.write(warning + "\n")
    measured = (f"{window[0]} to {window[1]} ({len(periods)} period{'s' * (len(periods) > 1)}, "
                f"at {report.steps_phrase(sorted(set(steps)))} steps)")
    if coverage:
        from exporter import coverage as cov

        covered = cov.label_coverage(lines)
        if args.format == "json":
            doc = {"from": window[0], "to": window[1], "step_seconds": sorted(set(steps)),
                   "clusters": cov.coverage_document(covered)}
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            sys.stdout.write(f"Label coverage, {measured}\n")
            report.print_table(cov.render_coverage(covered), sys.stdout.write, fit=True)
        return 0
    rows = report.aggregate(price_lines(lines, card), args.by)
    if args.format == "csv":
        sys.stdout.write(report.render_csv(rows, args.by))
    elif args.format == "json":
        sys.stdout.write(report.render_json(rows, args.by, window) + "\n")
    else:
        title = f"Consumption by {args.by}, {measured}"
        report.print_table(report.render_table(rows, args.by, title), sys.stdout.write,
                           fit=True)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("check-config", help="validate the configuration and every file it names, "
                       "and print it, secrets masked")
    add_common(p)
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser("report", help="consumption report from Sysdig over a window")
    add_common(p)
    p.add_argument("--from", dest="start", help="window start, RFC 3339 (aligned up to a period)")
    p.add_argument("--to", dest="end", help="window end, RFC 3339 (aligned down)")
    p.add_argument("--last", default="3h", help="or: the last closed periods covering this duration")
    p.add_argument("--by", choices=("costcenter", "costcenter-workload", "org"), default="costcenter")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--coverage", action="store_true", help="show label coverage instead")
    p.set_defaults(handler=cmd_report)


# --- factories for the export path ----------------------------------------------------------

def build_framing(cfg: Config) -> Any:
    """The configured Avro framing: single-object (default) or Confluent via a registry."""
    from exporter.avro import SingleObjectFraming

    if cfg.kafka.framing == "confluent":
        from exporter.registry import ConfluentFraming

        assert cfg.kafka.schema_registry is not None
        return ConfluentFraming.from_config(cfg.kafka.schema_registry)
    return SingleObjectFraming()


def build_codec(cfg: Config) -> Any:
    from exporter.codec import AvroCodec

    return AvroCodec(build_framing(cfg), cfg.kafka.topics)


def build_pipeline(cfg: Config, clock: Clock, metrics: Any = None, source: Any = None) -> Any:
    """The export pipeline described by `cfg`; `source` replaces the Sysdig source (tests)."""
    from exporter import coverage as cov
    from exporter.pipeline import Pipeline
    from exporter.shared import distribute

    on_request = metrics.observe_sysdig if metrics is not None else None
    files = load_referenced(cfg)
    src = source if source is not None else build_source(cfg, clock, on_request=on_request,
                                                         org=files.org)
    card = files.rate_card
    pricer = card.price_lines if card is not None else None
    shared_cfg = cfg.shared_costs

    def share(lines: Any) -> Any:
        return list(distribute(lines, shared_cfg).lines)

    return Pipeline(
        source=src, org=files.org, codec=build_codec(cfg), clock=clock,
        settle_delay=cfg.periods.settle_delay, pricer=pricer,
        distribute=share if shared_cfg.enabled else None,
        coverage_fn=cov.label_coverage, min_coverage=cfg.periods.min_coverage,
        incomplete_policy=cfg.periods.incomplete_policy,
        clusters=cfg.sysdig.clusters, retired_clusters=cfg.sysdig.retired_clusters,
        publish_empty=cfg.periods.publish_empty,
    )


def build_sink(cfg: Config, clock: Clock, metrics: Any = None, transactional_id: str | None = None) -> Any:
    """The transactional Kafka sink; `transactional_id` overrides the configured one (backfill)."""
    from exporter.kafka_sink import KafkaPeriodSink

    kcfg = cfg.kafka if transactional_id is None else cfg.kafka.model_copy(
        update={"transactional_id": transactional_id})
    on_abort = (lambda reason: metrics.transaction_aborts.inc()) if metrics is not None else None
    on_err = metrics.kafka_delivery_errors.inc if metrics is not None else None
    on_retention = metrics.topic_retention if metrics is not None else None
    return KafkaPeriodSink(kcfg, clock, on_abort=on_abort, on_delivery_error=on_err,
                           on_retention=on_retention)


def build_checkpoints(cfg: Config, clock: Clock, transactional_id: str | None = None) -> Any:
    """The checkpoint store of this instance (or of `transactional_id`)."""
    from exporter.kafka_sink import KafkaCheckpointStore

    kcfg = cfg.kafka if transactional_id is None else cfg.kafka.model_copy(
        update={"transactional_id": transactional_id})
    codec = build_codec(cfg)
    return KafkaCheckpointStore(kcfg, codec.decode_checkpoint, clock)
