"""Claims of the operator docs that the code must keep true: every configuration key in the key
tables exists with the documented default, and every `--flag` a page names is a real flag."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import build_parser
from exporter.config import Config
from exporter.periods import format_duration

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("operations.md", "deploy.md", "backfill.md", "reliability.md", "records.md")


def key_rows(page: str) -> list[tuple[list[str], str]]:
    """(keys, default cell) of each row of a `| key | default | meaning |` table."""
    rows = []
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and "." in cells[0]:
            keys = re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", cells[0])
            if keys:
                rows.append((keys, cells[1]))
    return rows


def lookup(cfg: Any, dotted: str) -> Any:
    """The default of a dotted key. Inside an optional section that is off by default (None),
    the field's default in the section's model."""
    model: Any = type(cfg)
    for part in dotted.split("."):
        field = model.model_fields[part]  # KeyError: a key that does not exist
        cfg = field.default if cfg is None else getattr(cfg, part)
        model = next((a for a in (field.annotation, *typing.get_args(field.annotation))
                      if isinstance(a, type) and hasattr(a, "model_fields")), None)
    return cfg


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_every_key_of_the_operations_table_exists_with_its_default() -> None:
    cfg = Config()
    rows = key_rows("operations.md")
    assert len(rows) >= 15
    for keys, default in rows:
        documented = re.findall(r"`([^`]*)`", default)
        for i, key in enumerate(keys):
            value = lookup(cfg, key)
            if not documented or default.startswith("none"):
                continue
            want = documented[i] if len(documented) == len(keys) else documented[0]
            durations = {"periods.length", "periods.settle_delay", "periods.resolution",
                         "worker.shutdown_grace", "kafka.connect_timeout"}
            got = format_duration(value) if key in durations else shown(value)
            assert got == want, f"{key}: documented {want}, default {got}"


@pytest.mark.parametrize("page", PAGES)
def test_every_flag_a_page_names_exists(page: str) -> None:
    flags = set()
    for action in build_parser()._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        for sub in action._actions:
            flags.update(sub.option_strings)
            if getattr(sub, "choices", None) and not sub.option_strings:
                for nested in sub.choices.values():
                    flags.update(o for a in nested._actions for o in a.option_strings)
    text = (DOCS / page).read_text(encoding="utf-8")
    named = set(re.findall(r"`(--[a-z][a-z0-9.-]*)", text))
    # Flags of the other tools the pages show: helm, the crash campaign's and the image build's
    # scripts.
    scripts = DOCS.parent / "scripts"
    tools = (scripts / "crash-campaign.py").read_text(encoding="utf-8") + \
        (scripts / "build-image.sh").read_text(encoding="utf-8")
    others = {"--set-file"} | {f for f in named if f'"{f}"' in tools or f"{f})" in tools}
    assert named <= flags | others, sorted(named - flags - others)
