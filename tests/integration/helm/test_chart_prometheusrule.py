"""The optional PrometheusRule: off by default, valid for promtool, and its alerts fire when they should.

The rendered rule's `spec` is what prometheus-operator hands to Prometheus as a rules file, so it
is written out as one and checked by `promtool check rules`, then exercised by `promtool test
rules` on synthetic series (Debian's promtool, installed by scripts/test-infra.sh).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.integration.helm.chartlib import CHART, NAMESPACE, REPO, Helm, Result

VALUES = CHART / "ci" / "prometheusrule-values.yaml"
ALERTS = {
    "ChargebackPeriodHeld", "ChargebackExportLagging", "ChargebackSysdigErrors",
    "ChargebackKafkaErrors", "ChargebackClusterMissing", "ChargebackExporterDown",
}
# The series of one scraped exporter, as the ServiceMonitor labels them.
TARGET = f'job="chargeback-exporter",namespace="{NAMESPACE}",instance="10.0.0.7:9847",pod="p"'


def rule(helm: Helm, values: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = helm.render(VALUES, values=values).one("PrometheusRule")
    return doc


def alerts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}


def write_rules(doc: dict[str, Any], directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(doc["spec"], sort_keys=False), encoding="utf-8")
    return path


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_off_by_default(helm: Helm, default_values: Path) -> None:
    assert helm.render(default_values).all("PrometheusRule") == []


def test_rule_metadata_and_alerts(helm: Helm) -> None:
    doc = rule(helm)
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["metadata"]["namespace"] == NAMESPACE
    labels = doc["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack"  # from the ci values
    assert labels["app.kubernetes.io/name"] == "chargeback-exporter"
    assert set(alerts(doc)) == ALERTS
    for name, a in alerts(doc).items():
        assert a["labels"]["severity"] in ("warning", "critical"), name
        assert a["labels"]["team"] == "finops", name  # additionalAlertLabels
        assert a["annotations"]["summary"] and a["annotations"]["description"], name
        # Every expression reads the exporter's own series only.
        assert f'job="chargeback-exporter",namespace="{NAMESPACE}"' in a["expr"], name


def test_every_alert_names_its_runbook_section(helm: Helm) -> None:
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", operations, flags=re.MULTILINE)}
    for values, key in ((None, "runbook"),
                        ({"prometheusRule": {"runbookBaseUrl": "https://docs.example/ops.md"}},
                         "runbook_url")):
        for name, a in alerts(rule(helm, values)).items():
            link = a["annotations"][key]
            base, _, section = link.partition("#")
            assert base == ("docs/operations.md" if key == "runbook"
                            else "https://docs.example/ops.md"), link
            assert section == name.lower() and section in anchors, (name, link)


def test_thresholds_durations_and_labels_are_values(helm: Helm) -> None:
    doc = rule(helm, {"prometheusRule": {
        "selector": 'job="billing",cluster="ops-1"',
        "labels": {"role": "alert-rules"},
        "additionalAlertLabels": {"team": "payments"},
        "alerts": {
            "periodHeld": {"maxAgeSeconds": 5400, "for": "20m", "labels": {"severity": "critical"}},
            "exportLag": {"thresholdSeconds": 100000, "for": "1h"},
            "sysdigErrors": {"window": "2h", "threshold": 3, "for": "3h"},
            "kafkaErrors": {"window": "30m", "threshold": 1, "for": "45m"},
            "clusterMissing": {"for": "5m", "labels": {"page": "yes"}},
            "exporterDown": {"enabled": False},
        },
    }})
    a = alerts(doc)
    assert set(a) == ALERTS - {"ChargebackExporterDown"}
    assert doc["metadata"]["labels"]["role"] == "alert-rules"
    assert a["ChargebackPeriodHeld"]["for"] == "20m"
    assert "> 5400" in a["ChargebackPeriodHeld"]["expr"]
    assert a["ChargebackPeriodHeld"]["labels"] == {"severity": "critical", "team": "payments"}
    assert a["ChargebackExportLagging"]["for"] == "1h"
    assert "> 100000" in a["ChargebackExportLagging"]["expr"]
    assert "[2h]" in a["ChargebackSysdigErrors"]["expr"] and "> 3" in a["ChargebackSysdigErrors"]["expr"]
    assert a["ChargebackSysdigErrors"]["for"] == "3h"
    assert "[30m]" in a["ChargebackKafkaErrors"]["expr"] and "> 1" in a["ChargebackKafkaErrors"]["expr"]
    assert a["ChargebackClusterMissing"]["labels"] == {"severity": "critical", "page": "yes",
                                                       "team": "payments"}
    for name, r in a.items():
        assert 'job="billing",cluster="ops-1"' in r["expr"], name
        assert f'namespace="{NAMESPACE}"' not in r["expr"], name


def test_promtool_accepts_the_rendered_rules(
    helm: Helm, promtool: Callable[..., Result], tmp_path: Path
) -> None:
    for values in (None, {"prometheusRule": {"alerts": {"exporterDown": {"enabled": False}}}}):
        path = write_rules(rule(helm, values), tmp_path)
        res = promtool("check", "rules", str(path))
        assert res.returncode == 0, res.output
        assert f"SUCCESS: {len(ALERTS) - (values is not None)} rules found" in res.output, res.output


def test_promtool_rejects_a_broken_rule(
    helm: Helm, promtool: Callable[..., Result], tmp_path: Path
) -> None:
    """The check is real: a selector that is not PromQL fails it."""
    path = write_rules(rule(helm, {"prometheusRule": {"selector": 'job="x",'}}), tmp_path)
    assert promtool("check", "rules", str(path)).returncode == 0  # a trailing comma is fine
    path = write_rules(rule(helm, {"prometheusRule": {"selector": 'job=="x"'}}), tmp_path)
    res = promtool("check", "rules", str(path))
    assert res.returncode != 0 and "parse error" in res.output, res.output


def unit_tests(tmp_path: Path, rules: Path, cases: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m",
                                    "tests": cases}, sort_keys=False), encoding="utf-8")
    return path


# promtool unit test pieces: a case is series at an interval and the alerts expected over time.

def case(interval: str, series: list[dict[str, str]], *expected: dict[str, Any]) -> dict[str, Any]:
    return {"interval": interval, "input_series": series, "alert_rule_test": list(expected)}


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    """A series of the scraped exporter (`TARGET`), with `labels` added."""
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{TARGET}{extra}}}", "values": values}


def quiet(at: str, alert: str) -> dict[str, Any]:
    """`alert` is not firing at `at`."""
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def firing(at: str, alert: str, labels: dict[str, str], summary: str, description: str
           ) -> dict[str, Any]:
    """`alert` fires at `at` with these labels and annotations (the runbook is its section)."""
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "description": description,
                            "runbook": f"docs/operations.md#{alert.lower()}"},
    }]}


def test_alerts_fire_on_synthetic_series(
    helm: Helm, promtool: Callable[..., Result], tmp_path: Path
) -> None:
    rules = write_rules(rule(helm), tmp_path)
    target = {"job": "chargeback-exporter", "namespace": NAMESPACE, "instance": "10.0.0.7:9847",
              "pod": "p"}
    # Labels of an alert that aggregates over instances (and pods).
    service = {"job": "chargeback-exporter", "namespace": NAMESPACE}
    common = {"team": "finops"}
    down_summary = "Chargeback exporter is down or not scraped"
    down_description = (f"Prometheus has not scraped the chargeback exporter (chargeback-exporter "
                        f"in {NAMESPACE}) for 10m: periods are not exported and the other "
                        "chargeback alerts cannot fire.")
    cases = [
        # A period held for incomplete data: its age grows by a minute a minute from 5 min.
        # Defaults: older than 3600 s for 10 min, so pending from 56 m and firing from 66 m.
        case("1m", [series("chargeback_period_held", "0 1x120", reason="incomplete"),
                    series("chargeback_period_held", "0x120", reason="unavailable"),
                    series("chargeback_held_period_age_seconds", "0 300+60x120")],
             quiet("60m", "ChargebackPeriodHeld"),
             firing("70m", "ChargebackPeriodHeld",
                    {**target, **common, "severity": "warning", "reason": "incomplete"},
                    "Chargeback period held for 1h 14m 0s (reason: incomplete)",
                    "The period that ended 1h 14m 0s ago is held for retry (reason: incomplete): "
                    "it is not published, and no later period is until it is. The log line "
                    "\"period held for retry\" has the error.")),
        # Released after one retry: the age drops back to 0 before the alert fires.
        case("1m", [series("chargeback_period_held", "1x60 0x60", reason="unavailable"),
                    series("chargeback_held_period_age_seconds", "300+60x60 0x60")],
             quiet("65m", "ChargebackPeriodHeld"),
             quiet("100m", "ChargebackPeriodHeld")),
        # prod-eu had no usage series in the last measured period (and keeps having none).
        case("1m", [series("chargeback_cluster_missing", "0 0 1x60", cluster="prod-eu", what="usage"),
                    series("chargeback_cluster_missing", "0x62", cluster="prod-eu", what="requests"),
                    series("chargeback_cluster_missing", "0x62", cluster="prod-us", what="usage")],
             quiet("10m", "ChargebackClusterMissing"),
             firing("20m", "ChargebackClusterMissing",
                    {**target, **common, "severity": "critical", "cluster": "prod-eu",
                     "what": "usage"},
                    "Cluster prod-eu is missing from Sysdig (no usage series)",
                    "The exporter expects cluster prod-eu but Sysdig returned no usage series for "
                    "it in the last measured period, so that period is held. Restore the "
                    "cluster's Sysdig agent, or retire the cluster (sysdig.retired_clusters) if "
                    "it is gone for good; for claims, see the runbook.")),
        # The checkpoint falls behind: no period committed for over 2 h 15 min.
        case("5m", [series("chargeback_export_lag_seconds", "300+300x40")],
             quiet("140m", "ChargebackExportLagging"),
             firing("160m", "ChargebackExportLagging", {**target, **common, "severity": "critical"},
                    "Chargeback export lags 2h 45m 0s behind",
                    "The last period committed to Kafka ended 2h 45m 0s ago (alert above 8100 s). "
                    "Periods are held or the exporter cannot reach Sysdig or Kafka.")),
        # Sysdig answers 503 in two runs an hour apart: sustained, so it fires; Kafka: one
        # aborted transaction only, which stays quiet.
        case("5m", [series("chargeback_sysdig_errors_total", "0 4 4 4 4 4 4 4 4 4 4 4 8x30",
                           status="503"),
                    series("chargeback_kafka_delivery_errors_total", "0x40"),
                    series("chargeback_transaction_aborts_total", "0 0 1x40")],
             quiet("60m", "ChargebackSysdigErrors"),
             firing("110m", "ChargebackSysdigErrors",
                    {**service, **common, "severity": "warning", "status": "503"},
                    "Sysdig answers the chargeback exporter with errors (status 503)",
                    "Sysdig requests have failed with status 503 in every 1h window for 90m. "
                    "Periods are held until Sysdig answers."),
             quiet("110m", "ChargebackKafkaErrors")),
        # Transactions abort in two runs an hour apart: sustained.
        case("5m", [series("chargeback_kafka_delivery_errors_total", "0x40"),
                    series("chargeback_transaction_aborts_total", "0 1 1 1 1 1 1 1 1 1 1 1 2x30")],
             quiet("60m", "ChargebackKafkaErrors"),
             firing("110m", "ChargebackKafkaErrors", {**service, **common, "severity": "critical"},
                    "Kafka deliveries fail or transactions abort in the chargeback exporter",
                    "Billing records failed delivery or transactions were aborted in every 1h "
                    "window for 90m. Aborted periods are retried, so nothing is published twice, "
                    "but no period is published while it lasts.")),
        # The target is down, then gone from service discovery altogether.
        case("1m", [series("up", "1 0x20 _x40")],
             quiet("5m", "ChargebackExporterDown"),
             firing("15m", "ChargebackExporterDown", {**target, **common, "severity": "critical"},
                    down_summary, down_description),
             firing("45m", "ChargebackExporterDown", {**service, **common, "severity": "critical"},
                    down_summary, down_description)),
    ]
    res = promtool("test", "rules", str(unit_tests(tmp_path, rules, cases)), cwd=tmp_path)
    assert res.returncode == 0, res.output
    assert "SUCCESS" in res.output, res.output
