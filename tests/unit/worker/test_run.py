"""The `run` subcommand: flags, `--once`, serving with health, signals, one-line failures."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from exporter import stopping
from exporter.cli import build_parser, main
from exporter.clock import Clock, FakeClock
from exporter.config import Config
from exporter.errors import ConfigError, FencedError, IncompleteDataError
from exporter.metrics import Metrics
from exporter.periods import iso
from exporter.run import Parts, assemble, cmd_run, execute
from exporter.stopping import stop_on_signals
from exporter.wiring import build_pipeline
from tests.fakes.memory import FakeSource, MemoryBroker, MemorySink
from tests.rigs.paths import ROOT

from .conftest import HOUR, SETTLE, T0, make_rig, new_broker, published_periods

REPO = ROOT


class Fakes:
    """A `Build` over one in-memory broker, remembering what it built."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or new_broker()
        self.sources: list[FakeSource] = []
        self.sinks: list[MemorySink] = []
        self.coverage: dict[int, Decimal] = {}

    def __call__(self, cfg: Config, clock: Clock, metrics: Metrics) -> Parts:
        source = FakeSource(clock, cfg.periods.resolution)
        source.coverage.update(self.coverage)
        sink = MemorySink(self.broker, transactional_id=cfg.kafka.transactional_id,
                          on_abort=lambda _: metrics.transaction_aborts.inc())
        self.sources.append(source)
        self.sinks.append(sink)
        return build_pipeline(cfg, clock, metrics, source=source), sink, sink


class LogEvent(logging.Handler):
    """Set when `logger` emits `message`: the worker logs a period only once it is committed."""

    def __init__(self, logger: str, message: str) -> None:
        super().__init__(logging.INFO)
        self._message = message
        self._event = threading.Event()
        logging.getLogger(logger).addHandler(self)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self._message:
            self._event.set()

    def wait(self, timeout: float) -> bool:
        try:
            return self._event.wait(timeout)
        finally:
            logging.getLogger(self._logger).removeHandler(self)


def write_config(tmp_path: Path, **periods: object) -> Path:
    cfg = {"periods": {"length": "1h", "settle_delay": "5m", **periods},
           "kafka": {"transactional_id": "run-test"}, "logging": {"format": "json"}}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))
    return path


def parse(*argv: str) -> object:
    return build_parser().parse_args(["run", *argv])


def test_once_exports_every_closed_period_from_the_configured_start(tmp_path: Path) -> None:
    fakes = Fakes()
    args = parse("--config.file", str(write_config(tmp_path, start=iso(T0 - 4 * HOUR))), "--once")
    assert cmd_run(args, clock=FakeClock(T0 + SETTLE), build=fakes) == 0  # type: ignore[arg-type]
    assert published_periods(fakes.broker) == [T0 - 4 * HOUR + i * HOUR for i in range(4)]
    assert fakes.sinks[0].closed

    # A second pass an hour later continues from the checkpoint, not from the start.
    assert cmd_run(args, clock=FakeClock(T0 + HOUR + SETTLE), build=fakes) == 0  # type: ignore[arg-type]
    assert published_periods(fakes.broker) == [T0 - 4 * HOUR + i * HOUR for i in range(5)]


def test_once_fails_with_the_held_period(tmp_path: Path) -> None:
    fakes = Fakes()
    fakes.coverage[T0 - 2 * HOUR] = Decimal("0.2")
    args = parse("--config.file", str(write_config(tmp_path, start=iso(T0 - 4 * HOUR))), "--once")
    with pytest.raises(IncompleteDataError, match=r"coverage below 0\.95"):
        cmd_run(args, clock=FakeClock(T0 + SETTLE), build=fakes)  # type: ignore[arg-type]
    assert published_periods(fakes.broker) == [T0 - 4 * HOUR, T0 - 3 * HOUR]
    assert fakes.sinks[0].closed


def test_once_when_fenced_raises_exit_code_4() -> None:
    fakes = Fakes()
    service = assemble(Config(), FakeClock(T0 + SETTLE), Metrics(), fakes, serve_http=False)
    rival = MemorySink(fakes.broker, transactional_id=fakes.sinks[0].transactional_id)
    fakes.sinks[0].in_transaction = rival.start
    with pytest.raises(FencedError) as caught:
        execute(service, once=True)
    assert caught.value.exit_code == 4 and "\n" not in str(caught.value)
    assert fakes.broker.transactions == [] and fakes.sinks[0].closed


def test_serving_reports_ready_and_stops_cleanly(tmp_path: Path) -> None:
    fakes = Fakes()
    args = parse("--config.file", str(write_config(tmp_path)), "--web.listen-address", "127.0.0.1:0")
    from exporter.commands import config_from_args

    cfg = config_from_args(args, {"web": {"listen_address": "127.0.0.1:0"}})  # type: ignore[arg-type]
    service = assemble(cfg, FakeClock(T0 + SETTLE), Metrics(), fakes, serve_http=True)
    assert service.health is not None
    exported = LogEvent("exporter.worker", "period exported")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(execute(service, once=False)), daemon=True)
    t.start()
    assert exported.wait(10)
    url = service.health.url
    with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:  # noqa: S310 - 127.0.0.1
        assert json.loads(resp.read())["ready"] is True
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:  # noqa: S310 - 127.0.0.1
        assert b"chargeback_periods_exported_total" in resp.read()
    service.worker.request_stop()
    t.join(10)
    assert result == [0]
    assert published_periods(fakes.broker) == [T0 - HOUR]
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/healthz", timeout=2)  # noqa: S310 - server is gone


def test_first_signal_requests_a_graceful_stop_and_restores_handlers() -> None:
    r = make_rig()
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(r.worker):
        assert signal.getsignal(signal.SIGTERM) is not before
        signal.raise_signal(signal.SIGTERM)
        assert r.worker.stopping
        assert signal.getsignal(signal.SIGTERM) is before  # a second SIGTERM acts as usual
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_before_the_worker_exists_is_handed_to_it() -> None:
    r = make_rig()
    before = signal.getsignal(signal.SIGTERM)
    stopping.install()
    try:
        signal.raise_signal(signal.SIGTERM)  # still loading: remembered, not fatal
        assert signal.getsignal(signal.SIGTERM) is before  # a second SIGTERM acts as usual
        with stop_on_signals(r.worker):
            assert r.worker.stopping
        assert r.worker.run_once() == [] and r.worker.stopped_early and r.sink.closed
        assert r.broker.transactions == []
    finally:
        stopping.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_flags_are_parsed() -> None:
    args = parse("--once", "--web.listen-address", ":9999", "--config.file", "x.yaml")
    assert args.once is True and args.web_listen_address == ":9999"  # type: ignore[attr-defined]
    assert str(args.config_file) == "x.yaml"  # type: ignore[attr-defined]


def test_bad_listen_address_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    fakes = Fakes()
    args = parse("--config.file", str(write_config(tmp_path)), "--web.listen-address", "nowhere")
    with pytest.raises(ConfigError, match=r"^web.listen_address: expected host:port, got 'nowhere'$"):
        cmd_run(args, clock=FakeClock(T0), build=fakes)  # type: ignore[arg-type]
    assert fakes.sinks == []


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, length="7m")
    assert main(["run", "--config.file", str(path), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("chargeback-exporter run: error: ") and "periods.length" in err


def test_cli_missing_token_is_one_line_and_never_shows_secrets(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARGEBACK_", "SDC_"))}
    env["CHARGEBACK_KAFKA__SASL_PASSWORD"] = "s3cret-value"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "run", "--config.file", str(path), "--once"],
        capture_output=True, text=True, timeout=60, env=env, check=False, cwd=REPO,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["chargeback-exporter run: error: sysdig.token: not set "
                     "(use sysdig.token, sysdig.token_file or CHARGEBACK_SYSDIG__TOKEN)"]
    assert "Traceback" not in proc.stderr and "s3cret-value" not in proc.stderr + proc.stdout
