"""The building blocks of every configuration section: `Section`, durations, times, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
)

from exporter.errors import ConfigError
from exporter.periods import parse_duration, parse_time


def _duration(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 10m, 1h")
    if isinstance(value, int | float | str):
        return parse_duration(value)
    raise ValueError("expected a duration such as 90s, 10m, 1h")


Duration = Annotated[int, BeforeValidator(_duration)]


def _time_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    return parse_time(str(value))


OptionalTime = Annotated[int | None, BeforeValidator(_time_or_none)]


class Section(BaseModel):
    """Base for every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """The secret's value from the config value or its file (file wins when both are set)."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read secret file {file}: {exc.strerror}") from exc
    return value.get_secret_value() if value is not None else None
