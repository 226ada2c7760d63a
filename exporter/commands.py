"""Subcommands `check-config` and `report`, and the helpers every subcommand shares: the common
flags, loading the configuration, and the team-scope check. Adapters come from `exporter.wiring`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from exporter.clock import Clock
from exporter.config import Config, load_config, masked_dict
from exporter.errors import ConfigError
from exporter.logs import register_secret, setup
from exporter.model import PricedLine
from exporter.periods import (
    Period,
    align_down,
    closed_periods,
    iso,
    iter_periods,
    parse_duration,
    parse_time,
)
from exporter.wiring import build_client, load_referenced

if TYPE_CHECKING:
    from exporter.pipeline import Pipeline


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


def check_team(cfg: Config, clock: Clock) -> None:
    """At start: refuse a token whose Sysdig team sees only part of the fleet (`exporter.sysdig.teams`).

    Raises `TeamScopeError` (exit 2) unless `sysdig.allow_scoped_team`, `ConfigError` without a
    token, `SourceAuthError` for a rejected one.
    """
    from exporter.sysdig.teams import check_team_scope

    check_team_scope(build_client(cfg, clock), f"Sysdig {cfg.sysdig.url} (team scope)",
                     allow=cfg.sysdig.allow_scoped_team)


# --- the files the configuration names -------------------------------------------------------

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

def cmd_check_config(args: argparse.Namespace, *, clock: Clock) -> int:
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


def measure_window(pipeline: Pipeline, periods: list[Period]) -> tuple[list[PricedLine], list[int]]:
    """The priced lines of `periods`, shared costs distributed, as the worker would bill them,
    and the step each period was measured at. Raises `IncompleteDataError` for a period the
    worker would hold (an answer with no series, a configured cluster missing)."""
    priced: list[PricedLine] = []
    steps: list[int] = []
    for p in periods:
        usage, _, lines = pipeline.measure(p)
        steps.append(usage.step_seconds)
        priced.extend(lines)
    return priced, steps


def cmd_report(args: argparse.Namespace, *, clock: Clock) -> int:
    from exporter import report
    from exporter.wiring import build_pipeline

    cfg = config_from_args(args)
    coverage = getattr(args, "coverage", False)
    if coverage and args.format == "csv":
        raise ConfigError("--coverage: --format csv is not available (coverage has two tables); "
                          "use --format table or json")
    periods = report_window(args, cfg, clock)
    # Built (rate card and allow-lists loaded) before Sysdig is asked: a broken file costs no
    # queries. The worker's own pipeline, so the report bills what the records would carry.
    pipeline = build_pipeline(cfg, clock)
    check_team(cfg, clock)
    priced, steps = measure_window(pipeline, periods)
    window = (iso(periods[0].start), iso(periods[-1].end))
    warning = report.coarse_warning(steps, cfg.periods.resolution)
    if warning is not None:
        sys.stderr.write(warning + "\n")
    measured = (f"{window[0]} to {window[1]} ({len(periods)} period{'s' * (len(periods) > 1)}, "
                f"at {report.steps_phrase(sorted(set(steps)))} steps)")
    if coverage:
        from exporter import coverage as cov

        covered = cov.label_coverage([p.line for p in priced])
        if args.format == "json":
            doc = {"from": window[0], "to": window[1], "step_seconds": sorted(set(steps)),
                   "clusters": cov.coverage_document(covered)}
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            sys.stdout.write(f"Label coverage, {measured}\n")
            report.print_table(cov.render_coverage(covered), sys.stdout.write, fit=True)
        return 0
    rows = report.aggregate(priced, args.by)
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
