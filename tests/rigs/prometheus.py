"""A real Prometheus for the tests that compare with one (PromQL conformance, dashboards)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from chargeback_simulator.prometheus import PrometheusUnavailable, RealPrometheus


@contextmanager
def serving(server: RealPrometheus, load: Callable[[RealPrometheus], object],
            purpose: str) -> Iterator[RealPrometheus]:
    """`server` with its blocks built by `load`, started, and stopped by PID afterwards.

    Prometheus missing or not coming up fails the test (naming `purpose`), never skips it.
    """
    try:
        load(server)
        server.start()
    except PrometheusUnavailable as exc:
        pytest.fail(f"{purpose} needs a real Prometheus: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
