"""A trivial Sysdig stand-in that serves recorded query answers, for any period.

Each recorded body is split once on its evaluation timestamp (`[<at>,`); a request for another
period gets the same body with its own instant joined in, so the exporter sees a valid answer
for every period while the server does no evaluation at all. Runs in its own process
(`python -m bench _replay DIR [--latency]`), so its CPU never counts as the exporter's. With
`--latency`, each answer takes the time the simulator's latency model gives the samples its
query scanned when recorded (`chargeback_simulator.server.Latency`), as Sysdig's would.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

from bench.fleets import TOKEN
from bench.record import QUERY, Recording
from chargeback_simulator.background import BackgroundHTTP, BacklogServer, QuietHandler
from chargeback_simulator.server import Latency


def _stamp(at: float) -> bytes:
    # Prometheus writes whole-second timestamps as integers, others as floats.
    return (b"%d" % at) if float(at).is_integer() else repr(float(at)).encode()


class Templates:
    """Recorded bodies by query text, pre-split on the recorded instant."""

    def __init__(self, directory: Path) -> None:
        rec = Recording.load(directory)
        self.samples = rec.samples
        marker = b"[" + _stamp(rec.at) + b","
        self.parts: dict[str, list[bytes]] = {
            query: (directory / fname).read_bytes().split(marker)
            for query, fname in {**rec.files, **rec.wall_files}.items()
        }

    def body(self, query: str, at: float) -> bytes | None:
        parts = self.parts.get(query)
        if parts is None:
            return None
        return (b"[" + _stamp(at) + b",").join(parts)


def _error(message: str) -> bytes:
    return json.dumps({"status": "error", "errorType": "bad_data", "error": message}).encode()


def _handler(templates: Templates, latency: Latency | None) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = parse_qs(url.query)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, b'{"status":401,"error":"Unauthorized"}')
            elif url.path != QUERY or "query" not in params or "time" not in params:
                self._send(400, _error(f"not a recorded request: {url.path}"))
            else:
                body = templates.body(params["query"][0], float(params["time"][0]))
                if body is not None and latency is not None:
                    time.sleep(latency.seconds(templates.samples.get(params["query"][0], 0)))
                if body is None:
                    self._send(400, _error("query not in the recording"))
                else:
                    self._send(200, body)

        def _send(self, status: int, body: bytes) -> None:
            self._reply(status, body, {"Content-Type": "application/json"})

    return Handler


class ReplayServer(BackgroundHTTP):
    """Answers instant queries from the recording in `directory`, on 127.0.0.1, from a background
    thread: `with ReplayServer(directory) as server:` then point the source at `server.url`.

    The recording is read when the server is built, so a bad directory fails before binding.
    """

    def __init__(self, directory: Path, port: int = 0, latency: Latency | None = None) -> None:
        self._templates = Templates(directory)
        self._port = port
        self._latency = latency

    def start(self) -> Self:
        """Bind and serve; returns self. Raises OSError if the port is taken. Idempotent."""
        if self._httpd is None:
            self._serve(BacklogServer(("127.0.0.1", self._port), _handler(self._templates, self._latency)),
                        "bench-replay")
        return self

    @property
    def url(self) -> str:
        """Base URL to give the exporter as `sysdig.url`."""
        if self._httpd is None:
            raise RuntimeError("replay server is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"


def serve(directory: Path, latency: Latency | None = None) -> None:
    """Serve until the process is terminated; the first stdout line is the base URL."""
    with ReplayServer(directory, latency=latency) as server:
        sys.stdout.write(f"{server.url}\n")
        sys.stdout.flush()
        threading.Event().wait()  # the bench ends this process with SIGTERM
