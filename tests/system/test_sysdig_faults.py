"""Sysdig misbehaving, one fault per test, through the real sdcclient and the simulator.

Every retry is counted at the simulator: the exporter's own policy is the only one (sdcclient's
urllib3 retries are replaced), it is bounded by `sysdig.max_attempts` and `sysdig.max_retry_time`,
and it sleeps on the injected clock. A request answered normally after a fault gives the exact
ground truth; an exhausted or unusable answer gives one line saying what and where.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest

from chargeback_simulator.localbroker import LocalBroker
from exporter.config import Config
from exporter.errors import IncompleteDataError, SourceQueryError, SourceUnavailable
from exporter.metrics import Metrics
from exporter.periods import Period
from exporter.wiring import build_codec
from tests.rigs.harness import check_ledger, read_committed
from tests.system.conftest import PERIOD, Sim, worker_for

QUERIES = 13  # one period: the pre-count of series, then usage, request, chargeable for cpu and
# memory, labels, coverage, presence; GPU request and utilisation, claims
PROM = "/prometheus"


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.startswith("Sysdig "), text
    return text


# --- 429 ---------------------------------------------------------------------------------------

def test_429_with_retry_after_waits_as_told(sim: Sim) -> None:
    sim.server.faults.push(PROM, status=429, headers={"Retry-After": "7"}, count=2)
    lines = sim.lines(sim.source(max_attempts=3))
    sim.assert_ground_truth(lines)
    assert sim.prometheus_requests() == QUERIES + 2
    assert sim.clock.sleeps == [7.0, 7.0]


def test_429_without_retry_after_backs_off_exponentially(sim: Sim) -> None:
    sim.server.faults.push(PROM, status=429, count=2)
    sim.assert_ground_truth(sim.lines(sim.source(max_attempts=3)))
    assert sim.prometheus_requests() == QUERIES + 2
    first, second = sim.clock.sleeps
    assert 1.0 <= first <= 2.0 and 2.0 <= second <= 3.0  # 1 s, then 2 s, plus up to 1 s jitter


def test_429_with_an_http_date_retry_after_falls_back_to_backoff(sim: Sim) -> None:
    sim.server.faults.push(PROM, status=429, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})
    sim.assert_ground_truth(sim.lines(sim.source(max_attempts=2)))
    assert len(sim.clock.sleeps) == 1 and 1.0 <= sim.clock.sleeps[0] <= 2.0


def test_persistent_429_stops_after_max_attempts_with_one_line(sim: Sim) -> None:
    sim.server.faults.push(PROM, status=429, headers={"Retry-After": "1"}, count=1000)
    with pytest.raises(SourceUnavailable) as caught:
        sim.source(max_attempts=4).fetch(PERIOD)
    assert "HTTP 429" in one_line(caught.value) and "rate limited" in str(caught.value)
    assert sim.prometheus_requests() == 4
    assert sim.clock.sleeps == [1.0, 1.0, 1.0]


def test_huge_retry_after_is_capped_and_total_retry_time_bounds_attempts(sim: Sim) -> None:
    sim.server.faults.push(PROM, status=429, headers={"Retry-After": "100000"}, count=1000)
    with pytest.raises(SourceUnavailable):
        sim.source(max_attempts=10, max_retry_time=100).fetch(PERIOD)
    # Waits are capped at 60 s; the third attempt starts at t+120 s, past max_retry_time 100 s.
    assert sim.clock.sleeps == [60.0, 60.0]
    assert sim.prometheus_requests() == 3


# --- 5xx ---------------------------------------------------------------------------------------

def test_a_burst_of_5xx_shorter_than_the_attempts_is_absorbed(sim: Sim) -> None:
    for status in (500, 502, 503, 504):
        sim.server.faults.push(PROM, status=status)
    sim.assert_ground_truth(sim.lines(sim.source(max_attempts=5)))
    assert sim.prometheus_requests() == QUERIES + 4  # not 4 x 4: sdcclient's own retries are off
    assert len(sim.clock.sleeps) == 4


def test_a_burst_of_5xx_longer_than_the_attempts_fails_after_exactly_max_attempts(sim: Sim) -> None:
    sim.server.faults.push(PROM, status=503, count=50)
    with pytest.raises(SourceUnavailable) as caught:
        sim.source(max_attempts=3).fetch(PERIOD)
    assert "HTTP 503" in one_line(caught.value)
    assert sim.prometheus_requests() == 3
    assert sim.server.faults.pending() == 47


def test_a_proxy_error_page_is_retried(sim: Sim) -> None:
    sim.server.faults.push(PROM, status=502, body="<html><body>502 Bad Gateway</body></html>",
                           headers={"Content-Type": "text/html"}, count=2)
    sim.assert_ground_truth(sim.lines(sim.source(max_attempts=3)))
    assert sim.prometheus_requests() == QUERIES + 2


def test_concurrent_queries_retry_independently_and_stay_bounded(sim: Sim) -> None:
    # Which query meets which of the 6 failures depends on thread scheduling; with 7 attempts
    # no query can run out whatever the order, and the total stays exactly queries + failures.
    sim.server.faults.push(PROM, status=500, count=6)
    sim.assert_ground_truth(sim.lines(sim.source(max_attempts=7, max_concurrency=4)))
    assert sim.prometheus_requests() == QUERIES + 6


# --- slow responses ----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_response_slower_than_the_client_timeout_is_abandoned_and_retried(sim: Sim) -> None:
    """sysdig.timeout 1 s: the adapter gives up a request after 1 + 10 s (real time)."""
    sim.server.faults.push(PROM, delay=12.0)
    began = time.monotonic()
    sim.assert_ground_truth(sim.lines(sim.source(timeout=1, max_attempts=2)))
    elapsed = time.monotonic() - began
    assert 11.0 <= elapsed < 20.0
    assert sim.prometheus_requests() == QUERIES + 1
    timeouts = {r.query.get("timeout", [""])[0] for r in sim.server.requests}
    assert timeouts == {"1s"}  # the server-side query timeout is sent as configured


@pytest.mark.slow
def test_slow_responses_exhaust_the_attempts_with_one_line(sim: Sim) -> None:
    sim.server.faults.push(PROM, delay=12.0, count=5)
    began = time.monotonic()
    with pytest.raises(SourceUnavailable) as caught:
        sim.source(timeout=1, max_attempts=1).fetch(PERIOD)
    assert time.monotonic() - began < 20.0
    assert "timed out" in one_line(caught.value)
    assert sim.prometheus_requests() == 1


# --- truncated and malformed bodies ------------------------------------------------------------

TRUNCATED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
             b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"kube_clu')


def test_a_body_cut_off_by_a_closed_connection_is_retried(sim: Sim) -> None:
    sim.server.faults.push(PROM, raw=TRUNCATED, count=2)
    sim.assert_ground_truth(sim.lines(sim.source(max_attempts=3)))
    assert sim.prometheus_requests() == QUERIES + 2


def test_a_cut_off_body_that_persists_is_reported_in_one_line(sim: Sim) -> None:
    sim.server.faults.push(PROM, raw=TRUNCATED, count=10)
    with pytest.raises(SourceUnavailable) as caught:
        sim.source(max_attempts=3).fetch(PERIOD)
    one_line(caught.value)
    assert sim.prometheus_requests() == 3


def test_json_cut_inside_a_complete_response_is_retried_then_reported(sim: Sim) -> None:
    cut = '{"status":"success","data":{"resultType":"matrix","result":[{"metric":'
    sim.server.faults.push(PROM, status=200, body=cut, count=3)
    with pytest.raises(SourceUnavailable) as caught:
        sim.source(max_attempts=3).fetch(PERIOD)
    assert "malformed response (HTTP 200): body is not JSON" in one_line(caught.value)
    assert sim.prometheus_requests() == 3
    sim.server.faults.push(PROM, status=200, body=cut)
    sim.assert_ground_truth(sim.lines(sim.source(max_attempts=2)))


@pytest.mark.parametrize("body", [
    {"status": "success", "data": {"resultType": "vector", "result": {"not": "a list"}}},
    {"status": "success", "data": {"resultType": "string", "result": "x"}},
    {"status": "success", "data": {"resultType": "matrix", "result": []}},
    {"status": "error", "errorType": "internal", "error": "but HTTP 200"},
    {"status": "success"},
    [1, 2, 3],
    "just a string",
    None,
    {"status": "success",
     "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, 2, 3]}]}},
    {"status": "success", "data": {"resultType": "vector", "result": [{"value": []}]}},
], ids=["result-not-list", "string-result", "matrix-result", "error-status-200", "no-data", "list",
        "string", "null", "bad-point", "no-metric"])
def test_a_well_formed_but_unusable_answer_is_not_retried(sim: Sim, body: Any) -> None:
    sim.server.faults.push(PROM, status=200, body=json.dumps(body))
    with pytest.raises(SourceQueryError) as caught:
        sim.source(max_attempts=3).fetch(PERIOD)
    assert "malformed" in one_line(caught.value)
    assert sim.prometheus_requests() == 1 and sim.clock.sleeps == []


@pytest.mark.parametrize("warning", ["results truncated due to limit: 10 of 99 series",
                                     "query exceeded the 1000 series limit"])
def test_a_warned_answer_is_incomplete_and_not_retried(sim: Sim, warning: str) -> None:
    sim.server.faults.push(PROM, status=200, body=json.dumps(
        {"status": "success", "warnings": [warning],
         "data": {"resultType": "vector", "result": []}}))
    with pytest.raises(IncompleteDataError, match="warning") as caught:
        sim.source(max_attempts=3).fetch(PERIOD)
    assert warning in one_line(caught.value)
    assert sim.prometheus_requests() == 1 and sim.clock.sleeps == []


def test_an_answer_stamped_elsewhere_names_both_instants(sim: Sim) -> None:
    at = PERIOD.end - 5
    sim.server.faults.push(PROM, status=200, body=json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"kube_cluster_name": "c"}, "value": [PERIOD.end - 10, "1"]}]}}))
    with pytest.raises(SourceQueryError) as caught:
        sim.source(max_attempts=3).fetch(PERIOD)
    assert f"stamped at {PERIOD.end - 10} " in str(caught.value)
    assert f"asked for {at} " in str(caught.value)


# --- series missing for part of a period -------------------------------------------------------

def worker_missing_20_minutes_of_requests(sim: Sim, noida: LocalBroker, policy: str
                                          ) -> tuple[Any, Config, Metrics]:
    """A started worker with `incomplete_policy` set to `policy`, whose Sysdig lacks PERIOD's
    request samples from minute 20 to minute 40."""
    sim.storage.gap = (PERIOD.start + 1200, PERIOD.start + 2400)
    return worker_for(sim, noida, periods={"incomplete_policy": policy})


def test_missing_requests_for_20_minutes_hold_the_period_until_the_data_is_complete(
        sim: Sim, noida: LocalBroker) -> None:
    worker, cfg, metrics = worker_missing_20_minutes_of_requests(sim, noida, "hold")
    try:
        out = worker.export_due()
        assert out.exported == () and out.held == PERIOD
        assert isinstance(out.error, IncompleteDataError)
        assert "coverage below 0.95" in str(out.error) and "\n" not in str(out.error)
        out = worker.export_due()  # still incomplete on the next wake-up: held again
        assert out.held == PERIOD and read_committed(cfg, cfg.kafka.topics.records) == []
        sim.storage.gap = None  # the samples arrived late
        out = worker.export_due()
        assert out.exported[0] == PERIOD
    finally:
        worker.close()
    assert metrics.registry.get_sample_value("chargeback_period_failures_total",
                                             {"reason": "incomplete"}) == 2
    ledger = check_ledger(cfg, sim.fleet, PERIOD.start, PERIOD.end + 3600)
    assert ledger.problems == [] and ledger.statuses == {"final": 4}


def test_missing_requests_for_20_minutes_are_published_flagged_when_configured(
        sim: Sim, noida: LocalBroker) -> None:
    worker, cfg, _ = worker_missing_20_minutes_of_requests(sim, noida, "publish-flagged")
    try:
        out = worker.export_due()
        assert out.exported[0] == PERIOD and out.error is None
    finally:
        worker.close()
    codec = build_codec(cfg)
    manifests = [codec.decode_manifest(m.value) for m in read_committed(cfg, cfg.kafka.topics.manifests)]
    flagged = [m for m in manifests if m.period == PERIOD]
    assert flagged and {m.status for m in flagged} == {"low-coverage"}
    assert not any(m.complete for m in flagged)
    assert all(Decimal("0.66") < m.sample_coverage < Decimal("0.67") for m in flagged)  # 40 of 60 min
    # The next period has every sample: final, and equal to the ground truth.
    nxt = Period(PERIOD.end, PERIOD.end + 3600)
    later = [m for m in manifests if m.period == nxt]
    assert later and {m.status for m in later} == {"final"}


def test_an_answer_cut_at_sysdigs_cap_is_incomplete(sim: Sim) -> None:
    """Sysdig caps aggregated answers without a warning; the simulator does the same, here at 3
    series instead of 100k so that a small fleet reaches it (and the tenant's limit is set so)."""
    sim.server.segment_cap = 3
    with pytest.raises(IncompleteDataError, match="cap of 3"):
        sim.source(max_attempts=1, limits={"segments": 3, "margin": 0.5},
                   group_series=1).fetch(PERIOD)
