"""Showing a backfill: its progress while it runs and its report at the end.

Progress is a rich bar on a terminal, or one log line per period for a run without one (a
Kubernetes Job); the report is tables, or one JSON document with Decimals as exact strings.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from exporter.backfill.runner import ClusterChange, PeriodOutcome, Report
from exporter.periods import iso

# One logger for the whole package: operators filter on it (docs/backfill.md).
log = logging.getLogger("exporter.backfill")


class RichProgress:
    """A rich progress bar: periods done of total, records published, ETA."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("periods"),
            TextColumn("{task.fields[records]} records"), TimeRemainingColumn(),
            console=console, transient=True,
        )
        self._task: Any = None
        self._records = 0

    def start(self, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("periods", total=total, records=0)

    def advance(self, outcome: PeriodOutcome) -> None:
        self._records += outcome.records
        self._progress.update(self._task, advance=1, records=self._records)

    def stop(self) -> None:
        self._progress.stop()


class LogProgress:
    """Progress as log lines, for a run without a terminal (a Kubernetes Job): one line per
    period done (`backfill period`) and, from `summary`, one for the run (`backfill summary`),
    in the configured log format. `corrections` counts the period-clusters whose records
    changed (revision + 1); `new` those published for the first time."""

    def __init__(self, dry_run: bool) -> None:
        self._dry_run = dry_run
        self._total = 0
        self._done = 0

    def start(self, total: int) -> None:
        self._total = total

    def advance(self, outcome: PeriodOutcome) -> None:
        self._done += 1
        extra: dict[str, Any] = {
            "period": str(outcome.period), "period_start": outcome.period.start,
            "period_end": outcome.period.end, "status": outcome.status, "records": outcome.records,
            "corrections": sum(1 for c in outcome.clusters if c.change == "changed"),
            "new": sum(1 for c in outcome.clusters if c.change == "new"),
            "step_seconds": outcome.step, "done": self._done, "total": self._total,
            "dry_run": self._dry_run,
        }
        if outcome.error is not None:
            extra["error"] = outcome.error
        (log.warning if outcome.status == "failed" else log.info)("backfill period", extra=extra)

    def stop(self) -> None:
        pass

    @staticmethod
    def summary(report: Report) -> None:
        """Log the run's totals as one line (the JSON report's fields without the details)."""
        doc = report_json(report)
        del doc["details"]
        doc["corrections"] = sum(1 for o in report.outcomes for c in o.clusters if c.change == "changed")
        doc["exit_code"] = report.exit_code
        (log.info if report.exit_code == 0 else log.warning)("backfill summary", extra=doc)


def _rev(c: ClusterChange) -> str:
    before = "-" if c.revision_before is None else str(c.revision_before)
    return f"{before} → {c.revision}"


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (Decimals as exact strings, times as RFC 3339)."""
    cpu, mem, cost = report.totals()
    return {
        "from": iso(report.start), "to": iso(report.end), "dry_run": report.dry_run,
        "transactional_id": report.instance, "retention": report.retention,
        "resumed_from": None if report.resumed_from is None else iso(report.resumed_from),
        **report.counts(),
        "core_hours": str(cpu), "gib_hours": str(mem),
        "cost": {k: str(v) for k, v in sorted(cost.items())},
        "throttled": report.throttles, "lowest_concurrency": report.lowest_concurrency,
        "error": None if report.error is None else str(report.error),
        "details": [
            {"period_start": iso(o.period.start), "period_end": iso(o.period.end), "status": o.status,
             "step_seconds": o.step, "records": o.records, "error": o.error,
             "clusters": [{"cluster": c.cluster, "change": c.change,
                           "revision_before": c.revision_before, "revision": c.revision,
                           "records": c.records, "published": c.published} for c in o.clusters]}
            for o in report.outcomes
        ],
    }


def details_table(report: Report) -> Table:
    """Per period and cluster: new/changed/unchanged and old → new revision."""
    verb = "would publish" if report.dry_run else "published"
    kind = "dry run " if report.dry_run else ""
    t = Table(title=f"Backfill {kind}{iso(report.start)} to {iso(report.end)}")
    for col in ("period start", "cluster", "change", "revision", "records", verb):
        t.add_column(col, justify="right" if col in ("records", "revision") else "left")
    for o in report.outcomes:
        if o.status == "failed":
            t.add_row(iso(o.period.start), "", "failed", "", "", o.error or "")
            continue
        for c in o.clusters:
            t.add_row(iso(o.period.start), c.cluster, c.change, _rev(c), str(c.records),
                      "yes" if c.published else "no")
    return t


def summary_table(report: Report) -> Table:
    """Periods, changed, skipped, failed, records and totals."""
    c = report.counts()
    cpu, mem, cost = report.totals()
    t = Table(title="Backfill summary" + (" (dry run: nothing published)" if report.dry_run else ""))
    t.add_column("")
    t.add_column("value", justify="right")
    rows = [
        ("range", f"{iso(report.start)} to {iso(report.end)}"),
        ("resumed from", iso(report.resumed_from) if report.resumed_from is not None else "-"),
        ("periods", str(c["periods"])),
        ("changed periods", str(c["changed"])),
        ("skipped (unchanged)", str(c["skipped"])),
        ("republished (--force)", str(c["forced"])),
        ("failed", str(c["failed"])),
        ("not reached", str(c["not_reached"])),
        ("records" + (" (would publish)" if report.dry_run else ""), str(c["records"])),
        ("Core-Hours", str(cpu)),
        ("GiB-Hours", str(mem)),
    ]
    rows += [(f"cost ({cur})", str(v)) for cur, v in sorted(cost.items())]
    rows += [("Sysdig throttled", f"{report.throttles} (lowest concurrency {report.lowest_concurrency})"),
             ("retention tiers", report.retention)]
    for k, v in rows:
        t.add_row(k, v)
    return t


def render(report: Report, fmt: str, out: TextIO) -> None:
    """Write the report to `out`: tables, or one JSON document."""
    if fmt == "json":
        out.write(json.dumps(report_json(report), separators=(",", ":")) + "\n")
        return
    console = Console(file=out, width=160)
    if report.dry_run or report.failed:
        console.print(details_table(report))
    console.print(summary_table(report))
