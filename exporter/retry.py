"""Every retry policy of the exporter, in one place.

Retries happen only at adapter boundaries, on `RetryableError`s, bounded both in attempts and
in total time, sleeping on the injected clock so tests never wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from exporter.clock import Clock
from exporter.errors import RetryableError, SourceUnavailable

T = TypeVar("T")
log = logging.getLogger("exporter.retry")


class _RetryAfterOrBackoff:
    """Honour a server's Retry-After (capped) and otherwise back off exponentially with jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._backoff = wait_exponential_jitter(initial=initial, max=maximum, jitter=initial)
        self._maximum = maximum

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, SourceUnavailable) and exc.retry_after is not None:
            return float(min(max(exc.retry_after, 0.0), self._maximum))
        return float(self._backoff(state))


def call_with_retries(
    fn: Callable[[], T],
    *,
    clock: Clock,
    attempts: int,
    max_delay: float,
    what: str,
    initial_wait: float = 1.0,
    max_wait: float = 60.0,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> T:
    """Call `fn`, retrying `RetryableError` up to `attempts` times or `max_delay` seconds.

    The last error is re-raised unchanged, so callers see the domain error, not tenacity's.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            log.warning(
                "retrying",
                extra={"what": what, "attempt": state.attempt_number, "error": str(exc)},
            )
            if on_retry is not None:
                on_retry(exc, state.attempt_number)

    # tenacity measures elapsed time on its own monotonic clock; stop on the injected one.
    start = clock.time()

    def stop(state: RetryCallState) -> bool:
        return state.attempt_number >= attempts or clock.time() - start >= max_delay

    retrying = Retrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop,
        wait=_RetryAfterOrBackoff(initial_wait, max_wait),
        sleep=clock.sleep,
        reraise=True,
        before_sleep=before_sleep,
    )
    return retrying(fn)
