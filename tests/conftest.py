"""Session fixtures shared by all test packages: real local brokers.

Subpackages keep their own fixtures in their own conftest.py (simulator, conformance, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exporter.config import Config
from exporter.localbroker import LocalBroker


@pytest.fixture(autouse=True)
def _no_sdc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """sdcclient reads these and they would override constructor arguments."""
    for name in ("SDC_TOKEN", "SDC_URL", "SDC_SSL_VERIFY"):
        monkeypatch.delenv(name, raising=False)


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
    from tests.kafka.conftest import make_config

    def factory(**overrides: Any) -> Config:
        return make_config(noida.bootstrap, **overrides)

    return factory
