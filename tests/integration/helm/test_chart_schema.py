"""`values.schema.json` rejects bad values before anything is rendered, naming the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.helm.chartlib import Helm

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("replicas", {"replicaCount": 2}, "Additional property replicaCount is not allowed"),
    ("unknown-top-level", {"ingress": {"enabled": True}}, "Additional property ingress is not allowed"),
    (
        "pull-policy",
        {"image": {"pullPolicy": "Sometimes"}},
        "image.pullPolicy must be one of the following",
    ),
    ("port-type", {"containerPort": "9847"}, "containerPort: Invalid type. Expected: integer"),
    ("privileged-port", {"containerPort": 80}, "containerPort: Must be greater than or equal to 1024"),
    (
        "config-section",
        {"config": {"kafak": {"bootstrap_servers": "kafka:9092"}}},
        "config: Additional property kafak is not allowed",
    ),
    (
        "secret-number",
        {"secret": {"sysdigToken": 12345}},
        "secret.sysdigToken: Invalid type. Expected: string",
    ),
    (
        "secret-item",
        {"secret": {"existingSecret": "creds", "existingSecretItems": ["sysdigTokn"]}},
        "secret.existingSecretItems.0 must be one of the following",
    ),
    (
        "backfill-time",
        {"backfill": {"enabled": True, "from": "yesterday", "to": "2026-11-01T00:00:00Z"}},
        "backfill.from: Does not match pattern",
    ),
    ("service-type", {"service": {"type": "ExternalName"}}, "service.type must be one of"),
    ("monitor-typo", {"serviceMonitor": {"enable": True}}, "Additional property enable is not allowed"),
    ("rule-typo", {"prometheusRule": {"enable": True}}, "Additional property enable is not allowed"),
    (
        "alert-typo",
        {"prometheusRule": {"alerts": {"periodHold": {"enabled": False}}}},
        "Additional property periodHold is not allowed",
    ),
    (
        "alert-for",
        {"prometheusRule": {"alerts": {"exportLag": {"for": "15 minutes"}}}},
        "prometheusRule.alerts.exportLag.for: Does not match pattern",
    ),
    (
        "alert-threshold",
        {"prometheusRule": {"alerts": {"exportLag": {"thresholdSeconds": "2h"}}}},
        "prometheusRule.alerts.exportLag.thresholdSeconds: Invalid type. Expected: integer",
    ),
    ("file-name", {"files": {"config.yaml": "x: 1"}}, "files"),
    ("digest", {"image": {"digest": "latest"}}, "image.digest: Does not match pattern"),
]


@pytest.mark.parametrize(
    ("values", "message"),
    [(v, m) for _, v, m in BAD_VALUES],
    ids=[name for name, _, _ in BAD_VALUES],
)
def test_schema_rejects(helm: Helm, default_values: Path, values: dict[str, Any], message: str) -> None:
    lint = helm.lint(default_values, values=values)
    assert lint.returncode != 0
    assert message in lint.output, lint.output
    template = helm.template(default_values, values=values)
    assert template.returncode != 0
    assert message in template.stderr, template.stderr
    assert "values don't meet the specifications of the schema" in template.stderr


def test_schema_accepts_the_defaults_plus_a_minimum(helm: Helm, default_values: Path) -> None:
    """The rejections above are about the bad value, not about the baseline."""
    assert helm.lint(default_values).returncode == 0
    assert helm.template(default_values, values={"image": {"pullPolicy": "Always"}}).returncode == 0
