"""`SysdigSource`: the usage source built on sdcclient's `get_data_promql`.

What this adapter fixes around sdcclient 0.19 (see docs/sysdig.md):
- URL and token are set explicitly after construction, so `SDC_TOKEN`/`SDC_URL`/`SDC_SSL_VERIFY`
  in the environment cannot silently win.
- sdcclient's urllib3 retry (3 retries on 5xx, ~12 s of backoff) is replaced by a zero-retry
  adapter; the one retry policy is ours (tenacity, bounded, on the injected clock).
- Its PromQL calls pass no `verify=` and no timeout; our adapter forces both on every request.
- `(ok, result)` tuples, raised `RetryError`/`ConnectionError`/timeouts and malformed bodies all
  become our own errors, classified by the HTTP status captured from the raw response.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, Inexact, InvalidOperation
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from exporter.clock import Clock
from exporter.errors import (
    IncompleteDataError,
    SourceAuthError,
    SourceQueryError,
    SourceUnavailable,
)
from exporter.model import PeriodUsage, Resource, SampleSums, WorkloadKey, WorkloadUsage
from exporter.money import CONTEXT, EXACT
from exporter.periods import Period
from exporter.queries import RECORD_GRAIN, QueryPlan, plan
from exporter.retry import call_with_retries

if TYPE_CHECKING:
    from exporter.retention import RetentionModel

NO_WORKLOAD = "__no_workload__"
# Sysdig caps aggregated answers at 100k result segments, without an error.
SERIES_CAP = 100_000
# Far above any real sum (1 PiB for a year of 10 s steps is ~3e21): larger is a broken answer.
MAX_VALUE = Decimal("1e30")


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


@dataclass(frozen=True, slots=True)
class QueryStats:
    requests: int
    bytes: int


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class SysdigClient:
    """Thin, typed, thread-safe wrapper over `sdcclient.SdMonitorClient` PromQL calls."""

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
    ) -> None:
        from sdcclient import SdMonitorClient

        self._token = token
        self._url = url.rstrip("/")
        self._clock = clock
        self._timeout = timeout
        self._attempts = attempts
        self._max_retry_time = max_retry_time
        self._on_request = on_request
        client = SdMonitorClient(token=token, sdc_url=self._url, ssl_verify=verify)
        # The environment overrides sdcclient's constructor arguments; ours must win.
        client.token = token
        client.url = self._url
        client.hdrs["Authorization"] = "Bearer " + token
        client.ssl_verify = verify
        adapter = StrictAdapter(verify, timeout + 10.0)
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
        with self._lock:
            self.requests += 1
            self.bytes += len(response.content or b"")

    def query_instant(self, query: str, at: float, what: str, answer: str = "vector") -> list[Any]:
        """Evaluate `query` at instant `at` (`/query?time=`), with retries.

        Returns the raw `result` list of an answer of kind `answer` ("vector"; "matrix" for a
        range selector such as `metric[2m]`, which gives raw samples). Raises `SourceUnavailable` (after
        retries), `SourceAuthError`, `SourceQueryError` for a rejected query or a malformed
        answer, and `IncompleteDataError` when Sysdig warns or caps the answer.
        """

        def once() -> list[Any]:
            where = f"Sysdig {self._url} ({what})"
            body = self._call(what, lambda: self._client.get_data_promql_instant(
                query, _num(at), timeout=f"{self._timeout}s"))
            return _result(body, answer, where)

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
            return _result(body, "matrix", where)

        return call_with_retries(once, clock=self._clock, attempts=self._attempts,
                                 max_delay=self._max_retry_time, what=f"sysdig {what}")

    def api(self, what: str, request: Callable[[Any], Any]) -> Any:
        """Run one non-PromQL sdcclient call, with retries, and return its body.

        `request` gets the wrapped `SdMonitorClient` and returns its `(ok, result)`. Raises as
        `query_instant`; a refusal's `SourceError.status` is the HTTP status (e.g. 403, 404).
        """
        return call_with_retries(lambda: self._call(what, lambda: request(self._client)),
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
        if status == 429:
            retry_after = _retry_after(response)
            raise SourceUnavailable(f"{where}: HTTP 429 {message} (rate limited)", retry_after)
        if status is not None and status >= 500:
            raise SourceUnavailable(f"{where}: HTTP {status} {message}")
        if status in (400, 422):
            raise SourceQueryError(f"{where}: query rejected, HTTP {status}: {message}", status)
        raise SourceQueryError(f"{where}: HTTP {status}: {message}", status)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _short(exc: BaseException) -> str:
    # requests' messages embed the URL with its query (long PromQL); keep them short.
    text = _first_line(exc)
    return text.split(" with url: ")[0][:200]


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


def _result(body: Any, kind: str, where: str) -> list[Any]:
    """The `data.result` list of a successful answer of `kind` ("vector" or "matrix").

    Any warning makes the answer incomplete: Sysdig warns when it truncates (the 1,000-series
    limit of queries without aggregation, `limit`), and a warning we cannot read is no better.
    An answer of `SERIES_CAP` series or more may have been capped silently (aggregated
    queries are cut at 100k result segments without an error), so it is incomplete too.
    """
    if not isinstance(body, dict) or body.get("status") != "success":
        raise SourceQueryError(f"{where}: malformed response: missing status 'success'")
    warnings = body.get("warnings")
    if warnings:
        first = _printable(str(warnings[0] if isinstance(warnings, list) else warnings)[:200])
        raise IncompleteDataError(f"{where}: Sysdig answered with a warning, so the answer may "
                                  f"be incomplete: {first}")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != kind:
        raise SourceQueryError(f"{where}: malformed response: data.resultType is not {kind}")
    result = data.get("result")
    if not isinstance(result, list):
        raise SourceQueryError(f"{where}: malformed response: data.result is not a list")
    if len(result) >= SERIES_CAP:
        raise IncompleteDataError(
            f"{where}: {len(result)} series, at Sysdig's cap of {SERIES_CAP} result segments; "
            "the answer may have been cut short")
    return result


def parse_vector(result: Sequence[Any], at: float, where: str) -> list[tuple[dict[str, str], Decimal]]:
    """Validate an instant answer evaluated at `at`: (labels, value) per series, in order.

    Every series must carry string labels and one `[at, "<number>"]` sample. A sample stamped
    at another instant than `at` is an error naming both instants: it is never read as "no
    series". Values must be finite, non-negative and at most `MAX_VALUE`.
    """
    out: list[tuple[dict[str, str], Decimal]] = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
            raise SourceQueryError(f"{where}: malformed series: missing 'metric' map")
        labels = item["metric"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise SourceQueryError(f"{where}: malformed series: labels must be strings")
        point = item.get("value")
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise SourceQueryError(f"{where}: malformed series: missing 'value' [time, value]")
        ts, raw = point
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not isinstance(raw, str):
            raise SourceQueryError(f"{where}: malformed point {_printable(str(point)[:80])}")
        if not math.isclose(float(ts), at, abs_tol=1e-3):
            raise SourceQueryError(
                f"{where}: answer stamped at {_instant(float(ts))}, asked for {_instant(at)}; "
                "the period is held rather than read as having no series")
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise SourceQueryError(f"{where}: value {_printable(raw[:40])} is not a number") from None
        if not value.is_finite() or value < 0 or value > MAX_VALUE:
            raise SourceQueryError(
                f"{where}: unusable value {_printable(raw[:40])} for series {_brief(labels)}")
        out.append((labels, value))
    return out


def _instant(t: float) -> str:
    """An instant as epoch seconds and UTC time, for error messages."""
    stamp = datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{_num(t)} ({stamp})"


def _brief(labels: Mapping[str, str]) -> str:
    # Label values are arbitrary text: escape them so an error stays on one line.
    return ",".join(f"{k[:40]}={_printable(v[:40])}" for k, v in list(labels.items())[:4])


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


class SysdigSource:
    """Measures periods by sending the `exporter.queries` plan to Sysdig.

    `retention` chooses each period's step (`exporter.retention`); without one every period is
    measured at `resolution`.
    """

    def __init__(
        self,
        client: SysdigClient,
        *,
        clock: Clock,
        label_columns: Sequence[str],
        resolution: int = 10,
        grain: str = "pod",
        clusters: Sequence[str] = (),
        concurrency: int = 4,
        retention: RetentionModel | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._columns = tuple(label_columns)
        self._resolution = resolution
        self._grain = grain
        self._clusters = tuple(clusters)
        self._concurrency = concurrency
        self._retention = retention

    def step_for(self, period: Period) -> int:
        """See `UsageSource.step_for`; raises `RetentionError` beyond Sysdig's retention."""
        if self._retention is None:
            return self._resolution
        return self._retention.step_for(period)

    def plan_for(self, period: Period) -> tuple[QueryPlan, int, float]:
        step = self.step_for(period)
        if period.length % step:
            step = period.length
        p = plan(period.length, step, self._grain, self._clusters, self._columns)
        return p, step, period.end - step / 2

    def fetch(self, period: Period) -> PeriodUsage:
        qplan, step, at = self.plan_for(period)
        before_requests, before_bytes = self._client.requests, self._client.bytes
        named = qplan.all()

        def run(item: tuple[str, str]) -> tuple[str, list[tuple[dict[str, str], Decimal]]]:
            name, query = item
            raw = self._client.query_instant(query, at, f"{name} {period}")
            return name, parse_vector(raw, at, f"Sysdig ({name} {period})")

        if self._concurrency > 1:
            with ThreadPoolExecutor(max_workers=min(self._concurrency, len(named))) as pool:
                results = dict(pool.map(run, named))
        else:
            results = dict(map(run, named))
        return self._assemble(
            period, step, results,
            self._client.requests - before_requests, self._client.bytes - before_bytes,
        )

    def _assemble(
        self, period: Period, step: int, results: Mapping[str, Sequence[tuple[Mapping[str, str], Decimal]]],
        queries: int, nbytes: int,
    ) -> PeriodUsage:
        """One `PeriodUsage` from the (labels, value) pairs of each answer, by answer name.

        Sums are exact (or the period is refused); coverage shares use `money.CONTEXT`.
        """
        # Per workload, one sum per `_SLOTS` entry (None: no series yet). Several series of one
        # workload (pod or container grain beyond one workload label set) add up exactly, or
        # the period is refused: never rounded at the default 28 digits.
        add = EXACT.add  # values are at most MAX_VALUE; Sysdig's have 17 digits
        sums: dict[_Grain, list[Decimal | None]] = {}
        # The same lists by raw grain labels, so a series costs one lookup.
        rows: dict[_Grain, list[Decimal | None]] = {}
        grain_of = _grain_of
        for i, slot in enumerate(_SLOTS):
            for labels, value in results[slot]:
                try:
                    raw = grain_of(labels)
                except KeyError:
                    raw = _raw_grain(labels)
                got = rows.get(raw)
                if got is None:
                    key = _canonical(raw)
                    got = sums.get(key)
                    if got is None:
                        got = sums[key] = [None] * len(_SLOTS)
                    rows[raw] = got
                prev = got[i]
                if prev is None:
                    got[i] = value
                else:
                    try:
                        got[i] = add(prev, value)
                    except Inexact:
                        raise SourceQueryError(
                            f"Sysdig ({slot}): the series of {_brief(labels)} do not add up "
                            f"exactly in {EXACT.prec} digits") from None
        picked = _best_labels(results["labels"], self._columns)
        coverage: dict[str, Decimal] = {}
        expected = Decimal(period.length // step)
        for labels, value in results["coverage"]:
            cluster = labels.get("kube_cluster_name", "")
            coverage[cluster] = min(Decimal(1), CONTEXT.divide(value, expected))
        for cluster in dict.fromkeys(key[0] for key in sums):  # first-seen order, once each
            coverage.setdefault(cluster, Decimal(0))
        for cluster in self._clusters:
            coverage.setdefault(cluster, Decimal(0))
        workloads = []
        zero = Decimal(0)
        # Grain tuples sort exactly as their WorkloadKeys do (field order), but in C.
        for key in sorted(sums):
            cu, cr, cc, mu, mr, mc = [zero if v is None else v for v in sums[key]]
            per: dict[Resource, SampleSums] = {
                "cpu": SampleSums(cu, cr, cc), "memory": SampleSums(mu, mr, mc)}
            found = picked.get(key)
            workloads.append(WorkloadUsage(WorkloadKey(*key), {} if found is None else found, per))
        return PeriodUsage(
            period=period, step_seconds=step, grain=self._grain, workloads=tuple(workloads),
            coverage=coverage,
            usage_clusters=frozenset(lbl.get("kube_cluster_name", "") for lbl, _ in results["labels"]),
            request_clusters=frozenset(
                lbl.get("kube_cluster_name", "") for lbl, _ in results["requests.present"]),
            queries=queries, bytes_fetched=nbytes,
        )


# The six quantity answers, per resource in `SampleSums` field order (usage, request, chargeable).
_SLOTS: tuple[str, ...] = tuple(
    f"{res}.{part}" for res in ("cpu", "memory") for part in ("usage", "request", "chargeable"))
_Grain = tuple[str, str, str, str]
_grain_of = itemgetter(*RECORD_GRAIN)


def _raw_grain(labels: Mapping[str, str]) -> _Grain:
    """The grain labels of a series; a missing one is ""."""
    try:
        raw: _Grain = _grain_of(labels)
    except KeyError:
        raw = (labels.get(RECORD_GRAIN[0], ""), labels.get(RECORD_GRAIN[1], ""),
               labels.get(RECORD_GRAIN[2], ""), labels.get(RECORD_GRAIN[3], ""))
    return raw


def _canonical(raw: _Grain) -> _Grain:
    """The `WorkloadKey` fields of grain labels `raw`: no kind is "unknown", no name NO_WORKLOAD.

    A plain tuple is equal to and sorts as its WorkloadKey does, but is hashed and compared in C.
    """
    cluster, namespace, kind, name = raw
    if kind and name:
        return raw
    return (cluster, namespace, kind or "unknown", name or NO_WORKLOAD)


def _grain(labels: Mapping[str, str]) -> _Grain:
    """The canonical grain (`WorkloadKey` fields) of a series' labels."""
    return _canonical(_raw_grain(labels))


def _best_labels(series: Iterable[tuple[Mapping[str, str], Decimal]], columns: Sequence[str],
                 ) -> dict[_Grain, dict[str, str]]:
    """Per workload grain, the label combination of `columns` seen in the most samples (ties:
    sorted first), from (labels, sample count) pairs."""
    wanted = frozenset(columns)
    best: dict[_Grain, tuple[Decimal, tuple[tuple[str, str], ...]]] = {}
    for labels, value in series:
        key = _grain(labels)
        combo = tuple(sorted([kv for kv in labels.items() if kv[0] in wanted]))
        current = best.get(key)
        if current is None or value > current[0] or (value == current[0] and combo < current[1]):
            best[key] = (value, combo)
    return {k: dict(v[1]) for k, v in best.items()}
