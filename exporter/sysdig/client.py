"""`SysdigClient`: the one typed wrapper over sdcclient's `SdMonitorClient`.

Every call the exporter makes to Sysdig is one of its methods: instant and range PromQL, the
retention timelines, user and team, dashboards. They share one session setup (`StrictAdapter`)
and one error classifier (`_call`, `_raise_for`); all but the dashboard calls share one retry
policy. What it fixes around sdcclient 0.19 (see docs/sysdig.md):
- URL and token are set explicitly after construction, so `SDC_TOKEN`/`SDC_URL`/`SDC_SSL_VERIFY`
  in the environment cannot silently win.
- sdcclient's urllib3 retry (3 retries on 5xx, ~12 s of backoff) is replaced by a zero-retry
  adapter; the one retry policy is ours (tenacity, bounded, on the injected clock).
- Its PromQL calls pass no `verify=` and no timeout; our adapter forces both on every request.
- `(ok, result)` tuples, raised `RetryError`/`ConnectionError`/timeouts and malformed bodies all
  become our own errors, classified by the HTTP status captured from the raw response.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from exporter.clock import Clock
from exporter.errors import (
    LimitExceeded,
    SourceAuthError,
    SourceError,
    SourceQueryError,
    SourceUnavailable,
)
from exporter.retry import call_with_retries
from exporter.sysdig.answers import _num, _result


class StrictAdapter(HTTPAdapter):
    """No retries, a default timeout, and TLS verification that cannot be bypassed."""

    def __init__(self, verify: bool | str, timeout: float, pool_size: int = 32) -> None:
        # Backfill runs several periods' queries at once; requests' default pool is 10.
        super().__init__(max_retries=0, pool_connections=pool_size, pool_maxsize=pool_size)
        self._verify = verify
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["verify"] = self._verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class SysdigClient:
    """Thin, typed, thread-safe wrapper over `sdcclient.SdMonitorClient`: every call the
    exporter makes to Sysdig, each classified into the `SourceError` family by `_call`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        clock: Clock,
        timeout: int = 60,
        verify: bool | str = True,
        attempts: int = 4,
        max_retry_time: float = 300.0,
        on_request: Callable[[str, int | None, float], None] | None = None,
        series_cap: int | None = None,
        pool_size: int = 32,
    ) -> None:
        from sdcclient import SdMonitorClient

        self._token = token
        self._url = url.rstrip("/")
        self._clock = clock
        self._timeout = timeout
        self._attempts = attempts
        self._max_retry_time = max_retry_time
        self._on_request = on_request
        self._cap = series_cap
        client = SdMonitorClient(token=token, sdc_url=self._url, ssl_verify=verify)
        # The environment overrides sdcclient's constructor arguments; ours must win.
        client.token = token
        client.url = self._url
        client.hdrs["Authorization"] = "Bearer " + token
        client.ssl_verify = verify
        adapter = StrictAdapter(verify, timeout + 10.0, max(32, pool_size))
        client.http.mount("https://", adapter)
        client.http.mount("http://", adapter)
        client.http.hooks["response"].append(self._capture)
        self._client = client
        self._local = threading.local()
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def _capture(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._local.response = response
        size = len(response.content or b"")
        self._local.requests = getattr(self._local, "requests", 0) + 1
        self._local.bytes = getattr(self._local, "bytes", 0) + size
        with self._lock:
            self.requests += 1
            self.bytes += size

    def thread_totals(self) -> tuple[int, int]:
        """Requests made and bytes received so far by the calling thread: what one call cost,
        retries included, while other threads query too."""
        return getattr(self._local, "requests", 0), getattr(self._local, "bytes", 0)

    def query_instant(self, query: str, at: float, what: str, answer: str = "vector") -> list[Any]:
        """Evaluate `query` at instant `at` (`/query?time=`), with retries.

        Returns the raw `result` list of an answer of kind `answer` ("vector"; "matrix" for a
        range selector such as `metric[2m]`, which gives raw samples). Raises `SourceUnavailable` (after
        retries), `SourceAuthError`, `SourceQueryError` for a rejected query or a malformed
        answer, and `LimitExceeded` (not retried) when Sysdig warns, caps the answer or gives up
        on the query at its timeout.
        """

        def once() -> list[Any]:
            where = f"Sysdig {self._url} ({what})"
            body = self._call(what, lambda: self._client.get_data_promql_instant(
                query, _num(at), timeout=f"{self._timeout}s"))
            return _result(body, answer, where, self._cap)

        return call_with_retries(once, clock=self._clock, attempts=self._attempts,
                                 max_delay=self._max_retry_time, what=f"sysdig {what}")

    def query_range(self, query: str, start: float, end: float, step: int, what: str) -> list[Any]:
        """Evaluate `query` over `[start, end]` every `step` (`/query_range`), with retries.

        Returns the raw `result` list of a matrix answer; raises as `query_instant`. Billing
        never reads range answers (Sysdig aligns their stamps to the step); `check-sysdig`
        uses this to observe that stamping.
        """

        def once() -> list[Any]:
            where = f"Sysdig {self._url} ({what})"
            body = self._call(what, lambda: self._client.get_data_promql(
                query, _num(start), _num(end), step, timeout=f"{self._timeout}s"))
            return _result(body, "matrix", where, self._cap)

        return call_with_retries(once, clock=self._clock, attempts=self._attempts,
                                 max_delay=self._max_retry_time, what=f"sysdig {what}")

    # --- retention, user and team (retried like the queries) -----------------------------

    def timelines(self, what: str = "retention timelines") -> Any:
        """The body of `GET /api/history/timelines/`, or None when Sysdig has no such endpoint
        (HTTP 404). Raises as `query_instant`.

        Retries for at most a minute: the retention model falls back on the documented table,
        so a failing endpoint must not stall a period.
        """

        def once() -> Any:
            try:
                return self._call(what, self._client.get_data_retention_info)
            except SourceError as exc:
                if exc.status == 404:
                    return None
                raise

        return call_with_retries(once, clock=self._clock, attempts=self._attempts,
                                 max_delay=min(self._max_retry_time, 60.0),
                                 what=f"sysdig {what}")

    def user_info(self) -> Any:
        """The body of `GET /api/user/me`. Raises as `query_instant`; a refusal's
        `SourceError.status` is the HTTP status (e.g. 403, 404)."""
        return self._api("user info", self._client.get_user_info)

    def team(self, ident: int) -> Any:
        """The team object of `GET /api/teams/<ident>`; None when the answer holds none.
        Raises as `user_info`."""
        return self._api("team", lambda: _or_none(self._client.get_team_by_id, ident))

    def teams(self) -> Any:
        """The team list of `GET /api/teams`; None when the answer holds none. Raises as
        `user_info`."""
        return self._api("teams", lambda: _or_none(self._client.get_teams))

    # --- dashboards (one attempt each: `dashboard install` is run by hand, and rerun) ------

    def find_dashboards(self, name: str) -> Any:
        """The dashboards named exactly `name`, as sdcclient lists them (`[{"dashboard": ...}]`).

        Raises as `query_instant`, without retries; a body of another shape than sdcclient
        expects is a `SourceQueryError`.
        """
        return self._call("list dashboards", lambda: _indexed(self._client.find_dashboard_by, name))

    def get_dashboard(self, ident: int | str) -> Any:
        """The body of `GET /api/v3/dashboards/<ident>`. Raises as `find_dashboards`."""
        return self._call("get dashboard", lambda: _indexed(self._client.get_dashboard, ident))

    def update_dashboard(self, dashboard: dict[str, Any]) -> Any:
        """`PUT` `dashboard` (it carries its id and version) and return the answer's body.
        Raises as `find_dashboards`."""
        return self._call("update dashboard",
                          lambda: _indexed(self._client.update_dashboard, dashboard))

    def create_dashboard_from_file(self, name: str, path: str, *, shared: bool) -> Any:
        """Create dashboard `name` from the v3 export file at `path`, return the answer's body.
        Raises as `find_dashboards`."""
        return self._call("create dashboard", lambda: _indexed(
            self._client.create_dashboard_from_file, name, path, shared=shared))

    def _api(self, what: str, request: Callable[[], Any]) -> Any:
        """One sdcclient call returning `(ok, result)`, with retries; its body."""
        return call_with_retries(lambda: self._call(what, request),
                                 clock=self._clock, attempts=self._attempts,
                                 max_delay=self._max_retry_time, what=f"sysdig {what}")

    def _call(self, what: str, request: Callable[[], Any]) -> Any:
        """Run one sdcclient call and return its body, or raise our error for its failure."""
        self._local.response = None
        where = f"Sysdig {self._url} ({what})"
        began = self._clock.time()
        try:
            ok, result = request()
        except requests.exceptions.SSLError as exc:
            raise SourceQueryError(f"{where}: TLS verification failed: {_first_line(exc)}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "unreachable"
            raise SourceUnavailable(f"{where}: {kind}: {_short(exc)}") from None
        except ValueError:
            # requests' JSONDecodeError is also a RequestException, so it is caught first. A
            # body cut short by a proxy is usually transient: retried, then reported as such.
            raise SourceUnavailable(
                f"{where}: malformed response (HTTP {self._status()}): body is not JSON"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise SourceUnavailable(f"{where}: request failed: {_short(exc)}") from None
        except _Unexpected:
            raise SourceQueryError(
                f"{where}: malformed response (HTTP {self._status()}): unexpected response shape",
                self._status()) from None
        finally:
            if self._on_request is not None:
                self._on_request(what, self._status(), self._clock.time() - began)
        response: requests.Response | None = self._local.response
        if not ok:
            status = response.status_code if response is not None else None
            message = _redact(str(result), self._token).strip().replace("\n", "; ")
            self._raise_for(status, message, response, where)
        return result

    def _status(self) -> int | None:
        response: requests.Response | None = getattr(self._local, "response", None)
        return response.status_code if response is not None else None

    def _raise_for(
        self, status: int | None, message: str, response: requests.Response | None, where: str
    ) -> None:
        if status in (401, 403):
            hint = "wrong or expired token" if status == 401 else "token lacks privileges"
            raise SourceAuthError(f"{where}: HTTP {status} {message} ({hint})", status)
        if _error_type(response) == "timeout":
            # Sysdig gave up at its query timeout: the same query would again; a smaller may not.
            raise LimitExceeded(f"{where}: HTTP {status} {message} (Sysdig's query timeout)")
        if status == 429:
            retry_after = _retry_after(response)
            raise SourceUnavailable(f"{where}: HTTP 429 {message} (rate limited)", retry_after)
        if status is not None and status >= 500:
            raise SourceUnavailable(f"{where}: HTTP {status} {message}")
        if status in (400, 422):
            raise SourceQueryError(f"{where}: query rejected, HTTP {status}: {message}", status)
        raise SourceQueryError(f"{where}: HTTP {status}: {message}", status)


class _Unexpected(Exception):
    """sdcclient indexed a successful body of another shape than it expects."""


def _indexed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # sdcclient indexes some bodies before returning them (`res["dashboards"]`): a body of
    # another shape raises KeyError or TypeError, which is a malformed answer, not a crash.
    try:
        return call(*args, **kwargs)
    except (KeyError, TypeError, AttributeError, IndexError):
        raise _Unexpected from None


def _or_none(call: Callable[..., Any], *args: Any) -> Any:
    # As `_indexed`, for the team calls: their callers read a body of another shape as "no
    # team object" (`teams.read_team_scope`).
    try:
        return call(*args)
    except (KeyError, TypeError):
        return True, None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _short(exc: BaseException) -> str:
    # requests' messages embed the URL with its query (long PromQL); keep them short.
    text = _first_line(exc)
    return text.split(" with url: ")[0][:200]


def _error_type(response: requests.Response | None) -> str | None:
    """The Prometheus `errorType` of an error answer, None when it has none."""
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    kind = body.get("errorType") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None


def _retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None

