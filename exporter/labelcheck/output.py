"""`check-labels` output: text lines, a JSON document, or a SARIF 2.1.0 log for code scanning."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from exporter import __version__
from exporter.labelcheck.check import RULES, Report


def format_text(report: Report) -> str:
    """One `path:line: kind/name: scope: message` line per violation."""
    return "".join(v.text() + "\n" for v in report.violations)


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain data: policy, files, violations, problems, skipped."""
    return {
        "tool": "chargeback-exporter check-labels",
        "version": __version__,
        "required": list(report.policy.required),
        "aliases": {k: list(v) for k, v in report.policy.aliases.items()},
        "allowed": {k: a.source for k, a in report.policy.allowed.items()},
        "files": report.files,
        "violations": [
            {"path": v.path, "line": v.line, "kind": v.kind, "name": v.name, "scope": v.scope,
             "rule": v.rule, "key": v.key, "value": v.value, "message": v.message}
            for v in report.violations
        ],
        "problems": [{"path": p.path, "line": p.line, "message": p.message} for p in report.problems],
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
    }


def _uri(path: str) -> dict[str, str]:
    if path == "<stdin>":
        return {"uri": "stdin"}
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            return {"uri": p.resolve().as_uri()}
    rel = p.as_posix().removeprefix("./")
    return {"uri": quote(rel), "uriBaseId": "%SRCROOT%"}


def to_sarif(report: Report) -> dict[str, Any]:
    """SARIF 2.1.0 log: one run, one rule per check, results with file and line locations."""
    rule_ids = list(RULES)
    rules = [
        {
            "id": rid,
            "name": "".join(w.capitalize() for w in rid.split("-")),
            "shortDescription": {"text": RULES[rid][0]},
            "fullDescription": {"text": RULES[rid][1]},
            "help": {"text": RULES[rid][1]},
            "defaultConfiguration": {"level": "error"},
            "properties": {"tags": ["chargeback", "labels"]},
        }
        for rid in rule_ids
    ]
    results = []
    for v in report.violations:
        results.append({
            "ruleId": v.rule,
            "ruleIndex": rule_ids.index(v.rule),
            "level": "error",
            "message": {"text": f"{v.kind}/{v.name}: {v.scope}: {v.message}"},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": _uri(v.path),
                    "region": {"startLine": v.line},
                },
                "logicalLocations": [{"name": v.name, "kind": "resource",
                                      "fullyQualifiedName": f"{v.kind}/{v.name}"}],
            }],
            # Stable across line moves, so code-scanning keeps one alert per workload and key.
            "partialFingerprints": {
                "chargebackLabel/v1": f"{v.path}|{v.kind}/{v.name}|{v.scope}|{v.key}|{v.rule}",
            },
        })
    notifications = []
    for p in report.problems:
        loc: dict[str, Any] = {"artifactLocation": _uri(p.path)}
        if p.line:
            loc["region"] = {"startLine": p.line}
        notifications.append({"level": "error", "message": {"text": p.text()},
                              "locations": [{"physicalLocation": loc}]})
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "chargeback-exporter check-labels",
                "version": __version__,
                "rules": rules,
            }},
            "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().resolve().as_uri() + "/"}},
            "invocations": [{
                "executionSuccessful": not report.problems,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    }
