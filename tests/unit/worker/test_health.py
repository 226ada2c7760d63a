"""`/healthz`, `/readyz` and `/metrics` over real HTTP on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.errors import ConfigError, ExporterError
from exporter.health import HealthServer, parse_listen_address

from .conftest import HOUR, SETTLE, T0, Rig, make_rig


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[Rig, str]]:
    r = make_rig()
    server = HealthServer("127.0.0.1:0", r.health, r.metrics.registry)
    server.start()
    try:
        assert server.port != 0
        yield r, server.url
    finally:
        server.stop()


def test_healthz_is_200_while_alive(served: tuple[Rig, str]) -> None:
    _, url = served
    assert get(url + "/healthz")[:1] == (200,)
    assert get(url + "/healthz")[2] == "ok\n"


def test_readyz_transitions(served: tuple[Rig, str]) -> None:
    r, url = served

    status, ctype, body = get(url + "/readyz")
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body) == {"ready": False, "reason": "sink not started"}

    r.worker.start()  # no checkpoint yet: the sink is up, nothing committed
    status, _, body = get(url + "/readyz")
    assert status == 503 and json.loads(body)["reason"] == "no period committed yet"

    r.worker.export_due()
    status, _, body = get(url + "/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "reason": "last committed period ended 5m ago",
                                "last_committed_period_end": T0}

    # Lag reaches 2 intervals + settle without a new commit: not ready, with the reason.
    r.clock.advance(2 * HOUR - 1)
    assert get(url + "/readyz")[0] == 200
    r.clock.advance(1)
    status, _, body = get(url + "/readyz")
    assert status == 503
    assert json.loads(body)["reason"] == "last committed period ended 125m ago, limit 125m"

    # Catching up makes it ready again; closing the sink makes it unready.
    r.worker.export_due()
    assert get(url + "/readyz")[0] == 200
    r.worker.close()
    assert json.loads(get(url + "/readyz")[2])["reason"] == "sink not started"


def test_ready_right_after_start_when_the_checkpoint_is_recent() -> None:
    r = make_rig()
    r.seed_checkpoint(T0 - HOUR)
    assert r.health.readiness()[0] is False
    r.worker.start()
    assert r.health.readiness() == (True, "last committed period ended 65m ago")


def test_metrics_exposes_the_declared_metrics_and_their_values(served: tuple[Rig, str]) -> None:
    r, url = served
    r.worker.start()
    r.worker.export_due()
    r.metrics.observe_sysdig("cpu_usage [..]", 503, 0.2)
    status, ctype, body = get(url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body) for s in fam.samples}
    assert samples[("chargeback_periods_exported_total", (("mode", "live"),))] == 1
    assert samples[("chargeback_records_produced_total", (("mode", "live"),))] == 4
    assert samples[("chargeback_last_closed_period_end_seconds", ())] == T0
    assert samples[("chargeback_export_lag_seconds", ())] == SETTLE
    assert samples[("chargeback_unallocated_share",
                    (("cluster", "prod"), ("org_key", "costcenter"), ("resource", "cpu")))] == 0.5
    assert samples[("chargeback_sysdig_errors_total", (("status", "503"),))] == 1
    assert samples[("chargeback_period_duration_seconds_count", ())] == 1
    families = {fam.name for fam in text_string_to_metric_families(body)}
    for declared in ("chargeback_kafka_delivery_errors", "chargeback_transaction_aborts",
                     "chargeback_period_failures", "chargeback_sysdig_request_seconds",
                     "chargeback_coarse_periods"):
        assert declared in families


def test_unknown_path_is_404(served: tuple[Rig, str]) -> None:
    _, url = served
    assert get(url + "/config")[0] == 404


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9847", ("127.0.0.1", 9847)),
    (":9847", ("0.0.0.0", 9847)),
    ("[::1]:0", ("::1", 0)),
    ("0.0.0.0:9847", ("0.0.0.0", 9847)),
])
def test_parse_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["9847", "host:port", "::1:9847", "[::1:9847", "127.0.0.1:70000"])
def test_bad_listen_address_is_one_config_line(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^web.listen_address: "):
        parse_listen_address(text)


def test_address_in_use_is_one_line(served: tuple[Rig, str]) -> None:
    r, url = served
    port = int(url.rsplit(":", 1)[1])
    other = HealthServer(f"127.0.0.1:{port}", r.health, r.metrics.registry)
    with pytest.raises(ExporterError, match=rf"^web.listen_address: cannot listen on 127.0.0.1:{port}: "):
        other.start()
