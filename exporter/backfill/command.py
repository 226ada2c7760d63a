"""Subcommand `backfill`: (re)publish a past range of periods, with corrections.

    chargeback-exporter backfill --from T1 --to T2 [--config.file F] [--force] [--dry-run]
        [--allow-coarse] [--max-age D | --allow-old] [--transactional-id ID]
        [--format table|json]

Every period of `[T1, T2)` is measured with the live worker's `Pipeline` and compared with what
was published before, read from the compacted manifests topic (ADR 0002): a period-cluster whose
content hash is unchanged is skipped (republished byte-identically with `--force`), a changed
one is republished with `revision + 1` and a new manifest, a never-published one gets revision
0. Each period is one Kafka transaction under the backfill's own transactional id, carrying the
backfill's own checkpoint, so an interrupted backfill resumes where it stopped and the live
checkpoint is never touched. docs/backfill.md is the operator's guide.

Exit codes: 0 done, 2 usage, configuration or refused range, 3 partial (some periods failed or
the run stopped early; run the same command again to resume), 4 fenced.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from rich.console import Console

from exporter.backfill.plan import Options
from exporter.backfill.render import LogProgress, RichProgress, render
from exporter.backfill.runner import (
    BackfillFailed,
    ProgressView,
    Report,
    SinkFactory,
    default_sink,
    prepare,
)
from exporter.clock import Clock
from exporter.commands import add_common, config_from_args
from exporter.errors import ConfigError, ExporterError, FencedError, SourceAuthError
from exporter.periods import parse_duration, parse_time
from exporter.stopping import stop_on_signals


def options_from_args(args: argparse.Namespace) -> Options:
    """Parse the flags; raises `ConfigError` with one line naming the flag."""
    try:
        start = parse_time(args.start)
    except ValueError as exc:
        raise ConfigError(f"--from: {exc}") from None
    try:
        end = parse_time(args.end)
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    max_age = None
    if args.max_age is not None:
        try:
            max_age = parse_duration(args.max_age)
        except ValueError as exc:
            raise ConfigError(f"--max-age: {exc}") from None
    return Options(start=start, end=end, force=args.force, dry_run=args.dry_run,
                   allow_coarse=args.allow_coarse, max_age=max_age, allow_old=args.allow_old,
                   transactional_id=args.transactional_id)


def cmd_backfill(args: argparse.Namespace, *, clock: Clock,
                 sink_factory: SinkFactory = default_sink, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """The `backfill` handler: exit 0, 3 (one line on stderr) or 4; raises `ConfigError` (2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    cfg = config_from_args(args)
    opts = options_from_args(args)
    logged = None if err.isatty() else LogProgress(opts.dry_run)
    progress: ProgressView = RichProgress(Console(file=err)) if logged is None else logged
    try:
        job = prepare(cfg, opts, clock, sink_factory=sink_factory, progress=progress)
    except (ConfigError, FencedError):
        raise
    except SourceAuthError as exc:
        raise ConfigError(str(exc)) from None
    except ExporterError as exc:
        raise BackfillFailed(f"{exc}; nothing was published") from None
    with stop_on_signals(job.runner):
        report = job.run()
    if logged is not None:
        logged.summary(report)
    render(report, args.format, out)
    if report.exit_code:
        print(f"chargeback-exporter backfill: error: {_failure_line(report)}", file=err)
    return report.exit_code


def _failure_line(report: Report) -> str:
    if report.error is not None and isinstance(report.error, FencedError):
        return str(report.error)
    failed = report.failed
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {report.planned} period(s) failed (first: {failed[0].period}: "
                     f"{failed[0].error})")
    if report.error is not None:
        parts.append(f"stopped: {report.error}")
    return "; ".join(parts) + "; run the same command again to resume"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backfill", help="(re)publish a past range of periods, with corrections",
        description="Measure every period of [--from, --to) again and publish new or changed "
                    "period-clusters (revision + 1), one Kafka transaction per period. "
                    "Exit 0 done, 2 refused or bad input, 3 partial (rerun to resume), 4 fenced.",
    )
    add_common(p)
    p.add_argument("--from", dest="start", required=True,
                   help="first period start, RFC 3339, aligned to periods.length (inclusive)")
    p.add_argument("--to", dest="end", required=True, help="range end, RFC 3339, aligned (exclusive)")
    p.add_argument("--force", action="store_true",
                   help="republish unchanged period-clusters too (byte-identical, same revision)")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would change per period and cluster; publish nothing")
    p.add_argument("--allow-coarse", action="store_true",
                   help="measure periods Sysdig keeps only at a step coarser than the period as one step")
    age = p.add_mutually_exclusive_group()
    age.add_argument("--max-age", default=None,
                     help="refuse periods older than this (default backfill.max_age, 34d)")
    age.add_argument("--allow-old", action="store_true", help="no age guard")
    p.add_argument("--transactional-id", default=None,
                   help="the backfill's Kafka transactional id and checkpoint key "
                        "(default backfill.transactional_id, else <kafka.transactional_id>-backfill)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_backfill)
