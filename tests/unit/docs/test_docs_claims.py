"""Claims of the operator docs that the code must keep true: every configuration key in the key
tables exists with the documented default, and every `--flag` a page names is a real flag."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import build_parser
from exporter.config import Config
from exporter.periods import format_duration
from tests.rigs.paths import ROOT

DOCS = ROOT / "docs"


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
    """The default of a key; below an optional section that is off by default (None, e.g.
    `kafka.schema_registry`), the default its fields take once the section is given."""
    from pydantic import BaseModel

    model: Any = type(cfg)
    for part in dotted.split("."):
        if cfg is None:
            return model.model_fields[part].default
        field = type(cfg).model_fields[part]  # KeyError: a key that does not exist
        nested = [a for a in getattr(field.annotation, "__args__", ())
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        model = nested[0] if nested else None
        cfg = getattr(cfg, part)
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


# ---------------------------------------------------------------------------------------------
# Claims checked mechanically on every page: commands and their flags, metric and alert names,
# configuration keys and variables, repository paths and links, make targets, chart values.

ROOT = DOCS.parent
ALL_PAGES = tuple(
    sorted(
        [ROOT / "README.md", ROOT / "schemas" / "README.md",
         ROOT / "helm" / "chargeback-exporter" / "README.md"]
        + [p for p in DOCS.glob("*.md") if p.name != "benchmarks.md"]  # rewritten separately
        + list((DOCS / "adr").glob("*.md"))
    )
)
PAGE_IDS = [str(p.relative_to(ROOT)) for p in ALL_PAGES]


def code_text(page: Path) -> list[str]:
    """The page's code: every inline code span and every line of a fenced block, with the
    lines a trailing backslash continues joined."""
    spans: list[str] = []
    fenced = False
    pending = ""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            spans.append(pending + line)
            pending = ""
        else:
            spans.extend(re.findall(r"`([^`]+)`", line))
    return spans


def command_flags() -> dict[str, set[str]]:
    """Each subcommand (`run`, `export focus`, `dashboard install`) and its flags."""
    out: dict[str, set[str]] = {}
    subparsers = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    for name, parser in subparsers.choices.items():
        out[name] = {o for a in parser._actions for o in a.option_strings}
        for action in parser._actions:
            if getattr(action, "choices", None) and not action.option_strings:
                for nested_name, nested in action.choices.items():
                    out[f"{name} {nested_name}"] = {
                        o for a in nested._actions for o in a.option_strings}
    return out


COMMAND = re.compile(r"chargeback-exporter\s+([a-z][a-z-]*)(?:\s+([a-z][a-z-]*))?")


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_command_a_page_shows_exists_with_its_flags(page: Path) -> None:
    commands = command_flags()
    wrong = []
    for span in code_text(page):
        # A shell pipe ends one command; `|` inside `[a | b]` and `a\|b` does not.
        for segment in re.split(r"(?<!\\)\|\s+(?=[a-z])", span):
            m = COMMAND.search(segment)
            if not m:
                continue
            name = m.group(1)
            if f"{name} {m.group(2)}" in commands:
                name = f"{name} {m.group(2)}"
            if name not in commands:
                wrong.append(f"no subcommand {name!r}: {segment.strip()}")
                continue
            rest = segment[m.end():]
            if ": error:" in rest or ": interrupted" in rest:
                continue  # a quoted error line, not an invocation
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9.-]*)", rest):
                if flag not in commands[name] | {"--help"}:
                    wrong.append(f"{name} has no {flag}: {segment.strip()}")
    assert not wrong, wrong


# Flags the pages show for other tools, in spans that do not name the tool.
OTHER_TOOLS_FLAGS = {
    "--set-file",  # helm
    "--rebuild-base", "--oci-archive",  # scripts/build-image.sh
    "--strict",  # helm lint --strict, mypy --strict
    "--no-deps",  # pip
}


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_flag_a_page_names_alone_exists(page: Path) -> None:
    """A span that starts with a flag names a flag of the exporter (flags shown inside a
    command line are checked against that command above)."""
    every = set().union(*command_flags().values())
    campaign = (ROOT / "scripts" / "crash-campaign.py").read_text(encoding="utf-8")
    named = {m.group(1) for span in code_text(page)
             if (m := re.match(r"(--[a-z][a-z0-9.-]*)", span.strip()))}
    others = OTHER_TOOLS_FLAGS | {f for f in named if f'"{f}"' in campaign}
    assert named <= every | others, sorted(named - every - others)


def metric_samples() -> dict[str, set[str]]:
    """Every sample name the exporter exposes, with its label names."""
    from prometheus_client import CollectorRegistry

    from exporter.metrics import Metrics

    out: dict[str, set[str]] = {}
    for family in Metrics(CollectorRegistry()).registry.collect():
        names = {family.name}
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        metric = Metrics(CollectorRegistry())
        labels = set(next(c for c in vars(metric).values()
                          if getattr(c, "_name", None) == family.name)._labelnames)
        if family.type == "histogram":
            labels.add("le")
        for n in names:
            out[n] = labels
    return out


# Words of the `chargeback_` prefix that are not metrics.
NOT_METRICS = {"chargeback_simulator"}  # the simulator's Python package


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_metric_a_page_names_exists_with_its_labels(page: Path) -> None:
    samples = metric_samples()
    text = page.read_text(encoding="utf-8")
    wrong = []
    for m in re.finditer(r"(?<![\w.])(chargeback_[a-z_]+)(\{([^}]*)\})?", text):
        name = m.group(1)
        if name in NOT_METRICS:
            continue
        if name not in samples:
            wrong.append(f"no metric {name}")
            continue
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=|,|$)", m.group(3) or ""):
            if label not in samples[name]:
                wrong.append(f"{name} has no label {label!r}")
    assert not wrong, wrong


def test_every_alert_a_page_names_exists() -> None:
    rules = (ROOT / "helm" / "chargeback-exporter" / "templates" / "prometheusrule.yaml")
    alerts = set(re.findall(r"alert: (\w+)", rules.read_text(encoding="utf-8")))
    assert len(alerts) >= 6
    for page in ALL_PAGES:
        named = set(re.findall(r"\b(Chargeback[A-Z]\w+)", page.read_text(encoding="utf-8")))
        assert named <= alerts, (page.name, sorted(named - alerts))


def config_key_exists(dotted: str) -> bool:
    """Whether `a.b.c` is a key of the configuration; below a mapping any key is accepted."""
    from pydantic import BaseModel

    model: Any = Config
    for part in dotted.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return True  # inside a mapping (org.keys.<key>, kafka.topic_configs.<role>, extra)
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        nested = [a for a in getattr(annotation, "__args__", (annotation,))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            model = nested[0]
        elif getattr(annotation, "__origin__", None) is dict:
            values = annotation.__args__[1]  # type: ignore[union-attr]
            model = values if isinstance(values, type) and issubclass(values, BaseModel) else dict
        else:
            model = None
    return True


SECTIONS = set(Config.model_fields)
FILE_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".json", ".avsc", ".csv", ".sh", ".toml", ".txt")
# Backticked dotted words that start like a section but are not configuration keys.
NOT_KEYS = {
    # Values of the chart's backfill Job (helm/chargeback-exporter/values.yaml).
    "backfill.enabled", "backfill.from", "backfill.to", "backfill.resources",
    "backfill.annotations",
    "kafka.xyz",  # a misspelt key, quoted in an error message
    "org.opencontainers.image.base.name",  # an OCI image annotation
}
# Variables the pages name as examples of what the exporter rejects.
NOT_VARIABLES = {"CHARGEBACK_KAFKA__BOOTSTRAP_SERVER"}


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_config_key_a_page_names_exists(page: Path) -> None:
    wrong = []
    for span in code_text(page):
        if "/" in span and " " not in span:
            continue  # a path or URL
        for key in re.findall(r"(?<![\w./-])([a-z_]+(?:\.[a-z_]+)+)(?![\w/(-])", span):
            # The chart's `config.<key>` values are the exporter's keys.
            key = key.removeprefix("config.") if page.parent.name == "chargeback-exporter" \
                or "helm" in span or span.startswith("config.") else key
            if key.split(".")[0] not in SECTIONS or key.endswith(FILE_SUFFIXES) or key in NOT_KEYS:
                continue
            if not config_key_exists(key):
                wrong.append(key)
        for var in re.findall(r"\bCHARGEBACK_([A-Z][A-Z0-9_]*)", span):
            if var == "CONFIG_FILE" or var.endswith("__") or "CHARGEBACK_" + var in NOT_VARIABLES:
                continue  # CHARGEBACK_SYSDIG__* names a prefix
            if "__" in var and not config_key_exists(".".join(var.lower().split("__"))):
                wrong.append("CHARGEBACK_" + var)
    assert not wrong, sorted(set(wrong))


TOP = ("exporter/", "schemas/", "scripts/", "docs/", "helm/", "tests/", "simulator/",
       "examples/", "bench/", "requirements/")
REPO_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, TOP)) + r")[\w./*-]*)")


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_repository_path_and_link_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = []
    for span in code_text(page):
        for path in REPO_PATH.findall(span):
            path = path.rstrip(".")
            if "*" in path:
                if not list(ROOT.glob(path)):
                    missing.append(path)
            elif not (ROOT / path).exists():
                missing.append(path)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if path and not (page.parent / path).exists():
            missing.append(target)
    assert not missing, sorted(set(missing))


def heading_anchors(page: Path) -> set[str]:
    anchors = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_link_anchor_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = []
    for target in re.findall(r"\]\(([^)\s]*#[^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, anchor = target.split("#", 1)
        linked = (page.parent / path) if path else page
        if linked.suffix == ".md" and linked.exists() and anchor not in heading_anchors(linked):
            missing.append(target)
    assert not missing, missing


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_make_target_a_page_names_exists(page: Path) -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"),
                             re.MULTILINE))
    named = {t for span in code_text(page) for t in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", span)}
    assert named <= targets, sorted(named - targets)


def test_every_value_of_the_chart_table_exists() -> None:
    import yaml

    chart = ROOT / "helm" / "chargeback-exporter"
    values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8"))
    rows = 0
    for line in (chart / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.fullmatch(r"`[\w.]+`", cells[0]):
            continue
        rows += 1
        node: Any = values
        for part in cells[0].strip("`").split("."):
            assert isinstance(node, dict) and part in node, cells[0]
            node = node[part]
        default = cells[2].strip("`")
        if default.startswith("see values.yaml") or cells[1] == "object":
            continue
        assert json.dumps(node) == default, (cells[0], default, node)
    assert rows >= 60



# Dotted names that are not Python names of the current code.
NOT_PYTHON = {
    "exporter.frozen.fast_init",  # removed; ADR 0005 records the decision that added it
}


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_every_python_name_a_page_gives_resolves(page: Path) -> None:
    """`exporter.org`, `exporter.pricing.quantize_quantity`, `chargeback_simulator.hostile.Hiding`:
    the longest importable module, then attributes."""
    import importlib

    wrong = []
    for span in code_text(page):
        for dotted in re.findall(r"(?<![\w./-])((?:exporter|chargeback_simulator)(?:\.\w+)+)", span):
            if dotted in NOT_PYTHON or dotted.endswith(FILE_SUFFIXES):
                continue
            parts = dotted.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj: Any = importlib.import_module(".".join(parts[:cut]))
                except ModuleNotFoundError:
                    continue
                break
            else:
                wrong.append(dotted)
                continue
            for attr in parts[cut:]:
                if not hasattr(obj, attr):
                    wrong.append(dotted)
                    break
                obj = getattr(obj, attr)
    assert not wrong, sorted(set(wrong))
