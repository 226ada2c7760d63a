"""A real Prometheus loaded with a fleet's samples, and a Sysdig-style proxy in front of it.

Used by the PromQL conformance tests (and anything else that wants a second, real engine): the
fleet is exported to OpenMetrics, `promtool tsdb create-blocks-from openmetrics` turns it into
TSDB blocks, and `prometheus` serves them on 127.0.0.1. `SysdigPrometheusProxy` adds what Sysdig
adds in front of the same API (the `/prometheus` prefix and Bearer auth), so the real `sdcclient`
can talk to the real engine.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import requests

from chargeback_simulator.background import BackgroundHTTP
from chargeback_simulator.fleet import Fleet
from chargeback_simulator.processes import stop_process


class PrometheusUnavailable(RuntimeError):
    """`prometheus`/`promtool` are missing or did not come up; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RealPrometheus:
    """Debian's `prometheus` serving blocks backfilled from a fleet, on 127.0.0.1.

    `load()` exports `[start, end)` of the fleet and builds blocks; `start()` launches the
    server and waits (bounded by `ready_timeout`) on `/-/ready`; `stop()` terminates it by PID.
    Raises `PrometheusUnavailable` with a one-line reason (binary missing, promtool failed,
    not ready in time, with the log's last line).
    """

    def __init__(self, workdir: Path, prometheus: str = "prometheus", promtool: str = "promtool",
                 ready_timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.workdir = Path(workdir)
        self.tsdb = self.workdir / "tsdb"
        self._prometheus = prometheus
        self._promtool = promtool
        self._ready_timeout = ready_timeout
        self._sleep = sleep
        self._timer = timer
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.samples = 0

    @staticmethod
    def _binary(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise PrometheusUnavailable(
                f"{name} not found on PATH: install Debian's 'prometheus' package "
                "(scripts/test-infra.sh does it)")
        return path

    def load(self, fleet: Fleet, start: int, end: int) -> int:
        """Export the fleet's samples in `[start, end)` and build TSDB blocks; returns samples."""
        self._binary(self._promtool)  # missing: say so before the export, which can be long
        self.workdir.mkdir(parents=True, exist_ok=True)
        source = self.workdir / "fleet.om"
        self.samples = fleet.export_openmetrics(start, end, source)
        self.load_openmetrics(source)
        source.unlink()
        return self.samples

    def load_openmetrics(self, source: Path) -> None:
        """Build TSDB blocks from the samples of an OpenMetrics file."""
        promtool = self._binary(self._promtool)
        done = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics",
                               str(source), str(self.tsdb)], capture_output=True, timeout=300,
                              check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
            raise PrometheusUnavailable(
                f"promtool create-blocks-from failed ({done.returncode}): "
                f"{tail[-1] if tail else 'no output'}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RealPrometheus:
        """Launch prometheus on a free loopback port and wait until it is ready."""
        binary = self._binary(self._prometheus)
        config = self.workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1m\n", encoding="utf-8")
        self.port = free_port()
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child
        self._proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.tsdb}",
             "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = self._timer() + self._ready_timeout
        while self._timer() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            self._sleep(0.05)
        code = self._proc.poll()
        self.stop()
        last = self._log_tail()
        state = f"exited with {code}" if code is not None else "not ready in time"
        raise PrometheusUnavailable(f"prometheus {state} on port {self.port}: {last}")

    def _log_tail(self) -> str:
        try:
            lines = (self.workdir / "prometheus.log").read_text("utf-8", "replace").splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"

    def stop(self) -> None:
        """Terminate the server started by `start()` (by its PID). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, 10)

    def __enter__(self) -> RealPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SysdigPrometheusProxy(BackgroundHTTP):
    """Serves `upstream`'s `/api/v1/...` as `/prometheus/api/v1/...` behind Bearer auth.

    Missing or unknown tokens get Sysdig's 401 body; everything else is forwarded verbatim
    (status, body, content type). Threaded; bound to 127.0.0.1; `requests` records
    (method, path, query string) for assertions.
    """

    def __init__(self, upstream: str, tokens: Iterable[str]) -> None:
        self.upstream = upstream.rstrip("/")
        self.tokens = frozenset(tokens)
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("proxy is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> Self:
        handler = type("_ProxyHandler", (_ProxyHandler,), {"proxy": self})
        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), handler), "prom-proxy")
        return self


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: SysdigPrometheusProxy
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line."""

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else None
        with self.proxy._lock:
            self.proxy.requests.append((method, path, query))
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.proxy.tokens:
            self._send(401, b'{"timestamp":0,"status":401,"error":"Unauthorized","path":"'
                       + path.encode() + b'"}', "application/json")
            return
        if not path.startswith("/prometheus/api/v1/"):
            self._send(404, b'{"errors":[{"reason":"Not Found","message":"no such route"}]}',
                       "application/json")
            return
        target = f"{self.proxy.upstream}{path[len('/prometheus'):]}" + (f"?{query}" if query else "")
        headers = {}
        if body is not None:
            headers["Content-Type"] = self.headers.get("Content-Type",
                                                       "application/x-www-form-urlencoded")
        try:
            res = requests.request(method, target, data=body, headers=headers, timeout=120)
        except requests.RequestException as exc:
            message = f'{{"status":"error","errorType":"unavailable","error":"{type(exc).__name__}"}}'
            self._send(502, message.encode(), "application/json")
            return
        self._send(res.status_code, res.content, res.headers.get("Content-Type", ""))

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
