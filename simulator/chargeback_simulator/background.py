"""A ThreadingHTTPServer served from a daemon thread, and the request handler base its servers
share: the lifecycle and the HTTP plumbing of the simulator, the Prometheus proxy, the bench's
replay server and the test doubles."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class BacklogServer(ThreadingHTTPServer):
    """A threading server whose listen backlog holds Sysdig's 200 concurrent queries (the
    default of 5 delays connections beyond it by a SYN retry, about a second)."""

    request_queue_size = 256


class BackgroundHTTP:
    """Owns one server and its thread; subclasses bind in `start()` and call `_serve`."""

    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def _serve(self, httpd: ThreadingHTTPServer, name: str) -> None:
        httpd.daemon_threads = True
        self._httpd = httpd
        # A short poll interval keeps shutdown, and so each test's teardown, quick.
        self._thread = threading.Thread(target=httpd.serve_forever, name=name,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 without a log line per request.

    Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
    client's delayed ACK add ~40 ms to every keep-alive answer.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request stderr line."""

    def _reply(self, status: int, data: bytes, headers: Mapping[str, str]) -> None:
        """Answer `status` with `headers` (in order) and `data` as the body."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


class MethodHandler(QuietHandler):
    """Serves GET, POST, PUT and DELETE alike, through `_serve(method)`."""

    def _serve(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
