"""The chart lints, renders valid Kubernetes 1.30 manifests, and keeps its operational promises.

Every `ci/*-values.yaml` is linted with `helm lint --strict`, rendered with `helm template`, and
each rendered manifest is validated offline by `kubernetes-validate --strict` against the
Kubernetes 1.30 OpenAPI schemas. The remaining tests pin the properties a billing emitter relies
on: one pod, Recreate, hardened security contexts, probes, labels, Secret handling, Job gating.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import __version__
from tests.integration.helm.chartlib import CHART, CI_VALUES, NAMESPACE, RELEASE, REPO, Helm, Result

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
FEATURES = {"default", "existing-secret", "servicemonitor", "prometheusrule", "backfill", "sasl-ssl",
            "securitycontext", "shards"}
# prometheus-operator CRDs: kubernetes-validate has no schema for them (their own tests check them).
CRDS = {"ServiceMonitor", "PrometheusRule"}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(obj)["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def test_ci_values_cover_every_feature() -> None:
    assert set(CI_IDS) >= FEATURES, f"missing ci values files: {sorted(FEATURES - set(CI_IDS))}"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_lint_strict(helm: Helm, values_file: Path) -> None:
    res = helm.lint(values_file)
    assert res.returncode == 0, res.output
    assert "[ERROR]" not in res.output and "[WARNING]" not in res.output, res.output


@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_rendered_manifests_are_valid_kubernetes_1_30(
    helm: Helm, values_file: Path, kube_validate: Callable[[Path], Result], tmp_path: Path
) -> None:
    rendered = helm.render(values_file)
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.text, encoding="utf-8")
    res = kube_validate(out)
    assert res.returncode == 0, res.output
    # Only the prometheus-operator CRDs may lack a built-in schema; anything else must be checked.
    unchecked = [
        line for line in res.output.splitlines()
        if "Couldn't find schema" in line and not any(kind in line for kind in CRDS)
    ]
    assert not unchecked, unchecked
    passed = res.output.count(" passed for resource ")
    assert passed == len([d for d in rendered.docs if d["kind"] not in CRDS])


def test_kubernetes_validate_catches_a_typo(
    helm: Helm, default_values: Path, kube_validate: Callable[[Path], Result], tmp_path: Path
) -> None:
    """The validator really is strict: a misspelt field in a rendered manifest fails it."""
    rendered = helm.render(default_values)
    broken = rendered.text.replace("imagePullPolicy:", "imagePulPolicy:", 1)
    assert broken != rendered.text
    out = tmp_path / "broken.yaml"
    out.write_text(broken, encoding="utf-8")
    res = kube_validate(out)
    assert res.returncode != 0
    assert "imagePulPolicy" in res.output


def test_chart_metadata(helm: Helm) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__, "Chart appVersion must follow exporter.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert "## Upgrading" in readme
    assert (CHART / ".helmignore").is_file()


def test_readme_documents_every_value() -> None:
    """Each value is in the README table: sections the schema closes are listed key by key."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    expected: list[str] = []
    for key, prop in schema["properties"].items():
        closed = prop.get("additionalProperties") is False and key != "config"
        expected += [f"{key}.{child}" for child in prop["properties"]] if closed else [key]
    assert set(values) <= set(schema["properties"]), "values.yaml has keys the schema lacks"
    missing = [k for k in expected if f"| `{k}` |" not in readme]
    assert not missing, f"values missing from the README's table: {missing}"


@pytest.mark.parametrize(("on_defaults", "values", "message"), [
    pytest.param(False, None, "config.kafka.bootstrap_servers is required",
                 id="bare-chart-names-the-missing-value"),
    pytest.param(False, {"config": {"kafka": {"bootstrap_servers": "kafka:9092"}}},
                 "no Sysdig token", id="sysdig-token-is-required"),
    pytest.param(True, {"config": {"sysdig": {"token": "leak"}}},
                 "config.sysdig.token: put the Sysdig token in secret.sysdigToken",
                 id="inline-secret-in-config"),
    pytest.param(True, {"backfill": {"enabled": True}},
                 "backfill.enabled needs backfill.from and backfill.to", id="backfill-needs-a-range"),
])
def test_the_chart_refuses_bad_values_with_a_message(
    helm: Helm, default_values: Path, on_defaults: bool, values: dict[str, Any] | None, message: str
) -> None:
    res = helm.template(*([default_values] if on_defaults else []), values=values)
    assert res.returncode != 0
    assert message in res.stderr


def test_single_replica_with_recreate(helm: Helm, default_values: Path) -> None:
    dep = helm.render(default_values).one("Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


def test_security_contexts_are_hardened(helm: Helm, default_values: Path) -> None:
    dep = helm.render(default_values).one("Deployment")
    pod = pod_spec(dep)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    ctr = container(dep)["securityContext"]
    assert ctr["allowPrivilegeEscalation"] is False
    assert ctr["readOnlyRootFilesystem"] is True
    assert ctr["capabilities"] == {"drop": ["ALL"]}
    assert ctr["runAsNonRoot"] is True
    assert ctr["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs somewhere writable for Python and librdkafka temp files.
    mounts = {m["mountPath"]: m["name"] for m in container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod_spec(dep)["automountServiceAccountToken"] is False


def test_default_resources_fit_the_documented_default_fleet(helm: Helm,
                                                            default_values: Path) -> None:
    """docs/deploy.md, "Sizing": up to 50 000 pods, 250m and 256Mi requested, 384Mi limit, and
    no CPU limit."""
    dep = helm.render(default_values).one("Deployment")
    assert container(dep)["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "384Mi"}}
    sizing = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "| 50 000 pods (the chart's default) | 250m | 256Mi | 384Mi |" in sizing


def test_probes_and_ports(helm: Helm, default_values: Path) -> None:
    rendered = helm.render(default_values)
    ctr = container(rendered.one("Deployment"))
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert ctr["ports"] == [{"name": "http", "containerPort": 9847, "protocol": "TCP"}]
    assert ctr["args"] == ["run", "--config.file", "/etc/chargeback-exporter/config.yaml"]
    svc = rendered.one("Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    config = yaml.safe_load(rendered.one("ConfigMap")["data"]["config.yaml"])
    assert config["web"]["listen_address"] == "0.0.0.0:9847"


def test_container_port_moves_listen_address(helm: Helm, default_values: Path) -> None:
    rendered = helm.render(default_values, values={"containerPort": 9100})
    assert container(rendered.one("Deployment"))["ports"][0]["containerPort"] == 9100
    config = yaml.safe_load(rendered.one("ConfigMap")["data"]["config.yaml"])
    assert config["web"]["listen_address"] == "0.0.0.0:9100"


def test_labels_and_selectors(helm: Helm, default_values: Path) -> None:
    rendered = helm.render(default_values, values={"commonLabels": {"team": "finops"}})
    for doc in rendered.docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "chargeback-exporter"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == __version__
        assert labels["helm.sh/chart"].startswith("chargeback-exporter-")
        assert labels["team"] == "finops"
        assert doc["metadata"]["namespace"] == NAMESPACE
    dep = rendered.one("Deployment")
    selector = dep["spec"]["selector"]["matchLabels"]
    assert "helm.sh/chart" not in selector
    assert "app.kubernetes.io/version" not in selector
    assert "team" not in selector
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert rendered.one("Service")["spec"]["selector"] == selector


def test_service_links_are_off(helm: Helm) -> None:
    """Service links would inject e.g. CHARGEBACK_EXPORTER_PORT, an unknown config override."""
    rendered = helm.render(CHART / "ci" / "backfill-values.yaml")
    for kind in ("Deployment", "Job"):
        assert pod_spec(rendered.one(kind))["enableServiceLinks"] is False


def test_config_and_secret_checksums_roll_the_pod(helm: Helm, default_values: Path) -> None:
    def annotations(values: dict[str, Any] | None) -> dict[str, str]:
        dep = helm.render(default_values, values=values).one("Deployment")
        ann: dict[str, str] = dep["spec"]["template"]["metadata"]["annotations"]
        return ann

    base = annotations(None)
    assert re.fullmatch(r"[0-9a-f]{64}", base["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", base["checksum/secret"])
    assert annotations(None) == base, "checksums must be deterministic"
    other_config = annotations({"config": {"logging": {"level": "DEBUG"}}})
    assert other_config["checksum/config"] != base["checksum/config"]
    assert other_config["checksum/secret"] == base["checksum/secret"]
    other_secret = annotations({"secret": {"sysdigToken": "rotated"}})
    assert other_secret["checksum/secret"] != base["checksum/secret"]
    assert other_secret["checksum/config"] == base["checksum/config"]


def test_chart_secret_is_mounted_and_referenced(helm: Helm) -> None:
    rendered = helm.render(CHART / "ci" / "sasl-ssl-values.yaml")
    secret = rendered.one("Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "sysdig-token": "00000000-0000-0000-0000-000000000000",
        "kafka-sasl-password": "kafka-secret",
        "kafka-ssl-key-password": "key-secret",
        "schema-registry-user-info": "chargeback:registry-secret",
    }
    config_text = rendered.one("ConfigMap")["data"]["config.yaml"]
    for value in data.values():
        assert value not in config_text, "a secret leaked into the ConfigMap"
    config = yaml.safe_load(config_text)
    assert config["sysdig"]["token_file"] == "/etc/chargeback-exporter/secrets/sysdig-token"
    kafka = config["kafka"]
    assert kafka["sasl_password_file"] == "/etc/chargeback-exporter/secrets/kafka-sasl-password"
    assert kafka["ssl_ca_location"] == "/etc/chargeback-exporter/kafka-tls/ca.crt"
    assert kafka["schema_registry"]["basic_auth_user_info_file"] == (
        "/etc/chargeback-exporter/secrets/schema-registry-user-info"
    )
    env = {e["name"]: e for e in container(rendered.one("Deployment"))["env"]}
    ref = env["CHARGEBACK_KAFKA__SSL_KEY_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "kafka-ssl-key-password"}


def test_existing_secret_skips_the_chart_secret(helm: Helm) -> None:
    rendered = helm.render(CHART / "ci" / "existing-secret-values.yaml")
    assert rendered.all("Secret") == []
    dep = rendered.one("Deployment")
    assert "checksum/secret" not in dep["spec"]["template"]["metadata"]["annotations"]
    sources = pod_spec(dep)["volumes"][0]["projected"]["sources"]
    secrets = [s["secret"] for s in sources if "secret" in s]
    assert secrets == [{
        "name": "chargeback-exporter-credentials",
        "items": [
            {"key": "token", "path": "secrets/token"},
            {"key": "kafka-password", "path": "secrets/kafka-password"},
        ],
    }]
    config = yaml.safe_load(rendered.one("ConfigMap")["data"]["config.yaml"])
    assert config["sysdig"]["token_file"] == "/etc/chargeback-exporter/secrets/token"
    assert config["kafka"]["sasl_password_file"] == "/etc/chargeback-exporter/secrets/kafka-password"


def test_backfill_job_only_when_enabled(helm: Helm, default_values: Path) -> None:
    assert helm.render(default_values).all("Job") == []
    rendered = helm.render(CHART / "ci" / "backfill-values.yaml")
    job = rendered.one("Job")
    ctr = container(job)
    assert ctr["args"] == [
        "backfill", "--config.file", "/etc/chargeback-exporter/config.yaml",
        "--from", "2026-10-01T00:00:00Z", "--to", "2026-11-01T00:00:00Z", "--dry-run",
    ]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] == 21600
    assert "ttlSecondsAfterFinished" not in job["spec"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["CHARGEBACK_BACKFILL__TRANSACTIONAL_ID"] == "chargeback-prod-backfill"
    assert "CHARGEBACK_KAFKA__TRANSACTIONAL_ID" not in env
    # Backfill pods are not worker pods: the Service and Deployment must not select them.
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= job_labels.items()
    assert job_labels["app.kubernetes.io/component"] == "backfill"
    assert ctr["securityContext"] == container(rendered.one("Deployment"))["securityContext"]


def test_backfill_job_name_follows_its_pod_template(helm: Helm) -> None:
    """A Job's template is immutable: any change to it must yield a new Job, not a failed upgrade."""
    ci = CHART / "ci" / "backfill-values.yaml"

    def name(values: dict[str, Any] | None = None) -> str:
        job_name: str = helm.render(ci, values=values).one("Job")["metadata"]["name"]
        return job_name

    first = name()
    assert re.fullmatch(r"billing-chargeback-exporter-backfill-[0-9a-f]{8}", first)
    assert name() == first, "the same values must keep the same (completed) Job"
    assert name({"backfill": {"backoffLimit": 5}}) == first, "mutable Job fields keep the name"
    changes: list[dict[str, Any]] = [
        {"backfill": {"to": "2026-10-15T00:00:00Z"}},
        {"backfill": {"extraArgs": []}},
        {"image": {"tag": "0.1.1"}},
        {"config": {"logging": {"level": "DEBUG"}}},
    ]
    names = {name(change) for change in changes}
    assert first not in names and len(names) == len(changes)
    long = helm.render(ci, values={"fullnameOverride": "x" * 63}).one("Job")["metadata"]["name"]
    assert len(long) <= 63


def test_servicemonitor_off_by_default_and_selects_the_service(helm: Helm, default_values: Path) -> None:
    assert helm.render(default_values).all("ServiceMonitor") == []
    rendered = helm.render(CHART / "ci" / "servicemonitor-values.yaml")
    sm = rendered.one("ServiceMonitor")
    svc = rendered.one("Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"


def test_extra_files_are_mounted(helm: Helm, default_values: Path) -> None:
    rendered = helm.render(
        default_values,
        values={
            "files": {"rate-card.yaml": "currency: EUR\n"},
            "config": {"pricing": {"rate_card_file": "/etc/chargeback-exporter/files/rate-card.yaml"}},
        },
    )
    assert rendered.one("ConfigMap")["data"]["rate-card.yaml"] == "currency: EUR\n"
    sources = pod_spec(rendered.one("Deployment"))["volumes"][0]["projected"]["sources"]
    items = sources[0]["configMap"]["items"]
    assert {"key": "rate-card.yaml", "path": "files/rate-card.yaml"} in items


def render_notes(helm: Helm, values_file: Path, tmp_path: Path) -> str:
    """NOTES.txt as `helm install` would print it, rendered offline.

    helm 3 only renders NOTES.txt during an install, which needs a cluster; a copy of the chart
    wraps the same file in a named template and emits it through a ConfigMap.
    """
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text(encoding="utf-8")
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes_check.tpl").write_text(
        '{{- define "notes-check" -}}\n' + notes + "\n{{- end }}\n", encoding="utf-8"
    )
    (chart / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "notes-check" . | quote }}\n',
        encoding="utf-8",
    )
    res = helm.run(
        "template", RELEASE, str(chart), "--namespace", NAMESPACE, "-f", str(values_file),
        "--show-only", "templates/notes-check.yaml",
    )
    assert res.returncode == 0, res.stderr
    text: str = yaml.safe_load(res.stdout)["data"]["notes"]
    return text


def test_notes_render(helm: Helm, tmp_path: Path) -> None:
    notes = render_notes(helm, CHART / "ci" / "backfill-values.yaml", tmp_path)
    assert "replicas 1, strategy Recreate" in notes
    assert f"kubectl -n {NAMESPACE} logs deploy/{RELEASE}-chargeback-exporter" in notes
    assert "check-config --config.file /etc/chargeback-exporter/config.yaml" in notes
    assert "[2026-10-01T00:00:00Z, 2026-11-01T00:00:00Z)" in notes
