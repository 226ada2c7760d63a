"""A Sysdig Monitor look-alike HTTP server on loopback, for the real, unmodified `sdcclient`.

Serves the Prometheus-compatible API under `/prometheus/api/v1/` (evaluated by the simulator's
PromQL engine over a `Storage`, normally a `Fleet`), `/api/history/timelines/`, an in-memory
`/api/v3/dashboards`, and the user and team API (`/api/user/me`, `/api/teams[/<id>]`), with
Sysdig's auth and error bodies. Each token belongs to a team; a scoped team's tokens see only
their part of the fleet. Every request is recorded, and a per-path fault queue scripts failures
(status, body, headers, delay, raw bytes).
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
import promql_parser as pp

from chargeback_simulator.background import BackgroundHTTP, BacklogServer, MethodHandler
from chargeback_simulator.fleet import DEFAULT_TIMELINES, SAMPLE_INTERVAL
from chargeback_simulator.promql import Engine, PromQLError, QueryResult, is_aggregation
from chargeback_simulator.series import LabelMatcher, SeriesSet, Storage, format_value
from exporter.clock import Clock

MAX_POINTS = 11_000
SERIES_LIMIT = 1_000  # queries without aggregation: truncated, with a warning
SEGMENT_CAP = 100_000  # aggregated queries: capped, without a warning
MAX_TIMEOUT = 120.0
METRICS_LIMIT = 10  # metrics one query may name
CONCURRENCY_LIMIT = 200  # queries in flight at once
SAMPLES_PER_MINUTE = 4_000_000_000  # samples scanned per minute, over all queries
PROMETHEUS = "/prometheus/api/v1/"
DASHBOARDS = "/api/v3/dashboards"
TIMELINES = "/api/history/timelines/"

# How range answers are stamped: aligned to the step (Sysdig) or from `start` (Prometheus).
STAMPINGS = ("sysdig", "prometheus")

JsonBody = Mapping[str, Any] | list[Any]


@dataclass(frozen=True, slots=True)
class Team:
    """A Sysdig team as the team API shows it, and what its tokens' PromQL answers may see.

    `filter` is the team's scope as Sysdig writes it ("" for the whole fleet); `scope` is the
    same restriction as label matchers, added to every selector of the team's queries.
    """

    id: int
    name: str
    filter: str = ""
    scope: tuple[LabelMatcher, ...] = ()

    @classmethod
    def scoped(cls, ident: int, name: str, label: str, value: str) -> Team:
        """A team that sees only the series whose `label` is `value`."""
        return cls(ident, name, f'{label} = "{value}"', (LabelMatcher.of(label, "=", value),))

    def body(self) -> dict[str, Any]:
        """The team object of `GET /api/teams/<id>` (Sysdig's field names)."""
        doc: dict[str, Any] = {"id": self.id, "name": self.name, "description": "",
                               "theme": "#7BB0B2", "show": "container", "products": ["SDC"],
                               "default": self.id == DEFAULT_TEAM_ID, "immutable": False}
        if self.filter:
            doc["filter"] = self.filter
        return doc


DEFAULT_TEAM_ID = 1
# Sysdig's built-in Monitor team: no scope, so its tokens see the whole fleet.
DEFAULT_TEAM = Team(DEFAULT_TEAM_ID, "Monitor Operations")


class ScopedStorage:
    """A storage whose every selection also carries a team's scope matchers."""

    def __init__(self, inner: Storage, scope: tuple[LabelMatcher, ...]) -> None:
        self.inner = inner
        self.scope = scope

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        return self.inner.select([*matchers, *self.scope], start_ms, end_ms)


@dataclass(frozen=True, slots=True)
class Latency:
    """How long Sysdig takes to answer a query: `base` seconds plus the samples it scanned at
    `samples_per_second`. Deterministic: the same query over the same data takes the same time."""

    base: float = 0.05
    samples_per_second: float = 20_000_000.0

    def __post_init__(self) -> None:
        if self.base < 0 or not self.samples_per_second > 0:
            raise ValueError("latency: base must be >= 0 and samples_per_second > 0")

    def seconds(self, samples: int) -> float:
        """The modelled time of a query that scanned `samples` samples."""
        return self.base + samples / self.samples_per_second


@dataclass(frozen=True, slots=True)
class QueryStat:
    """One PromQL query the server answered (or refused at a limit): what it cost."""

    query: str
    samples: int
    seconds: float  # modelled latency (0 without a latency model)
    status: int
    series: int = 0  # series of the answer before any limit cut it


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class Fault:
    """A scripted response for the next `remaining` requests whose path starts with `prefix`.

    `raw` bytes are written to the socket as-is and the connection closed (truncated or
    non-HTTP answers). Otherwise, after `delay` seconds, `status` (if set) is answered with
    `body` (a default Sysdig/Prometheus error body when None) and `headers`; a fault with no
    status only delays and the request is then served normally. With `query`, only requests
    whose PromQL (`query` parameter) contains it match.
    """

    prefix: str
    status: int | None = None
    body: JsonBody | str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    remaining: int = 1
    query: str | None = None


class FaultQueue:
    """FIFO of scripted faults; thread-safe. The first fault matching a path is used."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def push(self, path_prefix: str, *, status: int | None = None,
             body: JsonBody | str | bytes | None = None,
             headers: Mapping[str, str] | None = None, delay: float = 0.0,
             raw: bytes | None = None, count: int = 1, query: str | None = None) -> None:
        """Script the next `count` requests under `path_prefix` (e.g. `/prometheus`), or only
        those whose PromQL contains `query`."""
        if count < 1:
            raise ValueError(f"fault count must be >= 1, got {count}")
        if delay < 0:
            raise ValueError(f"fault delay must be >= 0, got {delay}")
        with self._lock:
            self._faults.append(Fault(path_prefix, status, body, dict(headers or {}), delay, raw,
                                      count, query))

    def take(self, path: str, promql: str = "") -> Fault | None:
        """Consume one use of the first fault matching `path` (and `promql`), if any."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if path.startswith(fault.prefix) and (fault.query is None
                                                      or fault.query in promql):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._faults[i]
                    return fault
        return None

    def pending(self) -> int:
        """How many scripted responses are still queued."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class _BadRequest(Exception):
    """A Prometheus `bad_data` parameter error (HTTP 400)."""


def _unparsable(name: str, text: str, what: str) -> _BadRequest:
    return _BadRequest(f'invalid parameter "{name}": cannot parse "{text}" to a valid {what}')


def _given(name: str, text: str | None, what: str) -> str:
    """The parameter's text; a missing or empty one is a bad request."""
    if text is None or text == "":
        raise _unparsable(name, "", what)
    return text


def _finite(text: str) -> float | None:
    """`text` as a finite number, or None when it is not one (then other forms are tried)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_time(name: str, given: str | None) -> float:
    text = _given(name, given, "timestamp")
    value = _finite(text)
    if value is not None:
        return round(value, 3)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        raise _unparsable(name, text, "timestamp") from None


def _parse_duration(name: str, given: str | None) -> float:
    text = _given(name, given, "duration")
    value = _finite(text)
    if value is not None:
        return value
    if re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", text):
        try:
            return float(pp.parse_duration(text).total_seconds())
        except (ValueError, OverflowError):
            pass
    raise _unparsable(name, text, "duration")


def _ts(ms: int) -> int | float:
    """Epoch milliseconds as Prometheus writes a timestamp: seconds, fractional only if needed."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def render_result(result: QueryResult, limit: int = 0, *, raw_limit: int = 0, cap: int = 0,
                  ) -> tuple[dict[str, Any], list[str]]:
    """The Prometheus `data` object of a result, and warnings (e.g. truncation by `limit`).

    Sysdig's service limits: `raw_limit` cuts a query without aggregation to that many series
    with a warning; `cap` cuts an aggregated one to that many series (result segments) with no
    warning at all. The caller says which applies; 0 disables either.
    """
    warnings: list[str] = []
    if result.kind == "scalar":
        assert result.scalar is not None
        ms = int(result.scalar.ts[0])
        return {"resultType": "scalar",
                "result": [_ts(ms), format_value(float(result.scalar.values[0]))]}, warnings
    assert result.series is not None
    series = result.series
    rows = list(range(len(series)))
    if limit and len(rows) > limit:
        rows = rows[:limit]
        warnings.append(f"results truncated due to limit: {limit} of {len(series)} series")
    if raw_limit and len(rows) > raw_limit:
        rows = rows[:raw_limit]
        warnings.append(f"query without aggregation returned more than {raw_limit} time series; "
                        f"results truncated to {raw_limit}")
    if cap and len(rows) > cap:
        rows = rows[:cap]  # silently, as Sysdig caps aggregated answers
    stamps = [_ts(int(t)) for t in series.ts]
    out: list[dict[str, Any]] = []
    for i in rows:
        row = series.values[i]
        present = np.flatnonzero(~np.isnan(row))
        if result.kind == "vector":
            if len(present):
                j = int(present[-1])
                out.append({"metric": dict(sorted(series.labels[i].items())),
                            "value": [stamps[j], format_value(float(row[j]))]})
        else:
            out.append({"metric": dict(sorted(series.labels[i].items())),
                        "values": [[stamps[j], format_value(float(row[j]))]
                                   for j in present.tolist()]})
    return {"resultType": result.kind, "result": out}, warnings


class SimulatorServer(BackgroundHTTP):
    """The simulator's HTTP front end; start it, point `sdcclient` at `.url`, stop it.

    `fleet` is the `Storage` (normally a `Fleet`) the PromQL endpoints evaluate against.
    `tokens` are accepted Bearer tokens; `forbidden_tokens` authenticate but get 403. Time
    defaults ("now" for instant queries, 401 timestamps, timelines) come from `clock`;
    `sleep` serves fault delays and `timer` measures query timeouts (both real by default).

    `stamping` is how range answers are stamped: "sysdig" (the default) aligns `start` and
    `end` down to a multiple of `step`, as Sysdig's own sdcclient examples show; "prometheus"
    stamps at `start + k*step`, as stock Prometheus does. The exporter must be exact under both.

    The retention timelines served are the storage's (`Fleet.timelines`, which its data
    honours); a storage without them (a wrapper) is served the July 2020 table, unless
    `timelines` is set on the server.

    `teams` maps tokens (accepted too) to their team; every other token is in `DEFAULT_TEAM`.
    A scoped team's PromQL answers see only the series its scope matches, as in Sysdig.

    Sysdig's service limits are enforced (attributes, lowered by tests to reach them with a
    small fleet): a query without aggregation is cut to `series_limit` series with a warning,
    an aggregated one to `segment_cap` without one; a query naming more than
    `metrics_limit` metrics is refused (422); beyond `concurrency_limit` queries in flight, or
    once the last minute's queries scanned `samples_per_minute` samples, a query is throttled
    (429). With `latency` (`Latency`), each answer takes its modelled time, spent with `sleep`
    in the request's thread (a remote service's time); one modelled beyond the query's timeout
    is answered 503 `timeout` at the timeout. `stats` keeps what each query cost.
    """

    def __init__(self, fleet: Storage, clock: Clock, tokens: Iterable[str] = ("sim-token",),
                 forbidden_tokens: Iterable[str] = (), host: str = "127.0.0.1", port: int = 0,
                 sleep: Callable[[float], None] = time.sleep,
                 timer: Callable[[], float] = time.monotonic,
                 stamping: str = "sysdig", teams: Mapping[str, Team] | None = None,
                 latency: Latency | None = None) -> None:
        if stamping not in STAMPINGS:
            raise ValueError(f"stamping must be one of {', '.join(STAMPINGS)}, got {stamping!r}")
        self.stamping = stamping
        # Sysdig's Prometheus API service limits (docs.sysdig.com, "service limits"); tests
        # lower them to reach them with a small fleet.
        self.series_limit = SERIES_LIMIT
        self.segment_cap = SEGMENT_CAP
        self.metrics_limit = METRICS_LIMIT
        self.concurrency_limit = CONCURRENCY_LIMIT
        self.samples_per_minute = SAMPLES_PER_MINUTE
        # Off by default: answers come as fast as they are computed.
        self.latency = latency
        self.stats: deque[QueryStat] = deque(maxlen=100_000)
        self._inflight = 0
        self._scanned: deque[tuple[float, int]] = deque()  # (timer, samples) of the last minute
        self._timer = timer
        self.fleet = fleet
        self.clock = clock
        self.timelines: tuple[tuple[int, int], ...] | None = getattr(
            fleet, "timelines", DEFAULT_TIMELINES)
        self.token_teams = dict(teams or {})
        self.tokens = frozenset(tokens) | frozenset(self.token_teams)
        self.forbidden_tokens = frozenset(forbidden_tokens)
        self.engine = Engine(fleet, timer=timer)
        self._engines = {DEFAULT_TEAM_ID: self.engine}
        for team in self.token_teams.values():
            if team.id not in self._engines:
                storage = ScopedStorage(fleet, team.scope) if team.scope else fleet
                self._engines[team.id] = Engine(storage, timer=timer)
        self.faults = FaultQueue()
        self._sleep = sleep
        self._host, self._port = host, port
        self._log: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._dashboards: dict[int, dict[str, Any]] = {}
        self._next_id = 1

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Bind and serve in a background thread; returns self. Raises OSError if the port is
        taken."""
        if self._httpd is not None:
            return self
        handler = type("_Handler", (_Handler,), {"sim": self})
        self._serve(BacklogServer((self._host, self._port), handler), "sysdig-simulator")
        return self

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("simulator server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give `sdcclient` as `sdc_url`."""
        return f"http://{self._host}:{self.port}"

    # ------------------------------------------------------------------ request log
    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._log.append(request)

    # ------------------------------------------------------------------ dashboards
    @property
    def dashboards(self) -> dict[int, dict[str, Any]]:
        """A copy of the stored dashboards by id."""
        with self._lock:
            return copy.deepcopy(self._dashboards)

    # ------------------------------------------------------------------ dispatch
    def team_of(self, token: str | None) -> Team:
        """The team a token belongs to (`DEFAULT_TEAM` unless `teams` says otherwise)."""
        return self.token_teams.get(token or "", DEFAULT_TEAM)

    def teams(self) -> list[Team]:
        """Every team the simulated tenant has, by id."""
        known = {DEFAULT_TEAM_ID: DEFAULT_TEAM, **{t.id: t for t in self.token_teams.values()}}
        return [known[k] for k in sorted(known)]

    def handle(self, method: str, path: str, query: Mapping[str, list[str]],
               headers: Mapping[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        """Answer one authenticated request: (status, JSON body or None, extra headers)."""
        team = self.team_of(_bearer(headers.get("Authorization", "")))
        if path.startswith(PROMETHEUS):
            return self._prometheus(method, path[len(PROMETHEUS):], query, body,
                                    self._engines[team.id])
        if path in (TIMELINES, TIMELINES.rstrip("/")) and method == "GET":
            return 200, self._timelines(), {}
        if path == DASHBOARDS or path.startswith(DASHBOARDS + "/"):
            return self._dashboard(method, path[len(DASHBOARDS):].strip("/"), body)
        if path == "/api/user/me" and method == "GET":
            return 200, {"user": {"id": 1, "username": "simulator@example.invalid",
                                  "enabled": True, "currentTeam": team.id,
                                  "teamRoles": [{"teamId": team.id, "teamName": team.name,
                                                 "role": "ROLE_TEAM_READ"}]}}, {}
        if path == "/api/teams" and method == "GET":
            return 200, {"teams": [t.body() for t in self.teams()]}, {}
        if path.startswith("/api/teams/") and method == "GET":
            ident = path[len("/api/teams/"):]
            found = [t for t in self.teams() if str(t.id) == ident]
            if found:
                return 200, {"team": found[0].body()}, {}
            return 404, _errors("Not Found", f"team {ident!r} not found"), {}
        return 404, _errors("Not Found", f"no route for {method} {path}"), {}

    def _prometheus(self, method: str, endpoint: str, query: Mapping[str, list[str]],
                    body: bytes, engine: Engine) -> tuple[int, Any, dict[str, str]]:
        if endpoint not in ("query", "query_range"):
            return 404, _errors("Not Found", f"unknown Prometheus endpoint {endpoint!r}"), {}
        if method not in ("GET", "POST"):
            return 405, _prom_error("bad_data", f"method {method} not allowed"), {}
        params = dict(query)
        if method == "POST" and body:
            for k, v in parse_qs(body.decode("utf-8", "replace")).items():
                params.setdefault(k, []).extend(v)

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[-1] if values else None

        with self._lock:
            self._inflight += 1
            busy = self._inflight > self.concurrency_limit
        try:
            if busy:
                return 429, default_fault_body(429), {"Retry-After": "1"}
            return self._evaluate(endpoint, one, engine)
        finally:
            with self._lock:
                self._inflight -= 1

    def _evaluate(self, endpoint: str, one: Callable[[str], str | None], engine: Engine,
                  ) -> tuple[int, Any, dict[str, str]]:
        """Evaluate one PromQL request within Sysdig's limits (see the class docstring)."""
        timeout = MAX_TIMEOUT

        try:
            text = one("query")
            if text is None or not text.strip():
                raise _BadRequest('invalid parameter "query": unknown position: parse error: '
                                  'no expression found in input')
            if one("timeout") is not None:
                timeout = min(_parse_duration("timeout", one("timeout")), MAX_TIMEOUT)
            limit = 0
            if one("limit") is not None:
                raw_limit = one("limit") or ""
                if not raw_limit.isdigit():
                    raise _BadRequest(f'invalid parameter "limit": cannot parse "{raw_limit}" '
                                      "to a valid limit")
                limit = int(raw_limit)
            if endpoint == "query":
                t = self.clock.time() if one("time") is None else _parse_time("time", one("time"))
                result = engine.instant(text, t, timeout=timeout)
            else:
                start = _parse_time("start", one("start"))
                end = _parse_time("end", one("end"))
                step = _parse_duration("step", one("step"))
                if end < start:
                    raise _BadRequest('invalid parameter "end": end timestamp must not be '
                                      "before start time")
                if step <= 0:
                    raise _BadRequest('invalid parameter "step": zero or negative query '
                                      "resolution step widths are not accepted. Try a positive "
                                      "integer")
                if (end - start) / step + 1 > MAX_POINTS:
                    raise _BadRequest("exceeded maximum resolution of 11,000 points per "
                                      "timeseries. Try decreasing the query resolution "
                                      "(?step=XX)")
                if self.stamping == "sysdig":
                    start, end = math.floor(start / step) * step, math.floor(end / step) * step
                result = engine.range(text, start, end, step, timeout=timeout)
        except _BadRequest as exc:
            return 400, _prom_error("bad_data", str(exc)), {}
        except PromQLError as exc:
            status = {"bad_data": 400, "timeout": 503}.get(exc.error_type, 422)
            message = str(exc)
            if exc.error_type == "bad_data":
                message = f'invalid parameter "query": {message}'
            return status, _prom_error(exc.error_type, message), {}
        refused = self._limit(text, result, timeout)
        if refused is not None:
            return refused
        aggregated = is_aggregation(text)
        data, warnings = render_result(
            result, limit, raw_limit=0 if aggregated else self.series_limit,
            cap=self.segment_cap if aggregated else 0)
        payload: dict[str, Any] = {"status": "success", "data": data}
        if warnings:
            payload["warnings"] = warnings
        return 200, payload, {}

    def _limit(self, text: str, result: QueryResult, timeout: float,
               ) -> tuple[int, Any, dict[str, str]] | None:
        """Spend the query's modelled time; the refusal for a limit it broke, or None."""
        seconds = self.latency.seconds(result.samples) if self.latency is not None else 0.0
        refusal: tuple[int, Any, dict[str, str]] | None = None
        if len(result.metrics) > self.metrics_limit:
            refusal = (422, _prom_error(
                "execution", f"query uses {len(result.metrics)} metrics, more than the limit of "
                f"{self.metrics_limit} per query"), {})
        elif seconds > timeout:
            seconds = timeout
            refusal = (503, _prom_error(
                "timeout", "query timed out in expression evaluation"), {})
        else:
            now = self._timer()
            with self._lock:
                while self._scanned and self._scanned[0][0] <= now - 60:
                    self._scanned.popleft()
                if sum(n for _, n in self._scanned) + result.samples > self.samples_per_minute:
                    refusal = (429, default_fault_body(429), {"Retry-After": "60"})
                else:
                    self._scanned.append((now, result.samples))
        self.stats.append(QueryStat(text, result.samples, seconds,
                                    200 if refusal is None else refusal[0],
                                    len(result.series) if result.series is not None else 1))
        if seconds:
            self._sleep(seconds)
        return refusal

    def _timelines(self) -> dict[str, Any]:
        now_us = int(self.clock.time() * 1_000_000)
        if self.timelines is None:  # never rolled up: 10 s samples forever
            return {"agents": [{"from": None, "to": now_us,
                                "sampling": SAMPLE_INTERVAL * 1_000_000}]}
        return {"agents": [{"from": now_us - window * 1_000_000, "to": now_us,
                            "sampling": sampling * 1_000_000}
                           for sampling, window in self.timelines]}

    def _dashboard(self, method: str, ident: str, body: bytes
                   ) -> tuple[int, Any, dict[str, str]]:
        if ident == "":
            if method == "GET":
                with self._lock:
                    return 200, {"dashboards": list(self._dashboards.values())}, {}
            if method == "POST":
                doc = _dashboard_body(body)
                if doc is None:
                    return 400, _errors("Bad Request", "body must be {\"dashboard\": {...}}"), {}
                with self._lock:
                    doc["id"], doc["version"] = self._next_id, 1
                    self._dashboards[self._next_id] = doc
                    self._next_id += 1
                return 201, {"dashboard": doc}, {}
            return 405, _errors("Method Not Allowed", f"{method} not allowed here"), {}
        if not ident.isdigit():
            return 404, _errors("Not Found", f"dashboard {ident!r} not found"), {}
        key = int(ident)
        with self._lock:
            current = self._dashboards.get(key)
            if current is None:
                return 404, _errors("Not Found", f"dashboard {key} not found"), {}
            if method == "GET":
                return 200, {"dashboard": current}, {}
            if method == "DELETE":
                del self._dashboards[key]
                return 204, None, {}
            if method in ("PUT", "PATCH"):
                if method == "PATCH":
                    try:
                        patch = json.loads(body or b"{}")
                    except ValueError:
                        patch = None
                    if not isinstance(patch, dict):
                        return 400, _errors("Bad Request", "body must be a JSON object"), {}
                    current.update(patch)
                    return 200, {"dashboard": current}, {}
                doc = _dashboard_body(body)
                if doc is None:
                    return 400, _errors("Bad Request", "body must be {\"dashboard\": {...}}"), {}
                if doc.get("version") != current["version"]:
                    return 409, _errors("Conflict", "dashboard version does not match"), {}
                doc["id"], doc["version"] = key, current["version"] + 1
                self._dashboards[key] = doc
                return 200, {"dashboard": doc}, {}
        return 405, _errors("Method Not Allowed", f"{method} not allowed here"), {}

    def unauthorized(self, path: str) -> dict[str, Any]:
        return {"timestamp": int(self.clock.time() * 1000), "status": 401,
                "error": "Unauthorized", "path": path}


def _bearer(auth: str) -> str | None:
    return auth[len("Bearer "):] if auth.startswith("Bearer ") else None


def _dashboard_body(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("dashboard"), dict):
        return None
    return dict(doc["dashboard"])


def _errors(reason: str, message: str) -> dict[str, Any]:
    return {"errors": [{"reason": reason, "message": message}]}


def _prom_error(error_type: str, message: str) -> dict[str, Any]:
    return {"status": "error", "errorType": error_type, "error": message}


def default_fault_body(status: int) -> dict[str, Any]:
    """The body Sysdig sends with `status` (used when a fault gives none)."""
    if status == 429:
        return {"type": "rate_limited", "message": "Too many requests", "details": []}
    if status == 401:
        return {"timestamp": 0, "status": 401, "error": "Unauthorized", "path": ""}
    if status == 403:
        return _errors("Forbidden", "Not enough privileges")
    if status >= 500:
        return _prom_error("internal", "simulated upstream failure")
    return _prom_error("bad_data", "simulated error")


class _Handler(MethodHandler):
    sim: SimulatorServer
    server_version = "sysdig-simulator"
    timeout = 30

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k: v for k, v in self.headers.items()}
        self.sim._record(RecordedRequest(method, path, query, headers, body))
        form = parse_qs(body.decode("utf-8", "replace")) if method == "POST" and body else {}
        promql = " ".join(query.get("query", []) + form.get("query", []))
        fault = self.sim.faults.take(path, promql)
        if fault is not None:
            if fault.delay:
                self.sim._sleep(fault.delay)
            if fault.raw is not None:
                self.wfile.write(fault.raw)
                self.wfile.flush()
                self.close_connection = True
                return
            if fault.status is not None:
                self._fault(fault, path)
                return
        token = _bearer(self.headers.get("Authorization", ""))
        if token in self.sim.forbidden_tokens:
            self._send(403, _errors("Forbidden", "Not enough privileges"))
            return
        if token not in self.sim.tokens:
            self._send(401, self.sim.unauthorized(path))
            return
        try:
            status, payload, extra = self.sim.handle(method, path, query, headers, body)
        except Exception as exc:  # a bug must answer 500, not kill the connection silently
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            status, payload, extra = 500, _prom_error("internal", first), {}
        self._send(status, payload, extra)

    def _fault(self, fault: Fault, path: str) -> None:
        assert fault.status is not None
        body: JsonBody | str | bytes
        if fault.body is not None:
            body = fault.body
        elif fault.status == 401:
            body = self.sim.unauthorized(path)
        else:
            body = default_fault_body(fault.status)
        self._send(fault.status, body, fault.headers)

    def _send(self, status: int, payload: JsonBody | str | bytes | None,
              headers: Mapping[str, str] | None = None) -> None:
        if payload is None:
            data = b""
        elif isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        extra = dict(headers or {})
        if not any(k.lower() == "content-type" for k in extra):
            extra = {"Content-Type": "application/json", **extra}
        try:
            self._reply(status, data, extra)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout fired): nothing left to answer.
            self.close_connection = True

