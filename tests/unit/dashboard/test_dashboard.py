"""The dashboard JSON: shipped file, Sysdig v3 structure, PromQL validity, CLI errors."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from exporter.cli import main
from exporter.config import OrgConfig, OrgKeyConfig, load_config
from exporter.dashboard import (
    DEFAULT_NAME,
    OrgSources,
    Queries,
    build_dashboard,
    dump,
    panels,
    shipped_text,
    sysdig_variables,
)
from exporter.queries import CPU_USED, MEM_USED, REQUESTS
from exporter.wiring import build_dashboard_installer
from tests.rigs.paths import ROOT

SHIPPED = ROOT / "exporter" / "data" / "dashboard.json"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHARGEBACK_CONFIG_FILE", "CHARGEBACK_SYSDIG__TOKEN", "CHARGEBACK_SYSDIG__URL"):
        monkeypatch.delenv(name, raising=False)


def all_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["name"], q["query"]) for p in dashboard["dashboard"]["panels"]
            for q in p["advancedQueries"]]


def test_shipped_file_is_the_generated_dashboard() -> None:
    # Regenerate with: python -m exporter.dashboard > exporter/data/dashboard.json
    assert SHIPPED.read_text(encoding="utf-8") == dump(build_dashboard())
    assert shipped_text() == SHIPPED.read_text(encoding="utf-8")


def test_v3_structure_and_layout() -> None:
    doc = json.loads(SHIPPED.read_text())
    assert doc["version"] == "v3"
    board = doc["dashboard"]
    assert board["schema"] == 3
    assert board["name"] == DEFAULT_NAME
    ids = [p["id"] for p in board["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    assert sorted(item["panelId"] for item in board["layout"]) == ids
    for panel in board["panels"]:
        assert panel["type"] in ("advancedTimechart", "advancedNumber")
        assert panel["name"] and panel["advancedQueries"]
        for q in panel["advancedQueries"]:
            assert q["enabled"] is True
            assert set(q["format"]) >= {"unit", "inputFormat", "displayFormat", "yAxis"}
            assert set(q["displayInfo"]) == {"displayName", "timeSeriesDisplayNameTemplate", "type"}


@pytest.mark.parametrize("org", [None, OrgConfig(keys={
    "costcenter": OrgKeyConfig(workload_labels=("cc",)), "team": OrgKeyConfig(workload_labels=()),
})], ids=["default", "fewer-keys"])
def test_layout_is_on_sysdigs_24_column_grid(org: OrgConfig | None) -> None:
    # Sysdig lays dashboards out on 24 columns (its Terraform provider rejects x + w > 24).
    layout = build_dashboard(org)["dashboard"]["layout"]
    cells: set[tuple[int, int]] = set()
    rows: dict[int, int] = {}
    for item in layout:
        assert set(item) == {"panelId", "x", "y", "w", "h"}
        assert all(isinstance(v, int) for v in item.values())
        assert item["x"] >= 0 and item["w"] >= 1 and item["h"] >= 1
        assert item["x"] + item["w"] <= 24, item
        area = {(x, y) for x in range(item["x"], item["x"] + item["w"])
                for y in range(item["y"], item["y"] + item["h"])}
        assert not cells & area, f"panel {item['panelId']} overlaps another"
        cells |= area
        rows[item["y"]] = rows.get(item["y"], 0) + item["w"]
    # Every row but the last spans the whole width (a 12-column layout would fill half of it).
    assert all(width == 24 for y, width in rows.items() if y != max(rows)), rows


def test_every_query_parses_and_uses_sysdig_metric_names() -> None:
    queries = all_queries(json.loads(SHIPPED.read_text()))
    assert len(queries) >= 28
    metric = re.compile(r"\b(sysdig_[a-z_]+|kube_pod_container_resource_[a-z]+)\b")
    for name, query in queries:
        promql_parser.parse(sysdig_variables(query, interval=600, range_=86400))  # syntax
        assert set(metric.findall(query)) <= {CPU_USED, MEM_USED, REQUESTS}, name
        assert "rate(" not in query, f"{name}: Sysdig's CPU metric is a gauge in cores"
        assert len(query) < 8000, f"{name}: query too long for a GET"


def test_no_query_assumes_a_resolution() -> None:
    # Sysdig serves 10 s to 1 day samples depending on age and picks each panel's interval from
    # the viewed range: every window is that interval (or the viewed range), none is fixed.
    durations = re.compile(r"\[([^\]]*)\]")
    for name, query in all_queries(json.loads(SHIPPED.read_text())):
        windows = set(durations.findall(query))
        assert windows, name
        assert windows <= {"$__interval", "$__range:$__interval"}, (name, windows)
        assert "last_over_time" not in query, name
        assert re.findall(r"\boffset\s+([0-9a-z]+)", query) == ["5s"] * query.count("offset"), name


def test_required_views_are_present() -> None:
    names = [p.name for p in panels(Queries(OrgSources.from_config()))]
    for expected in (
        "Chargeable core-hours per hour by costcenter",
        "Chargeable GiB-hours per hour by costcenter",
        "CPU consumption (cores used) by costcenter",
        "Chargeable core-hours per hour by businessunit",
        "Chargeable core-hours per hour by businessunit / department",
        "Chargeable core-hours per hour by department / team",
        "Chargeable core-hours per hour by team / namespace",
        "Top 20 workloads by chargeable core-hours per hour",
        "CPU efficiency (used / requested) by costcenter",
        "Memory efficiency (used / requested) by costcenter",
        "Unallocated share of core-hours (no costcenter) in the viewed range",
        "Chargeable core-hours in the viewed range",
        "Chargeable GiB-hours in the viewed range",
        "Unallocated share of chargeable CPU per org key",
    ):
        assert expected in names


def test_label_sources_follow_the_org_config() -> None:
    org = OrgConfig(keys={
        "costcenter": OrgKeyConfig(workload_labels=("cost-center",), aliases=("cc",),
                                   namespace_labels=()),
    })
    sources = OrgSources.from_config(org)
    assert sources.labels["costcenter"][:2] == (
        "kube_deployment_label_cost_center", "kube_statefulset_label_cost_center",
    )
    assert "kube_deployment_label_cc" in sources.labels["costcenter"]
    assert not any(s.startswith("kube_namespace_label") for s in sources.labels["costcenter"])
    assert sources.labels["team"][-1] == "kube_namespace_label_team"
    text = dump(build_dashboard(org))
    assert "kube_job_label_cost_center" in text
    assert "kube_namespace_label_costcenter" not in text
    for _, query in all_queries(build_dashboard(org)):
        promql_parser.parse(sysdig_variables(query, interval=60, range_=3600))


def test_precedence_workload_label_wins_over_namespace() -> None:
    info = Queries(OrgSources.from_config()).info(["costcenter"])
    # label_replace nests outward: the outermost (highest precedence) is the first workload kind.
    assert info.index("kube_namespace_label_costcenter") < info.index("kube_deployment_label_costcenter")
    assert info.rindex('"kube_deployment_label_costcenter"') > info.rindex('"kube_cronjob_label_costcenter"')


# --- CLI -------------------------------------------------------------------------------------


def test_export_prints_the_shipped_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "export"]) == 0
    assert capsys.readouterr().out == SHIPPED.read_text()


def test_export_with_config_and_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("org:\n  keys:\n    team:\n      workload_labels: [squad]\n")
    assert main(["dashboard", "export", "--config.file", str(cfg), "--name", "Billing"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dashboard"]["name"] == "Billing"
    assert "kube_deployment_label_squad" in json.dumps(doc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_install_without_token_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sysdig:\n  url: http://127.0.0.1:9\n")
    assert main(["dashboard", "install", "--config.file", str(cfg)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        "chargeback-exporter dashboard: error: sysdig.token: not set (use sysdig.token, "
        "sysdig.token_file or CHARGEBACK_SYSDIG__TOKEN)"
    ]


def test_install_unreachable_is_one_line_without_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port = _free_port()  # closed again: nothing listens there
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"sysdig:\n  url: http://127.0.0.1:{port}\n  token: s3cr3t-token\n")
    assert main(["dashboard", "install", "--config.file", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"chargeback-exporter dashboard: error: Sysdig http://127.0.0.1:{port} "
                           "(list dashboards): unreachable")
    assert "s3cr3t" not in err


def test_sdc_environment_cannot_override_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SDC_TOKEN", "from-env")
    monkeypatch.setenv("SDC_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SDC_SSL_VERIFY", "false")
    # A CA bundle from the environment is honoured on purpose (docs/sysdig.md); not this test's.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sysdig:\n  url: https://sysdig.example/\n  token: from-config\n")
    installer = build_dashboard_installer(load_config(cfg, environ={}))
    client = installer._client._client  # the SdMonitorClient inside SysdigClient
    assert client.url == "https://sysdig.example"
    assert client.token == "from-config"
    assert client.hdrs["Authorization"] == "Bearer from-config"
    assert client.ssl_verify is True
