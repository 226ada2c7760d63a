"""Liveness, readiness and metrics over HTTP: `/healthz`, `/readyz`, `/metrics`.

The server is a small threaded stdlib HTTP server; it reads a `HealthState` the worker updates
and the injected Prometheus registry, and nothing else, so no configuration value (and no
secret) can ever be served.

Readiness rule: ready only while the sink is started AND the end of the last committed period is
younger than `2 × periods.length + periods.settle_delay`. In steady state the lag oscillates
between `settle_delay` and `length + settle_delay`, so one missed export is tolerated and two
are not.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from exporter.clock import Clock
from exporter.errors import ConfigError, ExporterError
from exporter.periods import format_duration

log = logging.getLogger("exporter.health")


class HealthState:
    """What readiness is decided from; updated by the worker, read by the HTTP server.

    Thread-safe. Times are epoch seconds on the injected clock.
    """

    def __init__(self, clock: Clock, period_length: int, settle_delay: int) -> None:
        self._clock = clock
        self._length = period_length
        self._settle = settle_delay
        self._lock = threading.Lock()
        self._sink_started = False
        self._last_end: int | None = None

    @property
    def max_lag(self) -> int:
        """The largest lag (seconds) that is still ready: 2 × length + settle delay."""
        return 2 * self._length + self._settle

    def sink_started(self) -> None:
        """The sink is connected and the producer initialised."""
        with self._lock:
            self._sink_started = True

    def sink_stopped(self) -> None:
        """The sink was closed or fenced; not ready any more."""
        with self._lock:
            self._sink_started = False

    def committed(self, period_end: int) -> None:
        """A period ending at `period_end` is committed (or was read back as the checkpoint)."""
        with self._lock:
            if self._last_end is None or period_end > self._last_end:
                self._last_end = period_end

    @property
    def last_committed_end(self) -> int | None:
        with self._lock:
            return self._last_end

    def lag(self) -> float | None:
        """Now minus the last committed period end, or None before anything is committed."""
        last = self.last_committed_end
        return None if last is None else self._clock.time() - last

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): the reason says why not, or summarises the lag when ready."""
        with self._lock:
            started, last = self._sink_started, self._last_end
        if not started:
            return False, "sink not started"
        if last is None:
            return False, "no period committed yet"
        lag = self._clock.time() - last
        if lag >= self.max_lag:
            return False, (f"last committed period ended {format_duration(int(lag))} ago, "
                           f"limit {format_duration(self.max_lag)}")
        return True, f"last committed period ended {format_duration(int(lag))} ago"


def parse_listen_address(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces) into (host, port).

    Raises `ConfigError` naming `web.listen_address` for anything else.
    """
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"web.listen_address: expected host:port, got {text!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigError(f"web.listen_address: unbalanced brackets in {text!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(
            f"web.listen_address: write IPv6 addresses in brackets, e.g. [::]:9847, got {text!r}")
    return host or "0.0.0.0", int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HealthState
    registry: CollectorRegistry


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/readyz":
            ready, reason = self.server.state.readiness()
            body: dict[str, Any] = {"ready": ready, "reason": reason}
            last = self.server.state.last_committed_end
            if last is not None:
                body["last_committed_period_end"] = last
            self._send(200 if ready else 503, "application/json",
                       json.dumps(body, separators=(",", ":")).encode() + b"\n")
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found; try /healthz, /readyz, /metrics\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit these endpoints every few seconds; keep them out of the info log.
        log.debug("http request", extra={"client": self.client_address[0], "request": format % args})


class HealthServer:
    """Serves `/healthz`, `/readyz` and `/metrics` on a background thread."""

    def __init__(self, address: str, state: HealthState, registry: CollectorRegistry) -> None:
        self._address = address
        self._host, self._port = parse_listen_address(address)
        self._state = state
        self._registry = registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread. Raises `ExporterError` if the address can't be bound."""
        cls = _V6Server if ":" in self._host else _Server
        try:
            server = cls((self._host, self._port), _Handler)
        except OSError as exc:
            raise ExporterError(
                f"web.listen_address: cannot listen on {self._address}: {exc.strerror or exc}"
            ) from None
        server.state = self._state
        server.registry = self._registry
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="chargeback-health",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        log.info("health server listening", extra={"address": f"{self._host}:{self.port}"})

    @property
    def port(self) -> int:
        """The bound port (useful when the configured port was 0)."""
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL a local client can reach the server at."""
        host = self._host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
