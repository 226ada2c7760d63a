"""The chart and the application agree on every configuration key.

For each `ci/*-values.yaml`, the pod's view of the world is rebuilt in a temporary directory:
the projected volume's files (config.yaml, extra files, Secret items, TLS items) are written
where the pod would see them, absolute paths in config.yaml are re-rooted there, and the
container's `CHARGEBACK_*` environment is reproduced. `chargeback-exporter check-config` must
then accept it, for the worker and for the backfill Job. A misspelt key must be refused.
"""

from __future__ import annotations

import base64
import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helm.chartlib import CHART, CI_VALUES, COMMAND_TIMEOUT, REPO, Helm, Rendered

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]


@dataclass(frozen=True)
class Checked:
    """Outcome of checking one config file: exit code and the combined output."""

    returncode: int
    output: str


@functools.cache
def _cli_has_check_config() -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        env=_clean_env({}),
    )
    return proc.returncode == 0


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARGEBACK_", "SDC_"))}
    return {**env, **extra}


def check_config(path: Path, env: dict[str, str]) -> Checked:
    """Run `chargeback-exporter check-config --config.file PATH` with exactly `env` as overrides.

    Uses the real CLI in a subprocess. Only while the subcommand is not yet part of the
    application does it fall back to `exporter.config.load_config`, the loader the CLI uses.
    """
    if _cli_has_check_config():
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", "check-config", "--config.file", str(path)],
            cwd=REPO, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
            env=_clean_env(env),
        )
        return Checked(proc.returncode, proc.stdout + proc.stderr)
    from exporter.config import load_config
    from exporter.errors import ConfigError

    try:
        load_config(path, environ=env)
    except ConfigError as exc:
        return Checked(exc.exit_code, str(exc))
    return Checked(0, "")


def _by_name(rendered: Rendered, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered.all(kind)}


def _secret_value(rendered: Rendered, name: str, key: str) -> str:
    """The value the pod would read: from the chart's Secret, or a stand-in for external ones."""
    secret = _by_name(rendered, "Secret").get(name)
    if secret is None:
        return f"external-{name}-{key}"
    return base64.b64decode(secret["data"][key]).decode()


def materialise(rendered: Rendered, workload: dict[str, Any], root: Path) -> tuple[Path, dict[str, str]]:
    """Write the workload's projected config volume under `root`; return config path and env."""
    pod = workload["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_maps = _by_name(rendered, "ConfigMap")
    mounts: dict[str, Path] = {}
    for mount in ctr["volumeMounts"]:
        projected = volumes[mount["name"]].get("projected")
        if projected is None:
            continue
        base = root / mount["mountPath"].lstrip("/")
        mounts[mount["mountPath"]] = base
        for source in projected["sources"]:
            if "configMap" in source:
                data = config_maps[source["configMap"]["name"]]["data"]
                files = {i["path"]: data[i["key"]] for i in source["configMap"]["items"]}
            else:
                name = source["secret"]["name"]
                files = {
                    i["path"]: _secret_value(rendered, name, i["key"]) for i in source["secret"]["items"]
                }
            for rel, content in files.items():
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                (base / rel).write_text(content, encoding="utf-8")
    assert list(mounts) == ["/etc/chargeback-exporter"]
    config_path = mounts["/etc/chargeback-exporter"] / "config.yaml"
    text = config_path.read_text(encoding="utf-8")
    for mount_path, local in mounts.items():
        text = text.replace(mount_path + "/", str(local) + "/")
    config_path.write_text(text, encoding="utf-8")
    env: dict[str, str] = {}
    for var in ctr.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = _secret_value(rendered, ref["name"], ref["key"])
    return config_path, env


@pytest.mark.parametrize("values_file", CI_VALUES, ids=CI_IDS)
def test_app_accepts_rendered_config(helm: Helm, values_file: Path, tmp_path: Path) -> None:
    rendered = helm.render(values_file)
    workloads = [*rendered.all("Deployment"), *rendered.all("Job")]
    assert workloads
    for workload in workloads:
        root = tmp_path / workload["kind"].lower()
        config_path, env = materialise(rendered, workload, root)
        checked = check_config(config_path, env)
        assert checked.returncode == 0, f"{workload['kind']}: {checked.output.strip()}"
        for secret in rendered.all("Secret"):
            for value in secret["data"].values():
                assert base64.b64decode(value).decode() not in checked.output, "secret printed"


def test_rendered_config_keeps_chart_defaults_and_user_values(helm: Helm) -> None:
    rendered = helm.render(CHART / "ci" / "sasl-ssl-values.yaml")
    config = yaml.safe_load(rendered.one("ConfigMap")["data"]["config.yaml"])
    assert config["logging"] == {"level": "INFO", "format": "json"}
    assert config["sysdig"]["url"] == "https://eu1.app.sysdig.com"
    assert config["sysdig"]["clusters"] == ["prod-eu-1", "prod-eu-2"]
    assert config["periods"] == {"length": "1h", "settle_delay": "10m"}
    assert config["kafka"]["replication_factor"] == 3


def test_app_rejects_a_misspelt_key(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.render(
        CHART / "ci" / "default-values.yaml",
        values={"config": {"kafka": {"bootstrap_server": "typo:9092"}}},
    )
    config_path, env = materialise(rendered, rendered.one("Deployment"), tmp_path)
    checked = check_config(config_path, env)
    assert checked.returncode == 2
    assert "kafka.bootstrap_server" in checked.output
    assert "unknown key" in checked.output
    assert "Traceback" not in checked.output
    assert len(checked.output.strip().splitlines()) == 1


def test_app_rejects_a_bad_value(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.render(
        CHART / "ci" / "default-values.yaml", values={"config": {"periods": {"length": "7m"}}}
    )
    config_path, env = materialise(rendered, rendered.one("Deployment"), tmp_path)
    checked = check_config(config_path, env)
    assert checked.returncode == 2
    assert "periods.length" in checked.output
