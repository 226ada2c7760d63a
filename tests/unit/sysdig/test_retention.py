"""The retention model: Sysdig's timelines, the documented fallback, refresh and step choice."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.clock import FakeClock
from exporter.errors import RetentionError, SourceAuthError, SourceQueryError, SourceUnavailable
from exporter.periods import Period
from exporter.sysdig.retention import DOCUMENTED, Retention, Tier, parse_timelines

NOW = 1_794_009_600  # an hour (and day) boundary
H = 3600
D = 86400
US = 1_000_000


def timelines(*windows: tuple[int, int | None], now: int = NOW) -> dict[str, Any]:
    """A timelines body as Sysdig sends it: (sampling s, window s or None) per tier."""
    return {"agents": [{"from": None if w is None else (now - w) * US, "to": now * US,
                        "sampling": s * US} for s, w in windows]}


class Reader:
    """A `TimelinesReader` answering from a script: bodies, None (404) or exceptions."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def timelines(self) -> Any:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def started(age: int, length: int = H) -> Period:
    """The period of `length` that started `age` seconds before NOW."""
    return Period(NOW - age, NOW - age + length)


JULY_2020 = ((10, 4 * H), (60, 7 * D), (600, 14 * D), (3600, 60 * D), (86400, 450 * D))


def test_the_documented_table_is_sysdigs_july_2020_one() -> None:
    assert tuple((t.step, t.window) for t in DOCUMENTED) == JULY_2020


def test_timelines_become_windows_finest_first() -> None:
    body = timelines((600, 14 * D), (10, 4 * H), (60, 7 * D), (86400, None))
    assert parse_timelines(body, NOW) == (Tier(10, 4 * H), Tier(60, 7 * D), Tier(600, 14 * D),
                                          Tier(86400, None))


def test_a_missing_to_counts_from_the_time_of_reading() -> None:
    body = {"agents": [{"from": (NOW - 5 * H) * US, "to": None, "sampling": 10 * US}]}
    assert parse_timelines(body, NOW) == (Tier(10, 5 * H),)


@pytest.mark.parametrize("body", [
    None, [], {}, {"agents": []}, {"agents": "x"}, {"agents": [1]},
    {"agents": [{"from": 0, "to": 1, "sampling": "10"}]},
    {"agents": [{"from": 0, "to": 1, "sampling": 500_000}]},
    {"agents": [{"from": 0, "to": 1, "sampling": 1_500_000}]},
    {"agents": [{"from": 1.5, "to": 10, "sampling": 10 * US}]},
    {"agents": [{"from": True, "to": 10, "sampling": 10 * US}]},
    {"agents": [{"from": 10 * US, "to": 5 * US, "sampling": 10 * US}]},
])
def test_malformed_timelines_are_a_query_error(body: Any) -> None:
    with pytest.raises(SourceQueryError, match="retention timelines"):
        parse_timelines(body, NOW)


@pytest.mark.parametrize(("age", "step"), [
    (0, 10),
    (4 * H, 10),  # the 10 s window still holds the start
    (4 * H + 1, 60),
    (5 * H, 60),
    (7 * D, 60),
    (7 * D + 1, 600),
    (14 * D, 600),
    (14 * D + 1, 3600),
    (60 * D, 3600),
    (60 * D + 1, 86400),
    (450 * D, 86400),
])
def test_the_finest_window_holding_the_start_gives_the_step(age: int, step: int) -> None:
    model = Retention(Reader(timelines(*JULY_2020)), clock=FakeClock(NOW))
    assert model.step_for(started(age)) == step
    assert model.origin == "timelines"


def test_the_step_is_never_finer_than_the_configured_resolution() -> None:
    model = Retention(Reader(timelines(*JULY_2020)), clock=FakeClock(NOW), resolution=60)
    assert model.step_for(started(H)) == 60
    assert model.step_for(started(10 * D)) == 600


def test_beyond_every_window_is_a_retention_error() -> None:
    model = Retention(Reader(timelines(*JULY_2020)), clock=FakeClock(NOW))
    assert model.available_step(started(450 * D + 1)) is None
    with pytest.raises(RetentionError, match=r"beyond Sysdig's longest retention \(450d"):
        model.step_for(started(450 * D + 1))


def test_a_tenant_keeping_10s_longer_is_measured_at_10s() -> None:
    model = Retention(Reader(timelines((10, 6 * H), (60, 30 * D))), clock=FakeClock(NOW))
    assert model.step_for(started(5 * H)) == 10
    assert model.step_for(started(20 * D)) == 60
    with pytest.raises(RetentionError, match=r"\(30d, timelines\)"):
        model.step_for(started(31 * D))


@pytest.mark.parametrize("failure", [
    None,  # HTTP 404: Sysdig has no timelines endpoint
    SourceUnavailable("Sysdig x (retention timelines): HTTP 503 down"),
    SourceQueryError("Sysdig x (retention timelines): malformed response: body is not JSON"),
    {"agents": "not a list"},
])
def test_a_refused_or_failed_read_falls_back_to_the_documented_table_with_a_warning(
        failure: Any, caplog: pytest.LogCaptureFixture) -> None:
    model = Retention(Reader(failure), clock=FakeClock(NOW))
    with caplog.at_level(logging.WARNING, logger="exporter.retention"):
        assert model.step_for(started(5 * H)) == 60
    assert model.origin == "documented"
    assert model.tiers() == DOCUMENTED
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["Sysdig retention timelines unavailable; using the documented July 2020 "
                      "retention table (10s for 4h, 1m for 1w, 10m for 2w, 1h for 60d, "
                      "1d for 450d)"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_token_is_an_error_not_a_reason_to_guess(status: int) -> None:
    model = Retention(Reader(SourceAuthError(f"Sysdig x: HTTP {status}")), clock=FakeClock(NOW))
    with pytest.raises(SourceAuthError, match=f"HTTP {status}"):
        model.step_for(started(H))


def test_timelines_are_read_once_then_again_after_the_refresh_interval() -> None:
    clock = FakeClock(NOW)
    reader = Reader(timelines((10, 4 * H)), timelines((10, 8 * H)))
    model = Retention(reader, clock=clock, refresh=D)
    assert reader.calls == 0  # nothing is read before it is needed
    assert model.step_for(started(H)) == 10
    clock.advance(D - 1)
    assert model.available_step(Period(int(clock.time()) - 5 * H, int(clock.time()) - 4 * H)) is None
    assert reader.calls == 1
    clock.advance(1)
    assert model.available_step(Period(int(clock.time()) - 5 * H, int(clock.time()) - 4 * H)) == 10
    assert reader.calls == 2


def test_windows_slide_with_the_clock_between_reads() -> None:
    clock = FakeClock(NOW)
    model = Retention(Reader(timelines(*JULY_2020)), clock=clock)
    period = started(3 * H)
    assert model.step_for(period) == 10
    clock.advance(2 * H)  # the same period is now 5 h old: its 10 s data is gone
    assert model.step_for(period) == 60


def test_after_a_failed_read_sysdig_is_asked_again_within_the_hour() -> None:
    clock = FakeClock(NOW)
    reader = Reader(SourceUnavailable("down"), timelines((10, 8 * H)))
    model = Retention(reader, clock=clock, refresh=D)
    assert model.origin == "documented"
    clock.advance(H)
    assert model.origin == "timelines" and reader.calls == 2
    assert model.step_for(started(5 * H)) == 10


def test_disabled_tiers_measure_everything_at_the_resolution_and_never_ask() -> None:
    reader = Reader(timelines(*JULY_2020))
    model = Retention(reader, clock=FakeClock(NOW), resolution=10, enabled=False)
    assert model.step_for(started(5 * H)) == 10
    assert model.step_for(started(100 * D)) == 10
    assert model.origin == "disabled" and reader.calls == 0
    with pytest.raises(RetentionError, match=r"\(450d, disabled\)"):
        model.step_for(started(451 * D))


def test_without_a_reader_the_documented_table_is_used_silently(
        caplog: pytest.LogCaptureFixture) -> None:
    model = Retention(None, clock=FakeClock(NOW))
    with caplog.at_level(logging.WARNING, logger="exporter.retention"):
        assert model.step_for(started(5 * H)) == 60
    assert model.origin == "documented" and not caplog.records
