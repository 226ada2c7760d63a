"""Every rate card and allow-list the docs show loads the way the worker loads it.

The examples are read out of the docs themselves: the fenced YAML blocks of docs/pricing.md and
docs/deploy.md, the allow-list CSV of docs/pricing.md and examples/rate-card.yaml. Each is
loaded by `build_pipeline`, the worker's own start-up path, for every period length, and then
checked by `check-config`, which must agree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import main
from exporter.clock import FakeClock
from exporter.config import load_config
from exporter.periods import parse_time
from exporter.wiring import build_pipeline
from tests.rigs.paths import ROOT

REPO = ROOT
DOCS = REPO / "docs"
LENGTHS = ("10m", "1h", "1d")


def fenced(page: str, language: str) -> list[str]:
    """The fenced blocks of `language` in docs/`page`, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def yaml_blocks(page: str) -> list[Any]:
    return [yaml.safe_load(block) for block in fenced(page, "yaml")]


def doc_rate_cards() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, rate card text, the config section beside it) for every rate card in the docs."""
    cards: list[tuple[str, str, dict[str, Any]]] = []
    pricing_blocks = fenced("pricing.md", "yaml")
    org = next(b["org"] for b in map(yaml.safe_load, pricing_blocks) if "org" in b)
    for i, block in enumerate(pricing_blocks):
        if "versions" in yaml.safe_load(block):
            cards.append((f"pricing.md block {i}", block, {"org": org}))
    for i, values in enumerate(yaml_blocks("deploy.md")):
        for name, content in (values.get("files") or {}).items():
            config = values.get("config", {})
            referenced = config.get("pricing", {}).get("rate_card_file", "")
            if referenced.endswith("/" + name):
                cards.append((f"deploy.md block {i} files.{name}", content, config))
    cards.append(("examples/rate-card.yaml",
                  (REPO / "examples" / "rate-card.yaml").read_text(encoding="utf-8"), {}))
    return cards


CARDS = doc_rate_cards()


def test_the_docs_show_rate_cards() -> None:
    names = [name for name, _, _ in CARDS]
    assert any(n.startswith("pricing.md") for n in names), names
    assert any(n.startswith("deploy.md") for n in names), names


def worker_config(tmp_path: Path, card: str, section: dict[str, Any], length: str) -> Path:
    """A config file with the docs' own `section`, its files put where it says they are."""
    (tmp_path / "rate-card.yaml").write_text(card, encoding="utf-8")
    config: dict[str, Any] = {key: dict(value) for key, value in section.items()
                              if key in ("org", "periods", "pricing")}
    config["pricing"] = {"rate_card_file": str(tmp_path / "rate-card.yaml")}
    config["periods"] = {**config.get("periods", {}), "length": length}
    config["sysdig"] = {"token": "docs-example-token"}
    keys = config.get("org", {}).get("keys", {})
    csv = fenced("pricing.md", "csv")[0]
    for key, rule in keys.items():
        if rule.get("allowed_values_file"):
            path = tmp_path / f"{key}.csv"
            path.write_text(csv, encoding="utf-8")
            keys[key] = {**rule, "allowed_values_file": str(path)}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize(("name", "card", "section"), CARDS, ids=[c[0] for c in CARDS])
def test_every_docs_rate_card_starts_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, card: str, section: dict[str, Any], length: str,
) -> None:
    for var in [v for v in __import__("os").environ if v.startswith("CHARGEBACK_")]:
        monkeypatch.delenv(var)
    path = worker_config(tmp_path, card, section, length)
    cfg = load_config(path, environ={})
    pipeline = build_pipeline(cfg, FakeClock(parse_time("2026-11-01T00:00:00Z")))
    assert pipeline.pricer is not None, name
    assert main(["check-config", "--config.file", str(path)]) == 0, capsys.readouterr().err
