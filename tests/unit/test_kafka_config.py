from pathlib import Path

from exporter.clock import FakeClock
from exporter.config import load_config
from exporter.kafka_sink import KafkaPeriodSink, TopicAdmin, client_config


def test_security_settings_pass_through(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("sasl-secret\n")
    cfg = load_config(environ={}, overrides={"kafka": {
        "bootstrap_servers": "b1:9093,b2:9093", "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "exporter",
        "sasl_password_file": str(pw), "ssl_ca_location": "/etc/ca.pem",
        "ssl_certificate_location": "/etc/client.pem", "ssl_key_location": "/etc/client.key",
        "ssl_key_password": "keypass", "extra": {"client.id": "chargeback"}}})
    conf = client_config(cfg.kafka)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "exporter" and conf["sasl.password"] == "sasl-secret"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.certificate.location"] == "/etc/client.pem"
    assert conf["ssl.key.location"] == "/etc/client.key" and conf["ssl.key.password"] == "keypass"
    assert conf["enable.ssl.certificate.verification"] is True
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert "client.id" not in conf  # extra is for the producer only
    plain = load_config(environ={}, overrides={"kafka": {"extra": {"client.id": "chargeback"}}})
    sink = KafkaPeriodSink(plain.kafka, FakeClock(), admin=TopicAdmin(plain.kafka))
    assert sink._config()["client.id"] == "chargeback"


def test_producer_is_idempotent_transactional_acks_all() -> None:
    cfg = load_config(environ={}, overrides={"kafka": {"transactional_id": "billing-eu-1"}})
    sink = KafkaPeriodSink(cfg.kafka, FakeClock(), admin=TopicAdmin(cfg.kafka))
    conf = sink._config()
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["transactional.id"] == "billing-eu-1"


def test_topic_specs_compact_manifests_and_checkpoint() -> None:
    cfg = load_config(environ={}, overrides={"kafka": {"partitions": 12}})
    specs = TopicAdmin(cfg.kafka).specs()
    assert specs[cfg.kafka.topics.records] == (12, {"cleanup.policy": "delete"})
    assert specs[cfg.kafka.topics.manifests][1] == {"cleanup.policy": "compact"}
    assert specs[cfg.kafka.topics.checkpoint] == (1, {"cleanup.policy": "compact"})


def test_topic_configs_override_defaults_but_checkpoint_stays_compacted() -> None:
    import pytest

    from exporter.errors import ConfigError

    cfg = load_config(environ={}, overrides={"kafka": {"topic_configs": {
        "records": {"cleanup.policy": "compact,delete", "retention.ms": "3024000000"}}}})
    specs = TopicAdmin(cfg.kafka).specs()
    assert specs[cfg.kafka.topics.records][1] == {"cleanup.policy": "compact,delete",
                                                  "retention.ms": "3024000000"}
    with pytest.raises(ConfigError, match="checkpoint topic must be compacted"):
        load_config(environ={}, overrides={"kafka": {"topic_configs": {
            "checkpoint": {"cleanup.policy": "delete"}}}})
