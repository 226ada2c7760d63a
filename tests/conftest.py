"""Session fixtures shared by all test packages: real local brokers.

Folders keep their own fixtures in their own conftest.py (integration/sysdig, system, ...); see
tests/README.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chargeback_simulator.localbroker import LocalBroker
from exporter.config import Config
from exporter.logs import JsonFormatter, TextFormatter

THREAD_WAIT = 10.0  # bound on a late thread's end; normally it is already done


@pytest.fixture(autouse=True)
def _no_sdc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """sdcclient reads these and they would override constructor arguments."""
    for name in ("SDC_TOKEN", "SDC_URL", "SDC_SSL_VERIFY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _logging_setup_ends_with_the_test() -> Iterator[None]:
    """Undo what `exporter.logs.setup` (run by every CLI command) does to the root logger.

    Its handler writes to the test's captured stderr, which is closed when the test ends; left
    on the root logger, any later record becomes a "--- Logging error ---" traceback.
    """
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in before and isinstance(handler.formatter, JsonFormatter | TextFormatter):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _export_threads_end_with_the_test(_logging_setup_ends_with_the_test: None) -> Iterator[None]:
    """Join the worker export threads a test started before its output is closed.

    `Worker.serve` returns once the shutdown grace is over, while an in-flight period may still
    be finishing (and logging) in its export thread.
    """
    before = set(threading.enumerate())
    yield
    for thread in threading.enumerate():
        if thread.name == "chargeback-export" and thread not in before:
            thread.join(THREAD_WAIT)
            assert not thread.is_alive(), f"an export thread outlived its test by {THREAD_WAIT}s"


@pytest.fixture(scope="session")
def noida() -> Iterator[LocalBroker]:
    """A real noida-db broker (transactions, read_committed, fencing) for the whole session."""
    with LocalBroker("noida") as broker:
        yield broker


@pytest.fixture(scope="session")
def tansu() -> Iterator[LocalBroker]:
    """A real Tansu broker (memory only; read_committed does not hide aborted records)."""
    with LocalBroker("tansu") as broker:
        yield broker


@pytest.fixture
def fresh_noida(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of its own for tests that stop, kill or restart it."""
    broker = LocalBroker("noida", data_dir=tmp_path_factory.mktemp("noida"))
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def kafka_config(noida: LocalBroker) -> Callable[..., Config]:
    """A factory of configurations on the session broker, each with its own topics and id."""
    from tests.rigs.kafka import make_config

    def factory(**overrides: Any) -> Config:
        return make_config(noida.bootstrap, **overrides)

    return factory
