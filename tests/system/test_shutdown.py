"""SIGTERM at any moment of `run`, and the start-up against a broker that does not answer.

Every test runs the exporter as a real process. The "broker" of the start-up tests is a
listening socket that accepts connections and never answers (`SilentBroker`): the moment it
accepts the exporter's first connection is the moment the start-up is waiting on Kafka, known
without guessing a delay. The export test uses a real broker and the Sysdig simulator, and
stops the worker while a period's transaction is open on the broker.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import SimulatorServer
from exporter.clock import SystemClock
from exporter.config import Config, load_config
from exporter.periods import align_down
from exporter.wiring import build_codec
from tests.rigs.campaign import SLOW_PRODUCER, tune_server
from tests.rigs.harness import (
    ExporterProcess,
    RecordWatch,
    check_ledger,
    is_event,
    last_checkpoint,
    read_committed,
)

TOKEN = "shutdown-token-4f1c"
STOP_BOUND = 10.0  # the documented bound from SIGTERM to exit (worker.shutdown_grace, default 10s)
SIGTERM_CAUGHT = 1 << (signal.SIGTERM - 1)  # its bit in /proc/<pid>/status SigCgt


Spawn = Callable[[list[str]], ExporterProcess]


class SilentBroker:
    """A TCP listener that accepts connections and never answers: an unreachable Kafka whose
    first contact is observable. `contacted` is set, with `first` (monotonic), on the first
    accept."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self.contacted = threading.Event()
        self.first = 0.0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.contacted.is_set():
                self.first = time.monotonic()
                self.contacted.set()
            self._conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._sock.close()


@pytest.fixture
def silent() -> Iterator[SilentBroker]:
    broker = SilentBroker()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[list[str]], ExporterProcess]]:
    """Starts `python -m exporter *argv`; whatever still runs at the end is killed."""
    started: list[ExporterProcess] = []

    def start(argv: list[str]) -> ExporterProcess:
        started.append(ExporterProcess(argv))
        return started[-1]

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.kill()


def write(tmp_path: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def silent_config(tmp_path: Path, broker: SilentBroker, *, connect_timeout: int,
                  name: str = "silent") -> Path:
    return write(tmp_path, name, {
        "sysdig": {"url": "http://127.0.0.1:1", "token": TOKEN},
        "kafka": {"bootstrap_servers": broker.address, "connect_timeout": connect_timeout,
                  "transactional_id": f"shutdown-{uuid.uuid4().hex[:8]}"},
        "web": {"enabled": False},
        "logging": {"format": "json"},
    })


def assert_clean_stop(proc: ExporterProcess, signalled: float) -> float:
    """The process exits 0 within `STOP_BOUND` of the signal, with no error line; the time taken."""
    assert proc.finished(STOP_BOUND + 5), f"still running {STOP_BOUND + 5}s after SIGTERM"
    took = time.monotonic() - signalled
    assert proc.proc.returncode == 0, proc.stderr[-2000:]
    assert took <= STOP_BOUND, f"stopped {took:.1f}s after SIGTERM"
    assert "Traceback" not in proc.stderr
    assert not [ln for ln in proc.stderr_lines if not ln.startswith("{")], proc.stderr[-2000:]
    return took


def caught_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.timeout(120)
def test_sigterm_while_kafka_does_not_answer_stops_at_once(spawn: Spawn, tmp_path: Path,
                                                           silent: SilentBroker) -> None:
    """The topic check blocks on a broker that never answers (60 s budget): SIGTERM ends it."""
    proc = spawn(["run", "--config.file", str(silent_config(tmp_path, silent, connect_timeout=60))])
    assert silent.contacted.wait(60), proc.stderr[-2000:]
    proc.signal(signal.SIGTERM)
    took = assert_clean_stop(proc, time.monotonic())
    assert proc.matching("stop requested")[0]["signal"] == "SIGTERM"
    assert proc.matching("worker stopped"), proc.stderr[-2000:]
    print(json.dumps({"sigterm_during_startup_exit_seconds": round(took, 2)}))


@pytest.mark.timeout(120)
def test_sigterm_as_soon_as_the_process_can_take_it(spawn: Spawn, tmp_path: Path,
                                                    silent: SilentBroker) -> None:
    """The handler is in place before the heavy imports (librdkafka), so the window in which a
    SIGTERM still kills the process (exit 143) is only the interpreter's own start-up."""
    proc = spawn(["run", "--config.file", str(silent_config(tmp_path, silent, connect_timeout=60))])
    deadline = time.monotonic() + 30
    # Until its exec, the child shows the handlers of the forking test process.
    while b"exporter" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() \
            or not caught_signals(proc.pid) & SIGTERM_CAUGHT:
        assert proc.proc.poll() is None and time.monotonic() < deadline, proc.stderr[-2000:]
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    proc.signal(signal.SIGTERM)
    assert_clean_stop(proc, time.monotonic())
    assert "librdkafka" not in maps and "confluent_kafka" not in maps, "the handler came too late"
    assert not proc.matching("worker started") and proc.matching("stop requested")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv", [["run"], ["run", "--once"]], ids=["serve", "once"])
def test_sigterm_in_the_first_tenths_of_a_second_exits_0(spawn: Spawn, tmp_path: Path, silent: SilentBroker,
                                                         argv: list[str]) -> None:
    proc = spawn([*argv, "--config.file", str(silent_config(tmp_path, silent, connect_timeout=60))])
    assert not proc.finished(0.3)
    proc.signal(signal.SIGTERM)
    assert_clean_stop(proc, time.monotonic())


@pytest.mark.timeout(120)
def test_an_unreachable_broker_is_reported_after_connect_timeout(spawn: Spawn, tmp_path: Path,
                                                                 silent: SilentBroker) -> None:
    """`kafka.connect_timeout` bounds the start's wait for the broker, retries included."""
    budget = 3
    procs = {name: spawn([*argv, "--config.file",
                                    str(silent_config(tmp_path, silent, connect_timeout=budget, name=name))])
             for name, argv in (("serve", ["run"]), ("once", ["run", "--once"]))}
    assert silent.contacted.wait(60)
    waited = {}
    for name, proc in procs.items():
        assert proc.finished(60), f"{name}: still waiting for the broker"
        waited[name] = time.monotonic() - silent.first
        assert proc.proc.returncode == 1
        [line] = [ln for ln in proc.stderr_lines if not ln.startswith("{")]
        assert line.startswith("chargeback-exporter run: error: Kafka 127.0.0.1:") and "\n" not in line
    print(json.dumps({"connect_timeout": budget, "exit_after_first_contact_seconds": waited}))
    # Never before the budget. After it: the second process's start-up lag behind the first
    # contact, which a loaded machine stretches; the bound only has to tell the budget from
    # librdkafka's own retrying (over two minutes).
    assert all(budget - 0.5 <= w <= budget + 15 for w in waited.values()), waited


# --- during export, against a real broker -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_during_export_commits_or_aborts_the_period_in_flight(spawn: Spawn, tmp_path: Path,
                                                                      noida: LocalBroker) -> None:
    clock = SystemClock()
    spec = FleetSpec(seed=11, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=3)
    length = 600
    history = 6 * 3600
    fleet = Fleet(spec, clock=clock, history=history, timelines=((10, history),))
    server = SimulatorServer(fleet, clock, tokens=[TOKEN])
    server.start()
    tune_server(server)
    tag = uuid.uuid4().hex[:8]
    start = align_down(int(clock.time()) - 4 * 3600, length)
    path = write(tmp_path, "export", {
        "sysdig": {"url": server.url, "token": TOKEN, "timeout": 10, "retention_tiers": False,
                   "max_attempts": 3, "max_retry_time": 30},
        "periods": {"length": "10m", "settle_delay": "1m", "start": start},
        "kafka": {"bootstrap_servers": noida.bootstrap, "partitions": 3, "replication_factor": 1,
                  "transactional_id": f"shutdown-{tag}", "transaction_timeout": 30,
                  "connect_timeout": 10, "extra": dict(SLOW_PRODUCER),
                  "topics": {"records": f"records-{tag}", "manifests": f"manifests-{tag}",
                             "checkpoint": f"checkpoint-{tag}"}},
        "web": {"enabled": False},
        "logging": {"format": "json"},
    })
    cfg: Config = load_config(path, environ={})
    watch = RecordWatch(cfg)
    try:
        proc = spawn(["run", "--config.file", str(path)])
        anchor = proc.wait_event(is_event("period exported"), count=3, timeout=120)
        assert anchor is not None, proc.stderr[-2000:]
        at, doc = anchor
        # The first record of the next period on the broker: its transaction is open.
        seen = watch.seen_after(int(doc["period_end"]), at, timeout=60,
                                alive=lambda: proc.proc.poll() is None)
        assert seen is not None, proc.stderr[-2000:]
        proc.signal(signal.SIGTERM)
        took = assert_clean_stop(proc, time.monotonic())
    finally:
        watch.close()
        server.stop()
    end = last_checkpoint(cfg)
    assert end is not None and end >= int(doc["period_end"])
    exported = [d["period_start"] for d in proc.matching("period exported")]
    assert exported == list(range(start, end, length)), "every committed period was logged, in order"
    ledger = check_ledger(cfg, fleet, start, end)
    assert ledger.problems == [], ledger.problems
    assert (ledger.duplicates, ledger.gaps, ledger.wrong_quantities, ledger.manifest_problems) == (0, 0, 0, 0)
    # Nothing after the checkpoint is visible: the period in flight committed whole or not at all.
    codec = build_codec(cfg)
    starts = {codec.decode_record(r.value).period_start // 1000
              for r in read_committed(cfg, cfg.kafka.topics.records)}
    assert max(starts) < end
    print(json.dumps({"sigterm_during_export_exit_seconds": round(took, 2),
                      "periods_committed": len(exported)}))
