"""`check-labels`: the org-label policy check for Kubernetes manifests and Dockerfiles.

The exporter bills a workload to the org labels Sysdig sees on it; a workload without them lands in
`__unallocated__`. This check moves that failure left, into review: every required key
(`costcenter`, `businessunit`, `department`, `team` by default) must be present with a non-blank
value, optionally one from an allow-list (a CMDB export as CSV).

What is checked:
- Kubernetes manifests (multi-document YAML, `List` items): Deployment, StatefulSet, DaemonSet,
  ReplicaSet, Job, CronJob, Pod. For workloads both `metadata.labels` (what Sysdig reports as
  `kube_<kind>_label_*`) and the pod template's labels (what the pods carry) are checked.
- Dockerfiles: the `LABEL` instructions of the final stage, including the stages it is built
  `FROM`, in both `LABEL k=v` and the legacy `LABEL k v` forms.

Unlike the Anchore `dockerfile`/`instruction`/`exists` rule Sysdig's original policy used (which
fires when any LABEL exists and ignores the value), each key's presence and value are checked.

Bad input (unreadable, undecodable, invalid YAML, malformed LABEL) is reported per file as an
`InputProblem` and makes the command exit 2; it never raises out of `check_paths`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter import __version__
from exporter.clock import Clock
from exporter.config import OrgConfig, load_config
from exporter.errors import ExporterError
from exporter.model import ORG_KEYS
from exporter.org import AllowedValues, load_allowed_values

# Rule ids, stable: SARIF consumers key alerts (and their dismissals) on them.
RULE_MISSING = "org-label-missing"
RULE_EMPTY = "org-label-empty"
RULE_NOT_ALLOWED = "org-label-not-allowed"
RULE_INVALID = "org-label-invalid"

RULES: Mapping[str, tuple[str, str]] = {
    RULE_MISSING: (
        "Required org label is missing",
        "A workload, pod template or image lacks a required org label, so its usage is "
        "billed to __unallocated__. Add the label (or one of its configured aliases).",
    ),
    RULE_EMPTY: (
        "Required org label is empty",
        "A required org label is present but empty or whitespace only; the exporter treats "
        "it as missing and bills the usage to __unallocated__.",
    ),
    RULE_NOT_ALLOWED: (
        "Org label value is not in the allow-list",
        "The label's value is not one of the values of the allow-list (for example a CMDB "
        "export of valid cost centers); the usage would be billed to __invalid__.",
    ),
    RULE_INVALID: (
        "Org label value is not a valid Kubernetes label value",
        "Kubernetes label values are strings of at most 63 characters matching "
        "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?; the API server rejects anything else, "
        "and an unquoted number or boolean in YAML is not a string.",
    ),
}

WORKLOAD_TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Pod": (),
}

_K8S_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_YAML_STR = "tag:yaml.org,2002:str"
_YAML_NULL = "tag:yaml.org,2002:null"
_YAML_MERGE = "tag:yaml.org,2002:merge"
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv"})
STDIN = "-"


class LabelPolicyError(ExporterError):
    """The check's own options are wrong (bad `--alias`, unreadable allow-list): exit 2."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class LabelPolicy:
    """What the check requires.

    `aliases` maps a required key to other label names accepted for it, tried in order after
    the key itself; the first non-blank one is the value. `allowed` restricts a key's values.
    """

    required: tuple[str, ...] = ORG_KEYS
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allowed: Mapping[str, AllowedValues] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Violation:
    """One failed check at one place: `path:line: kind/name: scope: message`."""

    path: str
    line: int
    kind: str
    name: str
    scope: str
    rule: str
    key: str
    message: str
    value: str | None = None

    def text(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}/{self.name}: {self.scope}: {self.message}"


@dataclass(frozen=True, slots=True)
class InputProblem:
    """A file that could not be checked (exit 2)."""

    path: str
    message: str
    line: int | None = None

    def text(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


@dataclass(slots=True)
class Report:
    """The outcome over every file. `exit_code()` is 2 on any problem, 1 on violations, else 0."""

    policy: LabelPolicy
    files: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def exit_code(self) -> int:
        if self.problems:
            return 2
        return 1 if self.violations else 0


@dataclass(frozen=True, slots=True)
class _Label:
    """A label as written: its value (None when null) and whether it is a string."""

    value: str | None
    line: int
    is_string: bool = True


class _BadInput(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# ---------------------------------------------------------------------------------------------
# Policy construction


def build_policy(
    required: Sequence[str] = ORG_KEYS,
    aliases: Sequence[str] = (),
    allowed: Sequence[str] = (),
    org: OrgConfig | None = None,
) -> LabelPolicy:
    """A policy from CLI-shaped strings: `aliases` as `ALIAS=KEY`, `allowed` as `KEY=FILE`.

    With `org` (the exporter's `org` config section), each required org key also accepts its
    configured `workload_labels` and `aliases`, and its `allowed_values_file` is an allow-list.
    Allow-lists are read by the exporter's own reader (`exporter.org.load_allowed_values`: a
    header row, then the column named after the key, else the first), so review and billing
    agree. Raises `LabelPolicyError` or `ConfigError` (both exit 2) naming the option or file.
    """
    keys = tuple(dict.fromkeys(k.strip() for k in required if k.strip()))
    if not keys:
        raise LabelPolicyError("--required: no label keys given")
    alias_map: dict[str, list[str]] = {}
    allow_map: dict[str, AllowedValues] = {}
    if org is not None:
        for key in keys:
            kc = org.keys.get(key)
            if kc is None:
                continue
            alias_map[key] = [n for n in dict.fromkeys((*kc.workload_labels, *kc.aliases)) if n != key]
            if kc.allowed_values_file is not None:
                allow_map[key] = load_allowed_values(
                    kc.allowed_values_file, key, kc.allowed_values_column,
                    kc.allowed_values_case_sensitive,
                )
    for item in aliases:
        alias, sep, key = (s.strip() for s in item.partition("="))
        if not sep or not alias or not key:
            raise LabelPolicyError(f"--alias {item!r}: expected ALIAS=KEY, e.g. cost-center=costcenter")
        if key not in keys:
            raise LabelPolicyError(f"--alias {item!r}: {key} is not a required label {list(keys)}")
        alias_map.setdefault(key, [])
        if alias != key and alias not in alias_map[key]:
            alias_map[key].append(alias)
    for item in allowed:
        key, sep, file = (s.strip() for s in item.partition("="))
        if not sep or not key or not file:
            raise LabelPolicyError(f"--allowed {item!r}: expected KEY=FILE.csv")
        if key not in keys:
            raise LabelPolicyError(f"--allowed {item!r}: {key} is not a required label {list(keys)}")
        loaded = load_allowed_values(Path(file), key)
        previous = allow_map.get(key)
        if previous is not None:  # several lists for one key: their union
            fold = not previous.case_sensitive
            extra = {(k.casefold() if fold else k): v for k, v in loaded.canonical.items()}
            loaded = AllowedValues(key, f"{previous.source}+{loaded.source}",
                                   {**extra, **previous.canonical}, previous.case_sensitive)
        allow_map[key] = loaded
    return LabelPolicy(keys, {k: tuple(v) for k, v in alias_map.items()}, allow_map)


# ---------------------------------------------------------------------------------------------
# The label rules, shared by manifests and Dockerfiles


def _check_labels(
    labels: Mapping[str, _Label],
    policy: LabelPolicy,
    *,
    kubernetes: bool,
    missing_line: int,
    where: tuple[str, str, str, str],
) -> Iterator[Violation]:
    path, kind, name, scope = where
    for key in policy.required:
        names = (key, *policy.aliases.get(key, ()))
        present = [(n, labels[n]) for n in names if n in labels]
        if not present:
            also = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
            yield Violation(path, missing_line, kind, name, scope, RULE_MISSING, key,
                            f"missing required label {key}{also}")
            continue
        filled = [(n, lab) for n, lab in present if lab.value is not None and lab.value.strip()]
        if not filled:
            n, lab = present[0]
            what = "empty" if not lab.value else "whitespace only"
            yield Violation(path, lab.line, kind, name, scope, RULE_EMPTY, key,
                            f"label {_shown(n, key)} is {what}", lab.value)
            continue
        n, lab = filled[0]
        value = lab.value or ""
        if "$" in value:
            continue  # substituted at build or deploy time (ARG, envsubst): present, not checkable
        if kubernetes and (not lab.is_string or not _valid_k8s_value(value)):
            why = ("is not a string; quote it" if not lab.is_string
                   else "is not a valid Kubernetes label value")
            yield Violation(path, lab.line, kind, name, scope, RULE_INVALID, key,
                            f"label {_shown(n, key)} value {value!r} {why}", value)
            continue
        allow = policy.allowed.get(key)
        if allow is not None and allow.lookup(value.strip()) is None:
            yield Violation(path, lab.line, kind, name, scope, RULE_NOT_ALLOWED, key,
                            f"label {_shown(n, key)} value {value.strip()!r} is not in the "
                            f"allow-list {allow.source}", value)


def _shown(name: str, key: str) -> str:
    return key if name == key else f"{name} (alias of {key})"


def _valid_k8s_value(value: str) -> bool:
    return len(value) <= 63 and _K8S_LABEL_VALUE.fullmatch(value) is not None


# ---------------------------------------------------------------------------------------------
# Kubernetes manifests


def _get(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return v  # type: ignore[no-any-return]
    return None


def _get_path(node: Node | None, path: Iterable[str]) -> Node | None:
    for part in path:
        node = _get(node, part)
    return node


def _str(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) and node.tag != _YAML_NULL else None


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _mapping_labels(node: MappingNode) -> dict[str, _Label]:
    out: dict[str, _Label] = {}
    for k, v in node.value:
        if not isinstance(k, ScalarNode):
            continue
        if k.tag == _YAML_MERGE:  # `<<: *common`: merged keys, overridden by explicit ones
            sources = v.value if isinstance(v, SequenceNode) else [v]
            for src in sources:
                if isinstance(src, MappingNode):
                    out = {**_mapping_labels(src), **out}
        elif isinstance(v, ScalarNode):
            value = None if v.tag == _YAML_NULL else str(v.value)
            out[str(k.value)] = _Label(value, _line(k), v.tag in (_YAML_STR, _YAML_NULL))
        else:
            out[str(k.value)] = _Label(None, _line(k), False)
    return out


def _labels_of(meta: Node | None) -> tuple[dict[str, _Label], Node | None]:
    labels_node = _get(meta, "labels")
    out = _mapping_labels(labels_node) if isinstance(labels_node, MappingNode) else {}
    return out, labels_node


def _check_object(node: Node, path: str, policy: LabelPolicy, out: list[Violation]) -> None:
    kind = _str(_get(node, "kind"))
    if kind is None:
        return
    if kind == "List" or kind.endswith("List"):
        items = _get(node, "items")
        if isinstance(items, SequenceNode):
            for item in items.value:
                _check_object(item, path, policy, out)
        return
    template_path = WORKLOAD_TEMPLATE_PATHS.get(kind)
    if template_path is None:
        return
    meta = _get(node, "metadata")
    name = _str(_get(meta, "name")) or _str(_get(meta, "generateName")) or "(unnamed)"
    parts: list[tuple[str, Node | None, Node]] = [("labels", meta, meta or node)]
    if template_path:
        template = _get_path(node, template_path)
        if template is not None:
            tmeta = _get(template, "metadata")
            parts.append(("pod template labels", tmeta, tmeta or template))
    for scope, meta_node, anchor in parts:
        labels, labels_node = _labels_of(meta_node)
        missing_line = _line(labels_node if labels_node is not None else anchor)
        out.extend(_check_labels(labels, policy, kubernetes=True, missing_line=missing_line,
                                 where=(path, kind, name, scope)))


def check_manifest_text(text: str, path: str, policy: LabelPolicy) -> list[Violation]:
    """Violations in a (multi-document) YAML text. Raises `_BadInput` on invalid YAML."""
    out: list[Violation] = []
    try:
        for doc in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if doc is not None:
                _check_object(doc, path, policy, out)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        where = f", column {mark.column + 1}" if mark else ""
        raise _BadInput(f"invalid YAML: {problem}{where}", mark.line + 1 if mark else None) from None
    except RecursionError:
        raise _BadInput("invalid YAML: nested too deeply") from None
    return out


# ---------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass(frozen=True, slots=True)
class _Instruction:
    command: str
    args: str
    line: int
    physical: tuple[tuple[int, str], ...]


def _instructions(text: str) -> list[_Instruction]:
    """Logical instructions: continuations joined, comment lines inside them dropped."""
    lines = text.splitlines()
    escape = "\\"
    for raw in lines:  # parser directives are only honoured in the leading comment block
        m = re.fullmatch(r"\s*#\s*(\w+)\s*=\s*(\S+)\s*", raw)
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2) in ("\\", "`"):
            escape = m.group(2)
    out: list[_Instruction] = []
    parts: list[str] = []
    physical: list[tuple[int, str]] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and (not stripped or stripped.startswith("#")):
            continue  # Docker drops comment and blank lines inside a continuation
        if not parts:
            start = number
        physical.append((number, raw))
        body = raw.rstrip()
        if body.endswith(escape):
            parts.append(body[: -len(escape)])
            continue
        parts.append(body)
        joined = " ".join(p.strip() for p in parts)
        command, _, args = joined.partition(" ")
        out.append(_Instruction(command.upper(), args.strip(), start, tuple(physical)))
        parts, physical = [], []
    if parts:
        joined = " ".join(p.strip() for p in parts)
        command, _, args = joined.partition(" ")
        out.append(_Instruction(command.upper(), args.strip(), start, tuple(physical)))
    return out


def _label_pairs(ins: _Instruction) -> list[tuple[str, str]]:
    try:
        tokens = shlex.split(ins.args, posix=True)
    except ValueError as exc:
        raise _BadInput(f"LABEL: {exc}", ins.line) from None
    if not tokens:
        raise _BadInput("LABEL without arguments", ins.line)
    if "=" not in tokens[0]:  # legacy `LABEL key value with spaces`
        return [(tokens[0], " ".join(tokens[1:]))]
    pairs = []
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep or not key:
            raise _BadInput(f"LABEL: expected key=value, got {tok!r}", ins.line)
        pairs.append((key, value))
    return pairs


def _key_line(ins: _Instruction, key: str) -> int:
    """The physical line of a multi-line LABEL on which `key` is set."""
    pattern = re.compile(rf"(^|[\s\"']){re.escape(key)}[\"']?(=|\s)")
    for number, raw in ins.physical:
        body = raw.strip()
        if number == ins.line:
            body = body.partition(" ")[2]  # past the LABEL keyword
        if pattern.search(body):
            return number
    return ins.line


@dataclass(slots=True)
class _Stage:
    line: int
    base: str
    alias: str | None
    labels: dict[str, _Label]


def check_dockerfile_text(text: str, path: str, policy: LabelPolicy) -> list[Violation]:
    """Violations for the image a Dockerfile's final stage builds. Raises `_BadInput`."""
    stages: list[_Stage] = []
    by_alias: dict[str, _Stage] = {}
    for ins in _instructions(text):
        if ins.command == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            if not words:
                raise _BadInput("FROM without an image", ins.line)
            base = words[0]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            inherited = by_alias.get(base.lower())
            stage = _Stage(ins.line, base, alias,
                           dict(inherited.labels) if inherited is not None else {})
            stages.append(stage)
            if alias:
                by_alias[alias.lower()] = stage
        elif ins.command == "LABEL":
            if not stages:
                raise _BadInput("LABEL before the first FROM", ins.line)
            for key, value in _label_pairs(ins):
                stages[-1].labels[key] = _Label(value, _key_line(ins, key))
    if not stages:
        raise _BadInput("no FROM instruction: not a Dockerfile")
    final = stages[-1]
    name = final.alias or final.base
    return list(_check_labels(final.labels, policy, kubernetes=False, missing_line=final.line,
                              where=(path, "Dockerfile", name, "image labels")))


# ---------------------------------------------------------------------------------------------
# Files and directories


_DOCKERFILE_NAME = re.compile(r"(Dockerfile|dockerfile)([.\-_].*)?|.+\.[Dd]ockerfile")
# Files that merely share the prefix: docs, scripts, BuildKit's Dockerfile.dockerignore.
_NOT_DOCKERFILE = (".md", ".py", ".sh", ".txt", ".json", ".toml", ".cfg", ".dockerignore")


def is_dockerfile(name: str) -> bool:
    """`Dockerfile`, `Dockerfile.*`, `Dockerfile-*`, `*.Dockerfile`, but not `Dockerfile.md` etc."""
    return _DOCKERFILE_NAME.fullmatch(name) is not None and not name.lower().endswith(_NOT_DOCKERFILE)


def is_manifest(name: str) -> bool:
    return name.lower().endswith((".yaml", ".yml"))


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for f in sorted(filenames):
            if is_manifest(f) or is_dockerfile(f):
                yield Path(dirpath) / f


def _expand(paths: Sequence[str], report: Report) -> Iterator[tuple[str, Path | None]]:
    for raw in paths:
        if raw == STDIN:
            yield "<stdin>", None
            continue
        p = Path(raw)
        if p.is_dir():
            found = False
            for f in _walk(p):
                found = True
                yield str(f), f
            if not found:
                report.skipped.append((raw, "no manifests or Dockerfiles in this directory"))
        elif p.exists():
            yield raw, p
        else:
            report.problems.append(InputProblem(raw, "no such file or directory"))


def check_paths(paths: Sequence[str], policy: LabelPolicy, stdin: TextIO | None = None) -> Report:
    """Check files, directories (walked for *.yaml, *.yml and Dockerfiles) and `-` (stdin).

    Files named like Dockerfiles are parsed as Dockerfiles, anything else as YAML. A YAML file
    containing `{{` is a Helm/Go template and is skipped (render it and pipe it to `-`).
    """
    report = Report(policy)
    for shown, path in _expand(paths, report):
        try:
            text = (stdin or sys.stdin).read() if path is None else path.read_text(encoding="utf-8")
        except OSError as exc:
            report.problems.append(InputProblem(shown, f"cannot read: {exc.strerror}"))
            continue
        except UnicodeDecodeError as exc:
            report.problems.append(InputProblem(shown, f"not UTF-8 text (byte {exc.start})"))
            continue
        docker = path is not None and is_dockerfile(path.name) and not is_manifest(path.name)
        if not docker and "{{" in text:
            report.skipped.append((shown, "Helm/Go template; render it first and pass it as -"))
            continue
        try:
            if docker:
                found = check_dockerfile_text(text, shown, policy)
            else:
                found = check_manifest_text(text, shown, policy)
        except _BadInput as exc:
            report.problems.append(InputProblem(shown, exc.message, exc.line))
            continue
        report.files.append(shown)
        report.violations.extend(sorted(found, key=lambda v: v.line))
    return report


# ---------------------------------------------------------------------------------------------
# Output formats


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


# ---------------------------------------------------------------------------------------------
# CLI


def _split_keys(values: Sequence[str] | None) -> list[str]:
    if not values:
        return list(ORG_KEYS)
    return [k for v in values for k in v.split(",")]


def _run(args: argparse.Namespace, *, clock: Clock) -> int:
    org = None
    if args.config_file is not None:
        org = load_config(Path(args.config_file)).org
    policy = build_policy(_split_keys(args.required), args.alias or (), args.allowed or (), org)
    report = check_paths(args.paths, policy)
    if args.format == "json":
        sys.stdout.write(json.dumps(to_json(report), indent=2) + "\n")
    elif args.format == "sarif":
        sys.stdout.write(json.dumps(to_sarif(report), indent=2) + "\n")
    else:
        sys.stdout.write(format_text(report))
    for shown, reason in report.skipped:
        print(f"chargeback-exporter check-labels: skipped {shown}: {reason}", file=sys.stderr)
    for problem in report.problems:
        print(f"chargeback-exporter check-labels: error: {problem.text()}", file=sys.stderr)
    if args.format == "text":
        n = len(report.violations)
        print(f"{n} violation{'s' if n != 1 else ''} in {len(report.files)} file"
              f"{'s' if len(report.files) != 1 else ''} checked", file=sys.stderr)
    return report.exit_code()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `check-labels PATH...`."""
    p = subparsers.add_parser(
        "check-labels",
        help="check org labels in Kubernetes manifests and Dockerfiles",
        description="Check that Kubernetes workloads (and their pod templates) and Dockerfiles "
        "carry the required org labels with non-blank, allowed values. Exit 0 when clean, 1 on "
        "violations, 2 when an input cannot be read or parsed.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="manifest, Dockerfile or directory to walk; - reads YAML from stdin")
    p.add_argument("--required", action="append", metavar="KEYS",
                   help=f"comma-separated required label keys (default: {','.join(ORG_KEYS)})")
    p.add_argument("--allowed", action="append", metavar="KEY=FILE.csv",
                   help="allow-list for KEY: the CSV column named KEY, else its first column")
    p.add_argument("--alias", action="append", metavar="ALIAS=KEY",
                   help="accept label ALIAS for required KEY, e.g. cost-center=costcenter")
    p.add_argument("--config.file", dest="config_file", metavar="PATH",
                   help="exporter config whose org section adds label aliases and allow-lists")
    p.add_argument("--format", choices=("text", "json", "sarif"), default="text",
                   help="output format (default: text)")
    p.set_defaults(handler=_run)
