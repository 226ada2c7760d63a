from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import main
from exporter.clock import FakeClock
from exporter.config import load_config
from exporter.errors import ConfigError
from exporter.kafka import KafkaPeriodSink, TopicAdmin, client_config


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


UNLIMITED = {"retention.ms": "-1", "retention.bytes": "-1"}


def test_topic_specs_compact_manifests_and_checkpoint_and_keep_everything_by_default() -> None:
    cfg = load_config(environ={}, overrides={"kafka": {"partitions": 12}})
    specs = TopicAdmin(cfg.kafka).specs()
    assert specs[cfg.kafka.topics.records] == (12, {"cleanup.policy": "delete", **UNLIMITED})
    assert specs[cfg.kafka.topics.manifests][1] == {"cleanup.policy": "compact", **UNLIMITED}
    assert specs[cfg.kafka.topics.checkpoint] == (1, {"cleanup.policy": "compact", **UNLIMITED})


def test_topic_configs_override_defaults_but_checkpoint_stays_compacted() -> None:
    cfg = load_config(environ={}, overrides={"kafka": {"topic_configs": {
        "records": {"cleanup.policy": "compact,delete", "retention.ms": 3024000000}}}})
    specs = TopicAdmin(cfg.kafka).specs()
    assert specs[cfg.kafka.topics.records][1] == {"cleanup.policy": "compact,delete",
                                                  "retention.ms": "3024000000",
                                                  "retention.bytes": "-1"}
    assert specs[cfg.kafka.topics.manifests][1] == {"cleanup.policy": "compact", **UNLIMITED}
    with pytest.raises(ConfigError, match="checkpoint topic must be compacted"):
        load_config(environ={}, overrides={"kafka": {"topic_configs": {
            "checkpoint": {"cleanup.policy": "delete"}}}})


@pytest.mark.parametrize("configs,message", [
    ({"records": {"retention.msec": "-1"}},
     r"kafka\.topic_configs\.records: retention\.msec: unknown topic config"),
    ({"records": {"retention.ms": "7d"}},
     r"kafka\.topic_configs\.records: retention\.ms: expected an integer"),
    ({"manifests": {"retention.bytes": -2}},
     r"kafka\.topic_configs\.manifests: retention\.bytes: expected an integer"),
    ({"records": {"cleanup.policy": "forever"}},
     r"kafka\.topic_configs\.records: cleanup\.policy: expected delete, compact"),
    ({"invoices": {"retention.ms": "-1"}}, r"kafka\.topic_configs\.invoices"),
    ({"checkpoint": {"cleanup.policy": "compact,delete", "retention.ms": "604800000"}},
     r"checkpoint.*retention\.ms"),
])
def test_topic_configs_are_validated(configs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(environ={}, overrides={"kafka": {"topic_configs": configs}})
    assert "\n" not in str(err.value)


def test_check_config_prints_the_effective_topic_configs(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("kafka:\n  topic_configs:\n    records:\n      retention.ms: 2592000000\n")
    assert main(["check-config", "--config.file", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["kafka"]["topic_configs"]
    assert printed == {
        "records": {"cleanup.policy": "delete", "retention.ms": "2592000000", "retention.bytes": "-1"},
        "manifests": {"cleanup.policy": "compact", **UNLIMITED},
        "checkpoint": {"cleanup.policy": "compact", **UNLIMITED},
    }
