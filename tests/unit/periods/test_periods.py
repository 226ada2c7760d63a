from datetime import UTC, datetime

import pytest

from exporter.periods import (
    Period,
    closed_periods,
    format_duration,
    iter_periods,
    parse_duration,
    parse_time,
    period_containing,
)

H = 3600
T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("1h", 3600), ("1d", 86400),
                                                ("90s", 90), ("1h30m", 5400), ("120", 120), (60, 60)])
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "1x", "-5m", "5ms", "h"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    for s in (600, 3600, 86400, 90):
        assert parse_duration(format_duration(s)) == s


def test_parse_time_forms() -> None:
    assert parse_time("2026-11-01T00:00:00Z") == T0
    assert parse_time("2026-11-01T01:00:00+01:00") == T0
    assert parse_time("2026-11-01T00:00:00") == T0
    assert parse_time(str(T0)) == T0
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_period_is_half_open_and_aligned() -> None:
    p = period_containing(T0 + 1799, H)
    assert p == Period(T0, T0 + H)
    assert p.length == H
    assert str(p) == "[2026-11-01T00:00:00Z, 2026-11-01T01:00:00Z)"
    with pytest.raises(ValueError):
        Period(T0, T0)


def test_iter_periods_aligns_inward() -> None:
    got = list(iter_periods(T0 + 1, T0 + 3 * H + 5, H))
    assert got == [Period(T0 + H, T0 + 2 * H), Period(T0 + 2 * H, T0 + 3 * H)]
    assert list(iter_periods(T0, T0 + H - 1, H)) == []


def test_closed_periods_respect_settle_delay() -> None:
    # at 02:04 with a 5-minute settle delay, only [00:00,01:00) has closed and settled
    got = list(closed_periods(T0, T0 + 2 * H + 240, H, 300))
    assert got == [Period(T0, T0 + H)]
    got = list(closed_periods(T0, T0 + 2 * H + 300, H, 300))
    assert got[-1] == Period(T0 + H, T0 + 2 * H)
