"""Fixtures for the Helm chart checks: real helm and promtool binaries, offline manifest validation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.helm.chartlib import CHART, COMMAND_TIMEOUT, HELM, KUBE_VERSION, REPO, Helm, Result


def _ensure_helm() -> Path:
    if not os.access(HELM, os.X_OK):
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "fetch-helm.sh")],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )
        if proc.returncode != 0 or not os.access(HELM, os.X_OK):
            pytest.fail(f"scripts/fetch-helm.sh could not provide helm: {proc.stderr.strip()}")
    return HELM


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    binary = _ensure_helm()
    yield Helm(binary, tmp_path_factory.mktemp("helm-home"), tmp_path_factory.mktemp("values"))


def _ensure_promtool() -> Path:
    # Debian's `prometheus` package, installed by scripts/test-infra.sh (as `make test` does).
    found = shutil.which("promtool")
    if found is None:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "test-infra.sh")],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT * 5, check=False,
        )
        found = shutil.which("promtool")
        if found is None:
            pytest.fail(f"scripts/test-infra.sh could not provide promtool: {proc.stderr.strip()}")
    return Path(found)


@pytest.fixture(scope="session")
def promtool() -> Callable[..., Result]:
    """Runs `promtool` with the given arguments (in the given working directory)."""
    binary = _ensure_promtool()

    def run(*args: str, cwd: Path | None = None) -> Result:
        proc = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            check=False, cwd=cwd,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def kube_validate() -> Callable[[Path], Result]:
    """Runs `kubernetes-validate --strict` from this interpreter's environment on a file."""
    binary = Path(sys.executable).parent / "kubernetes-validate"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary.name} is missing from the virtualenv: install the dev extra")

    def run(path: Path) -> Result:
        proc = subprocess.run(
            [str(binary), "--strict", "-k", KUBE_VERSION, str(path)],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def default_values() -> Path:
    return CHART / "ci" / "default-values.yaml"
