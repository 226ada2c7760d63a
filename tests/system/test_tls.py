"""TLS verification is on by default for Sysdig, Kafka and the Schema Registry.

Sysdig is the delicate one: sdcclient's PromQL calls pass no `verify=` at all (shared doc
sysdig-api.md §1.7), so `ssl_verify=False` is ignored and environment variables decide. The
exporter's `_StrictAdapter` forces its own setting on every request; here the simulator is
served over HTTPS with a certificate from a CA made for the test.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from exporter.avro.registry import ConfluentFraming
from exporter.cli import main
from exporter.config import KafkaConfig, SchemaRegistryConfig, SysdigConfig
from exporter.errors import ConfigError, ExporterError, SinkUnavailable, SourceQueryError
from exporter.kafka import client_config
from exporter.periods import iso
from exporter.sysdig import SysdigSource
from exporter.wiring import build_dashboard_installer, build_retention, build_source
from tests.fakes.schema_registry import FakeSchemaRegistry
from tests.rigs.samples import BILLING
from tests.rigs.tls import Pki, make_pki, serve_tls
from tests.system.conftest import PERIOD, TOKEN, Sim


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_sim(sim: Sim, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Sim:
    """The simulator behind TLS; no CA bundle from the environment can help or hurt."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    httpd = sim.server._httpd
    assert httpd is not None
    serve_tls(httpd, pki)
    return sim


def https_source(sim: Sim, **sysdig: object) -> SysdigSource:
    url = sim.server.url.replace("http://", "https://")
    cfg = sim.config(sysdig={"url": url, **sysdig})
    return build_source(cfg, sim.clock)


def test_defaults_verify_everything() -> None:
    assert SysdigConfig().verify_tls is True and SysdigConfig().ca_file is None
    for protocol in ("SSL", "SASL_SSL"):
        kafka = KafkaConfig(security_protocol=protocol, sasl_mechanism="PLAIN")
        conf = client_config(kafka)
        assert conf["enable.ssl.certificate.verification"] is True
        assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert "enable.ssl.certificate.verification" not in SchemaRegistryConfig.model_fields
    assert not any("verify" in name for name in KafkaConfig.model_fields)


def test_sysdig_over_https_with_the_configured_ca(https_sim: Sim, pki: Pki) -> None:
    source = https_source(https_sim, ca_file=str(pki.ca_file))
    https_sim.assert_ground_truth(https_sim.lines(source))


def test_sysdig_over_https_without_the_ca_is_one_line_tls_error(https_sim: Sim) -> None:
    source = https_source(https_sim)
    with pytest.raises(SourceQueryError) as caught:
        source.fetch(PERIOD)
    text = str(caught.value)
    assert "TLS verification failed" in text and "\n" not in text, text
    assert https_sim.clock.sleeps == []  # a certificate problem is not retried


def test_sdcclient_environment_cannot_turn_verification_off(
        https_sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDC_SSL_VERIFY", "false")
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    with pytest.raises(SourceQueryError, match="TLS verification failed"):
        https_source(https_sim).fetch(PERIOD)


def test_verify_tls_false_works_and_urllib3_warns(https_sim: Sim) -> None:
    source = https_source(https_sim, verify_tls=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        https_sim.assert_ground_truth(https_sim.lines(source))
    assert any(issubclass(w.category, InsecureRequestWarning) for w in caught)


def test_verify_tls_false_is_logged_as_a_warning(https_sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        https_source(https_sim, verify_tls=False)
    assert any("verify_tls" in r.getMessage() or "verify_tls" in str(r.__dict__)
               for r in caplog.records if r.levelno >= logging.WARNING)


def test_a_ca_that_did_not_sign_the_server_is_refused(https_sim: Sim, tmp_path: Path) -> None:
    other = make_pki(tmp_path)  # a CA that did not sign the server's certificate
    with pytest.raises(SourceQueryError, match="TLS verification failed"):
        https_source(https_sim, ca_file=str(other.ca_file)).fetch(PERIOD)


# --- Schema Registry ---------------------------------------------------------------------------

@pytest.fixture
def https_registry(pki: Pki) -> Iterator[tuple[FakeSchemaRegistry, str]]:
    with FakeSchemaRegistry() as sr:
        assert sr._httpd is not None
        serve_tls(sr._httpd, pki)
        sr._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        yield sr, sr.url.replace("http://", "https://")


def test_registry_over_https_with_the_configured_ca(https_registry: tuple[FakeSchemaRegistry, str],
                                                    pki: Pki) -> None:
    _, url = https_registry
    framing = ConfluentFraming.from_config(SchemaRegistryConfig(url=url, ca_location=pki.ca_file))
    value = framing.encode_object("chargeback.records.v1", "billing_record", BILLING)
    assert value[:1] == b"\x00"


def registry_error_without_ca(url: str, monkeypatch: pytest.MonkeyPatch) -> ExporterError:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    framing = ConfluentFraming.from_config(SchemaRegistryConfig(url=url), timeout=5)
    with pytest.raises(ExporterError) as caught:
        framing.encode_object("chargeback.records.v1", "billing_record", BILLING)
    return caught.value


def test_registry_over_https_without_the_ca_is_refused_in_one_line(
        https_registry: tuple[FakeSchemaRegistry, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sr, url = https_registry
    error = registry_error_without_ca(url, monkeypatch)
    assert "\n" not in str(error) and url in str(error)
    assert sr.requests == []  # the handshake failed: nothing reached the registry


def test_registry_tls_failure_says_so_and_is_not_retried(
        https_registry: tuple[FakeSchemaRegistry, str], monkeypatch: pytest.MonkeyPatch) -> None:
    error = registry_error_without_ca(https_registry[1], monkeypatch)
    assert "certificate" in str(error).lower() or "tls" in str(error).lower(), str(error)
    assert not isinstance(error, SinkUnavailable)


# --- CA bundles from the environment, as `requests` users expect -------------------------------

def test_requests_ca_bundle_is_honoured_for_sysdig(https_sim: Sim, pki: Pki,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    https_sim.assert_ground_truth(https_sim.lines(https_source(https_sim)))


def test_curl_ca_bundle_is_honoured_for_sysdig(https_sim: Sim, pki: Pki,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.ca_file))
    https_sim.assert_ground_truth(https_sim.lines(https_source(https_sim)))


def test_requests_ca_bundle_comes_before_curl_ca_bundle(https_sim: Sim, pki: Pki, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(make_pki(tmp_path).ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.ca_file))
    with pytest.raises(SourceQueryError, match="TLS verification failed"):
        https_source(https_sim).fetch(PERIOD)


def test_the_configured_ca_file_comes_before_the_environment(https_sim: Sim, pki: Pki, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(make_pki(tmp_path).ca_file))
    https_sim.assert_ground_truth(https_sim.lines(https_source(https_sim, ca_file=str(pki.ca_file))))


def test_a_missing_ca_bundle_is_one_config_line(https_sim: Sim, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(ConfigError) as caught:
        https_source(https_sim).fetch(PERIOD)
    text = str(caught.value)
    assert "REQUESTS_CA_BUNDLE" in text and "nowhere.pem" in text and "\n" not in text


def test_the_dashboard_installer_and_the_retention_fetch_honour_the_bundle(
        https_sim: Sim, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    url = https_sim.server.url.replace("http://", "https://")
    cfg = https_sim.config(sysdig={"url": url, "retention_tiers": True})
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    assert build_dashboard_installer(cfg).find("no such dashboard") == []
    retention = build_retention(cfg, https_sim.clock)
    retention.tiers()
    assert retention.origin == "timelines"


def test_report_over_https_connects_with_the_bundle_and_says_one_line_without(
        https_sim: Sim, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = https_sim.server.url.replace("http://", "https://")
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"sysdig": {"url": url, "token": TOKEN, "retention_tiers": False,
                                           "max_attempts": 1},
                                "logging": {"format": "text", "level": "ERROR"}}))
    window = ["--from", iso(PERIOD.start), "--to", iso(PERIOD.end), "--format", "csv"]
    assert main(["report", "--config.file", str(path), *window], https_sim.clock) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TLS verification failed" in err and "Traceback" not in err
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    assert main(["report", "--config.file", str(path), *window], https_sim.clock) == 0
    assert len(capsys.readouterr().out.splitlines()) > 2
