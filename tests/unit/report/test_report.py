"""`report`'s window, rows and renderings, without Sysdig (the CLI end to end is in
tests/integration/sysdig/test_report_cli.py)."""

from __future__ import annotations

import argparse

import pytest
from rich.table import Table

from exporter.clock import FakeClock
from exporter.commands import report_window
from exporter.config import Config
from exporter.periods import Period
from exporter.report import print_table

H = 3600
T0 = 1_794_009_600  # 2026-11-07T00:00:00Z


def last(text: str, now: int, cfg: Config | None = None) -> list[Period]:
    args = argparse.Namespace(start=None, end=None, last=text)
    return report_window(args, cfg or Config(), FakeClock(now))


@pytest.mark.parametrize("now", [T0 + 3 * H + 300, T0 + 3 * H + 301, T0 + 3 * H + 1800,
                                 T0 + 4 * H + 299])
def test_last_1h_is_the_last_closed_hour_the_worker_publishes(now: int) -> None:
    # The worker publishes a period once its end plus the settle delay (300 s) has passed.
    assert last("1h", now) == [Period(T0 + 2 * H, T0 + 3 * H)]


def test_last_moves_on_when_the_next_period_settles() -> None:
    assert last("1h", T0 + 4 * H + 300) == [Period(T0 + 3 * H, T0 + 4 * H)]


def test_last_covers_the_duration_with_closed_periods() -> None:
    now = T0 + 3 * H + 1800
    assert last("3h", now) == [Period(T0 + h * H, T0 + (h + 1) * H) for h in range(3)]
    assert last("90m", now) == [Period(T0 + H, T0 + 2 * H), Period(T0 + 2 * H, T0 + 3 * H)]
    assert last("1d", now) == [Period(T0 + h * H, T0 + (h + 1) * H) for h in range(-21, 3)]


def test_a_fitted_table_cuts_no_cell_short() -> None:
    name = "workload-" + "x" * 240
    table = Table()
    for column in ("workload", "Core-Hours\nused"):
        table.add_column(column)
    table.add_row(name, "0.000001")
    out: list[str] = []
    print_table(table, out.append, fit=True)
    assert name in out[0] and "…" not in out[0]
