"""Organisation model: precedence, aliases, sanitisation, allow-lists and their load errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.config import OrgConfig, OrgKeyConfig, load_config
from exporter.errors import ConfigError
from exporter.model import INVALID, ORG_KEYS, UNALLOCATED
from exporter.org import OrgModel, load_allowed_values, sysdig_label_name


def model(**keys: OrgKeyConfig | dict[str, Any]) -> OrgModel:
    """An OrgModel from a config tree, validated the way a config file is."""
    data = {k: (v.model_dump() if isinstance(v, OrgKeyConfig) else v) for k, v in keys.items()}
    return OrgModel(load_config(environ={}, overrides={"org": {"keys": data}}).org)


def csv_file(tmp_path: Path, text: str, name: str = "cmdb.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence -------------------------------------------------------------------------------


def test_workload_then_namespace_then_default_then_unallocated() -> None:
    org = model(team={"default": "platform"})
    got = org.resolve("deployment", {
        "kube_deployment_label_costcenter": "cc-1",
        "kube_namespace_label_costcenter": "cc-ns",
        "kube_namespace_label_businessunit": "bu-ns",
    })
    assert got.values == {
        "costcenter": "cc-1", "businessunit": "bu-ns", "department": UNALLOCATED, "team": "platform",
    }
    assert got.sources == {
        "costcenter": "workload", "businessunit": "namespace", "department": "unallocated",
        "team": "default",
    }
    assert got.original == {}


def test_blank_values_are_missing_and_values_are_trimmed() -> None:
    org = OrgModel(OrgConfig())
    got = org.resolve("statefulset", {
        "kube_statefulset_label_costcenter": "   ",
        "kube_namespace_label_costcenter": "  cc-7 ",
        "kube_statefulset_label_team": "",
    })
    assert (got.values["costcenter"], got.sources["costcenter"]) == ("cc-7", "namespace")
    assert got.values["team"] == UNALLOCATED


def test_missing_label_values_may_be_null() -> None:
    got = OrgModel(OrgConfig()).resolve("deployment", {"kube_deployment_label_team": None})
    assert got.values["team"] == UNALLOCATED


def test_unknown_kind_looks_at_every_workload_kind() -> None:
    got = OrgModel(OrgConfig()).resolve("replicaset", {"kube_cronjob_label_team": "t"})
    assert got.values["team"] == "t"


# --- aliases ----------------------------------------------------------------------------------


def test_aliases_are_tried_after_the_key_at_each_level() -> None:
    org = model(costcenter={"aliases": ["cost-center", "cc"]})
    # a workload alias beats the namespace's primary label
    got = org.resolve("deployment", {
        "kube_deployment_label_cost_center": "cc-alias",
        "kube_namespace_label_costcenter": "cc-ns",
    })
    assert (got.values["costcenter"], got.sources["costcenter"]) == ("cc-alias", "workload")
    # the primary name beats an alias at the same level
    got = org.resolve("deployment", {
        "kube_deployment_label_cc": "second", "kube_deployment_label_costcenter": "first",
    })
    assert got.values["costcenter"] == "first"
    # a namespace alias is used when the workload has nothing
    got = org.resolve("deployment", {"kube_namespace_label_cc": "cc-ns-alias"})
    assert (got.values["costcenter"], got.sources["costcenter"]) == ("cc-ns-alias", "namespace")


def test_aliases_do_not_enable_a_disabled_level() -> None:
    org = model(team={"workload_labels": ["team"], "namespace_labels": [], "aliases": ["squad"]})
    got = org.resolve("deployment", {"kube_namespace_label_squad": "x", "kube_namespace_label_team": "y"})
    assert got.values["team"] == UNALLOCATED
    assert org.resolve("job", {"kube_job_label_squad": "s"}).values["team"] == "s"


def test_label_columns_include_sanitised_aliases_once() -> None:
    org = model(costcenter={"aliases": ["cost-center", "cost_center", "cost.center"]})
    cols = org.label_columns()
    assert cols.count("kube_deployment_label_cost_center") == 1
    assert "kube_namespace_label_cost_center" in cols
    assert "kube_namespace_label_costcenter" in cols
    assert all("-" not in c and "." not in c for c in cols)


def test_setting_only_aliases_keeps_the_key_label() -> None:
    cfg = load_config(environ={}, overrides={"org": {"keys": {"team": {"aliases": ["squad"]}}}})
    assert cfg.org.keys["team"].workload_labels == ("team",)
    assert cfg.org.keys["team"].namespace_labels == ("team",)
    assert cfg.org.keys["costcenter"].workload_labels == ("costcenter",)


def test_names_that_collide_across_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        model(costcenter={"aliases": ["cost-center"]}, department={"aliases": ["cost.center"]})
    message = str(info.value)
    assert "\n" not in message
    assert "'cost.center'" in message and "'cost-center'" in message and "'cost_center'" in message


def test_sysdig_label_name_sanitises_like_prometheus() -> None:
    assert sysdig_label_name("app.kubernetes.io/part-of") == "app_kubernetes_io_part_of"
    assert sysdig_label_name("coût") == "co_t"
    assert sysdig_label_name("cost_center9") == "cost_center9"


# --- allow-lists ------------------------------------------------------------------------------


def test_unknown_value_is_invalid_and_the_original_is_kept(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "name,costcenter,owner\nPayments, cc-1 ,alice\nSearch,cc-2,bob\n")
    org = model(costcenter={"allowed_values_file": str(path)})
    ok = org.resolve("deployment", {"kube_deployment_label_costcenter": "cc-1"})
    assert ok.values["costcenter"] == "cc-1" and ok.original == {}
    bad = org.resolve("deployment", {
        "kube_deployment_label_costcenter": "cc-99",
        "kube_namespace_label_costcenter": "cc-2",  # not a fallback: the workload said cc-99
    })
    assert bad.values["costcenter"] == INVALID
    assert bad.original == {"costcenter": "cc-99"}
    assert bad.sources["costcenter"] == "workload"
    # other keys have no list and take anything
    assert org.resolve("job", {"kube_job_label_team": "whatever"}).values["team"] == "whatever"
    # unallocated is not invalid
    assert org.resolve("job", {}).values["costcenter"] == UNALLOCATED


def test_allow_list_is_case_sensitive_unless_configured(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "CostCenter\nCC-1\ncc-1\nCc-2\n")
    strict = model(costcenter={"allowed_values_file": str(path)})
    assert strict.resolve("job", {"kube_job_label_costcenter": "cc-2"}).values["costcenter"] == INVALID
    loose = model(costcenter={"allowed_values_file": str(path), "allowed_values_case_sensitive": False})
    got = loose.resolve("job", {"kube_job_label_costcenter": "CC-2"})
    assert got.values["costcenter"] == "Cc-2"  # charged under the list's own spelling
    first = loose.resolve("job", {"kube_job_label_costcenter": "cC-1"})
    assert first.values["costcenter"] == "CC-1"  # first spelling in the file wins
    allowed = loose.allowed_values("costcenter")
    assert allowed is not None and len(allowed) == 2


def test_reserved_spellings_in_labels_are_invalid() -> None:
    got = OrgModel(OrgConfig()).resolve("job", {"kube_job_label_team": "__unallocated__"})
    assert got.values["team"] == INVALID and got.original == {"team": "__unallocated__"}


def test_default_must_be_allowed(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "team\nplatform\n")
    assert model(team={"default": "platform", "allowed_values_file": str(path)}).resolve(
        "job", {}).values["team"] == "platform"
    with pytest.raises(ConfigError, match=r"org.keys.team.default: 'nobody' is not in .*cmdb.csv"):
        model(team={"default": "nobody", "allowed_values_file": str(path)})


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("costcenter\ncc-1\n\n  cc-2  \n,\n", None, {"cc-1", "cc-2"}),  # blanks skipped, trimmed
        ("id,COSTCENTER\n1,cc-1\n2,\n3,cc-3\n", None, {"cc-1", "cc-3"}),  # header case-insensitive
        ("Code,Name\ncc-1,Payments\ncc-2,Search\n", None, {"cc-1", "cc-2"}),  # first column
        ("Name,Code\nPayments,cc-1\n", "code", {"cc-1"}),  # explicit column
        ("\ufeffcostcenter\ncc-1\n", None, {"cc-1"}),  # spreadsheet byte-order mark
        ('costcenter,note\n"cc-1","multi\nline"\ncc-2,x\n', None, {"cc-1", "cc-2"}),
        ("\n\ncostcenter\r\ncc-1\r\n", None, {"cc-1"}),
    ],
)
def test_allow_list_csv_forms(tmp_path: Path, text: str, column: str | None, expected: set[str]) -> None:
    allowed = load_allowed_values(csv_file(tmp_path, text), "costcenter", column)
    assert set(allowed.canonical.values()) == expected


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("", None, "cmdb.csv: allowed values for costcenter: empty file (expected a header row)"),
        ("costcenter\n\n", None, "cmdb.csv: allowed values for costcenter: no values below the header"),
        ("a,b\n1,2\n", "costcenter",
         "cmdb.csv:1: no column named 'costcenter' in the header (columns: a, b)"),
        ("id,costcenter\n1,cc-1\n2\n", None,
         "cmdb.csv:3: row has 1 column(s), the costcenter values are in column 2"),
        ('costcenter\n"cc-1\n', None, "cmdb.csv:2: invalid CSV: unexpected end of data"),
        ("costcenter\ncc-1\n__invalid__\n", None, "cmdb.csv:3: __invalid__ is reserved, not a costcenter"),
    ],
)
def test_allow_list_errors_name_file_and_line(
    tmp_path: Path, text: str, column: str | None, expected: str
) -> None:
    path = csv_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        model(costcenter={"allowed_values_file": str(path), "allowed_values_column": column})
    message = str(info.value)
    assert "\n" not in message
    assert message == f"{tmp_path}/{expected}"


def test_unreadable_allow_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.csv: cannot read allowed values for team: No such file"):
        model(team={"allowed_values_file": str(tmp_path / "missing.csv")})
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"team\ncaf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.csv: allowed values for team are not UTF-8 \(byte 8\)"):
        model(team={"allowed_values_file": str(bad)})


def test_every_key_resolves(tmp_path: Path) -> None:
    got = OrgModel(OrgConfig()).resolve("deployment", {})
    assert tuple(got.values) == ORG_KEYS == tuple(got.sources)
