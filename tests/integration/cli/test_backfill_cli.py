"""The `backfill` subcommand as installed: one-line errors, flags, the progress bar."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from rich.console import Console

from exporter.backfill.render import RichProgress
from exporter.backfill.runner import PeriodOutcome
from exporter.cli import build_parser
from exporter.periods import Period


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARGEBACK_", "SDC_"))}
    env["CHARGEBACK_SYSDIG__TOKEN"] = "secret-token-for-cli-test"
    return subprocess.run([sys.executable, "-m", "exporter", "backfill", *argv], capture_output=True,
                          text=True, timeout=60, env=env)


def test_registered_with_the_cli() -> None:
    args = build_parser().parse_args(["backfill", "--from", "2026-10-01T00:00:00Z",
                                      "--to", "2026-11-01T00:00:00Z", "--dry-run"])
    assert args.command == "backfill" and args.dry_run and args.format == "table"


def test_bad_time_is_one_line_exit_2() -> None:
    proc = run("--from", "yesterday-ish", "--to", "2026-11-01T00:00:00Z")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "chargeback-exporter backfill: error: --from: not a time: 'yesterday-ish' "
        "(expected RFC 3339, e.g. 2026-11-01T00:00:00Z)"]
    assert proc.stdout == ""


def test_max_age_and_allow_old_exclude_each_other() -> None:
    proc = run("--from", "2026-10-01T00:00:00Z", "--to", "2026-11-01T00:00:00Z",
               "--max-age", "3d", "--allow-old")
    assert proc.returncode == 2
    assert "not allowed with argument" in proc.stderr and "Traceback" not in proc.stderr


def test_progress_bar_counts_periods_and_records() -> None:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=120))
    progress.start(2)
    progress.advance(PeriodOutcome(Period(0, 3600), 10, "published", records=40))
    progress.advance(PeriodOutcome(Period(3600, 7200), 10, "skipped"))
    progress.stop()
    text = out.getvalue()
    assert "2/2" in text and "40 records" in text
