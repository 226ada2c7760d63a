import pytest

from exporter.clock import FakeClock
from exporter.errors import SourceQueryError, SourceUnavailable
from exporter.retry import call_with_retries


def flaky(failures: list[Exception]):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    return fn, calls


def test_retry_after_is_honoured_on_the_injected_clock() -> None:
    clock = FakeClock(1000)
    fn, calls = flaky([SourceUnavailable("429", retry_after=7), SourceUnavailable("429", retry_after=3)])
    assert call_with_retries(fn, clock=clock, attempts=5, max_delay=100, what="t") == "ok"
    assert calls["n"] == 3
    assert clock.sleeps == [7.0, 3.0]


def test_attempts_bound_and_last_error_is_reraised() -> None:
    clock = FakeClock()
    fn, calls = flaky([SourceUnavailable(f"e{i}") for i in range(10)])
    with pytest.raises(SourceUnavailable, match="e3"):
        call_with_retries(fn, clock=clock, attempts=4, max_delay=1e9, what="t")
    assert calls["n"] == 4


def test_total_time_bound() -> None:
    clock = FakeClock()
    fn, calls = flaky([SourceUnavailable("slow", retry_after=40) for _ in range(10)])
    with pytest.raises(SourceUnavailable):
        call_with_retries(fn, clock=clock, attempts=100, max_delay=100, max_wait=60, what="t")
    assert clock.time() <= 160
    assert calls["n"] == 4  # 0, 40, 80, 120 -> stop


def test_non_retryable_errors_are_not_retried() -> None:
    clock = FakeClock()
    fn, calls = flaky([SourceQueryError("bad query")])
    with pytest.raises(SourceQueryError):
        call_with_retries(fn, clock=clock, attempts=5, max_delay=100, what="t")
    assert calls["n"] == 1
    assert clock.sleeps == []
