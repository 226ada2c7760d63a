"""librdkafka clients: the settings producer, consumer and admin share, and error helpers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

from exporter.config import KafkaConfig
from exporter.errors import ConfigError

T = TypeVar("T")


def client_config(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings shared by producer, consumer and admin: brokers and security."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "security.protocol": cfg.security_protocol,
        # librdkafka's own log lines go through our JSON logs (and their secret scrubbing).
        "logger": logging.getLogger("exporter.librdkafka"),
    }
    if cfg.sasl_mechanism:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
    if cfg.sasl_username:
        conf["sasl.username"] = cfg.sasl_username
    password = cfg.resolved_sasl_password()
    if password:
        conf["sasl.password"] = password
    if cfg.ssl_ca_location:
        conf["ssl.ca.location"] = str(cfg.ssl_ca_location)
    if cfg.ssl_certificate_location:
        conf["ssl.certificate.location"] = str(cfg.ssl_certificate_location)
    if cfg.ssl_key_location:
        conf["ssl.key.location"] = str(cfg.ssl_key_location)
    if cfg.ssl_key_password:
        conf["ssl.key.password"] = cfg.ssl_key_password.get_secret_value()
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        # Verification of the broker's certificate and hostname is on; it can't be configured off here.
        conf["enable.ssl.certificate.verification"] = True
        conf["ssl.endpoint.identification.algorithm"] = "https"
    return conf


def construct(factory: Callable[[dict[str, Any]], T], conf: dict[str, Any]) -> T:
    """Build a librdkafka client; a setting it rejects is a configuration error, not a crash."""
    try:
        return factory(conf)
    except KafkaException as exc:
        err = error_of(exc)
        text = err.str() if err is not None else str(exc)
        raise ConfigError(f"kafka.extra or kafka settings rejected by librdkafka: {text}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"kafka.extra or kafka settings rejected by librdkafka: {exc}") from None


def describe(err: KafkaError | None) -> str:
    """`NAME: text` of a librdkafka error, for one-line messages."""
    if err is None:
        return "unknown error"
    return f"{err.name()}: {err.str()}"


def error_of(exc: BaseException) -> KafkaError | None:
    """The `KafkaError` a `KafkaException` carries, if any."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None
