"""Structured logs: one JSON object per line, secrets scrubbed from every field.

Secrets are registered once at start-up (`register_secret`); the formatter replaces any
occurrence in the message and in every extra field, so a token that leaks into an exception
text from a library still never reaches the log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def register_secret(value: str | None) -> None:
    """Never print `value` (tokens, passwords); values shorter than 4 chars are ignored."""
    if value and len(value) >= 4:
        with _LOCK:
            _SECRETS.add(value)


def scrub(text: str) -> str:
    """Replace every registered secret in `text`."""
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, "***")
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(record.getMessage()),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                doc[k] = _clean(v)
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = scrub(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return json.dumps(doc, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={_clean(v)}" for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        line = f"{record.levelname.lower():7} {scrub(record.getMessage())}"
        return f"{line} {extras}".rstrip()


def setup(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure the root logger once: our formatter on stderr, noisy libraries quieted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "requests", "apscheduler", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # librdkafka logs every failed connection attempt; our own errors say what failed, once.
    logging.getLogger("exporter.librdkafka").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)
