"""The shared YAML file reader: the same one-line errors for the config file and the rate card."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import load_config
from exporter.errors import ConfigError, PricingError
from exporter.pricing import RateCard
from exporter.yamlfile import read_yaml


def test_reads_a_document_and_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("a: [1, 2.5]\n", encoding="utf-8")
    assert read_yaml(path, "thing", ConfigError) == {"a": [1, 2.5]}
    path.write_text("", encoding="utf-8")
    assert read_yaml(path, "thing", ConfigError) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read config file: No such file or directory"),
        (b"a: \xff\n", "config file is not UTF-8 (byte 3)"),
        (b"kafka: [\n", "line 2, column 1: expected the node content, but found '<stream end>'"),
        (b"a: 1\n  b: 2\n", "line 2, column 4: mapping values are not allowed here"),
    ],
)
def test_config_file_errors_are_one_line(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value) == f"{path}: {expected}"


def test_rate_card_and_config_word_the_same_failure_alike(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"a: [\n")
    with pytest.raises(PricingError) as card:
        RateCard.load(path)
    with pytest.raises(ConfigError) as config:
        load_config(path, environ={})
    assert str(card.value) == str(config.value) == (
        f"{path}: line 2, column 1: expected the node content, but found '<stream end>'"
    )
    assert type(card.value) is PricingError and type(config.value) is ConfigError


def test_a_directory_is_unreadable_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(PricingError) as err:
        RateCard.load(tmp_path)
    assert str(err.value) == f"{tmp_path}: cannot read rate card: Is a directory"
