"""A ThreadingHTTPServer served from a daemon thread: the lifecycle the simulator and the
Prometheus proxy share."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Self


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
