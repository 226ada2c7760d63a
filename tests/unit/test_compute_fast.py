"""The fast paths of org resolution, unit conversion and label coverage give exactly what the
straightforward algorithms give.

Each `_ref_*` function below is the plain algorithm the module used before its fast path (read
every label per workload, enter a 60-digit `localcontext` per share, ...). Properties compare the
two on random inputs by exact `repr`/`str`, so a changed exponent, rounding or error counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exporter.org as org_module
from exporter.config import OrgConfig, load_config
from exporter.coverage import SHARE_QUANTUM, label_coverage, share
from exporter.errors import ConfigError
from exporter.model import (
    GIB,
    INVALID,
    ORG_KEYS,
    RESOURCES,
    UNALLOCATED,
    ChargeLine,
    KeyCoverage,
    LabelCoverage,
    Offender,
    OrgAssignment,
    PeriodUsage,
    Resource,
    SampleSums,
    WorkloadKey,
    WorkloadUsage,
)
from exporter.org import RESERVED_VALUES, OrgModel, sysdig_label_name
from exporter.periods import Period
from exporter.queries import WORKLOAD_KINDS
from exporter.units import charge_lines, method_id, to_unit_hours

PERIOD = Period(1_767_225_600, 1_767_229_200)
KINDS = (*WORKLOAD_KINDS, "replicaset", "pod")  # the last two are kinds Sysdig does not name
# Label names per key are disjoint, so no random config collides across keys.
NAMES = {
    "costcenter": ("costcenter", "cost-center", "cost_center", "cc"),
    "businessunit": ("businessunit", "bu"),
    "department": ("department", "dept"),
    "team": ("team", "squad", "team.name"),
}
OTHER_NAMES = ("env", "app.kubernetes.io/part-of", "tier")
VALUES = ("cc-1", "CC-1", " cc-2 ", "cc-3", "platform", "", "   ", UNALLOCATED, INVALID)
ALLOWED_CSV = "costcenter\ncc-1\nCc-2\nplatform\n"


# --- reference algorithms ----------------------------------------------------------------------


def _ref_names(primary: Sequence[str], aliases: Sequence[str]) -> tuple[str, ...]:
    if not primary:
        return ()
    return tuple(dict.fromkeys(sysdig_label_name(n.strip()) for n in (*primary, *aliases)))


def _ref_lookup(labels: Mapping[str, str | None], columns: list[str]) -> str | None:
    for col in columns:
        v = (labels.get(col) or "").strip()
        if v:
            return v
    return None


def _ref_resolve(
    config: OrgConfig, model: OrgModel, kind: str, labels: Mapping[str, str | None]
) -> OrgAssignment:
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    original: dict[str, str] = {}
    kinds = (kind,) if kind in WORKLOAD_KINDS else WORKLOAD_KINDS
    for key in ORG_KEYS:
        kc = config.keys[key]
        allowed = model.allowed_values(key)
        workload = _ref_names(kc.workload_labels, kc.aliases)
        namespace = _ref_names(kc.namespace_labels, kc.aliases)
        default = kc.default.strip() if kc.default and kc.default.strip() else None
        if default is not None and allowed is not None:
            default = allowed.lookup(default)
        found = _ref_lookup(labels, [f"kube_{k}_label_{n}" for n in workload for k in kinds])
        source = "workload"
        if found is None:
            found = _ref_lookup(labels, [f"kube_namespace_label_{n}" for n in namespace])
            source = "namespace"
        if found is None and default is not None:
            found, source = default, "default"
        if found is None:
            values[key], sources[key] = UNALLOCATED, "unallocated"
            continue
        sources[key] = source
        charged = found if allowed is None else allowed.lookup(found)
        if charged is None or found in RESERVED_VALUES:
            values[key], original[key] = INVALID, found
        else:
            values[key] = charged
    return OrgAssignment(values=values, sources=sources, original=original)


def _ref_other_labels(config: OrgConfig, labels: Mapping[str, str | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in config.other_labels:
        col = sysdig_label_name(name)
        for k in (*WORKLOAD_KINDS, "namespace"):
            v = labels.get(f"kube_{k}_label_{col}")
            if v:
                out[name] = v
                break
        else:
            v = labels.get(col)
            if v:
                out[name] = v
    return out


def _ref_to_unit_hours(value: Decimal, resource: Resource, step: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        hours = value * Decimal(step) / Decimal(3600)
        if resource == "memory":
            hours = hours / Decimal(GIB)
        return +hours


def _ref_share(part: Decimal, total: Decimal) -> Decimal:
    if total == 0:
        return Decimal(0).quantize(SHARE_QUANTUM)
    with localcontext() as ctx:
        ctx.prec = 60
        return (part / total).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_EVEN)


def _ref_label_coverage(lines: Sequence[ChargeLine], top_n: int) -> dict[str, LabelCoverage]:
    totals: dict[str, dict[Resource, Decimal]] = {}
    missing: dict[tuple[str, str, str, Resource], Decimal] = {}
    offenders: dict[tuple[str, str, str, str, Resource], tuple[Decimal, set[str], set[str]]] = {}
    for ln in lines:
        if ln.allocation == "shared-distribution":
            continue
        cluster = ln.workload.cluster
        per_res = totals.setdefault(cluster, {r: Decimal(0) for r in RESOURCES})
        per_res[ln.resource] = per_res.get(ln.resource, Decimal(0)) + ln.chargeable
        bad: set[str] = set()
        invalid: set[str] = set()
        for key in ORG_KEYS:
            value = ln.org.values.get(key, UNALLOCATED)
            if value in (UNALLOCATED, INVALID):
                k = (cluster, key, value, ln.resource)
                missing[k] = missing.get(k, Decimal(0)) + ln.chargeable
                bad.add(key)
                if value == INVALID:
                    invalid.add(key)
        if bad:
            w = ln.workload
            ok = (cluster, w.namespace, w.kind, w.name, ln.resource)
            q, b, inv = offenders.get(ok, (Decimal(0), set(), set()))
            offenders[ok] = (q + ln.chargeable, b | bad, inv | invalid)
    out: dict[str, LabelCoverage] = {}
    for cluster in sorted(totals):
        keys = tuple(
            KeyCoverage(
                org_key=key, resource=res,
                unallocated_share=_ref_share(
                    missing.get((cluster, key, UNALLOCATED, res), Decimal(0)), totals[cluster][res]),
                invalid_share=_ref_share(
                    missing.get((cluster, key, INVALID, res), Decimal(0)), totals[cluster][res]),
            )
            for key in ORG_KEYS for res in RESOURCES
        )
        top: list[Offender] = []
        for res in RESOURCES:
            ranked = sorted(
                ((k, v) for k, v in offenders.items() if k[0] == cluster and k[4] == res and v[0] > 0),
                key=lambda kv: (-kv[1][0], kv[0][1], kv[0][2], kv[0][3]),
            )
            for (_, ns, kind, name, _), (q, b, inv) in ranked[:top_n]:
                top.append(Offender(
                    namespace=ns, workload_kind=kind, workload_name=name, resource=res,
                    chargeable=q, missing_keys=tuple(k for k in ORG_KEYS if k in b),
                    invalid_keys=tuple(k for k in ORG_KEYS if k in inv),
                ))
        out[cluster] = LabelCoverage(cluster=cluster, keys=keys, top_offenders=tuple(top))
    return out


def _outcome(f: Callable[[], object]) -> tuple[str, str]:
    """The exact text of a result, or the type of the error raised: both must match."""
    try:
        return ("ok", repr(f()))
    except ArithmeticError as exc:
        return ("error", type(exc).__name__)


# --- strategies ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def allowed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("allow") / "costcenters.csv"
    path.write_text(ALLOWED_CSV, encoding="utf-8")
    return path


@st.composite
def org_configs(draw: st.DrawFn, allowed_csv: Path) -> OrgConfig:
    keys: dict[str, Any] = {}
    for key in ORG_KEYS:
        names = st.lists(st.sampled_from(NAMES[key]), max_size=3, unique=True)
        kc: dict[str, Any] = {
            "workload_labels": draw(names),
            "namespace_labels": draw(names),
            "aliases": draw(names),
            "default": draw(st.sampled_from([None, "", "  ", "platform", " cc-1 "])),
        }
        if key == "costcenter" and draw(st.booleans()):
            kc["allowed_values_file"] = str(allowed_csv)
            kc["allowed_values_case_sensitive"] = draw(st.booleans())
        keys[key] = kc
    others = draw(st.lists(st.sampled_from(OTHER_NAMES), max_size=3))
    return load_config(environ={}, overrides={"org": {"keys": keys, "other_labels": others}}).org


def _all_columns() -> list[str]:
    names = [sysdig_label_name(n) for ns in (*NAMES.values(), OTHER_NAMES) for n in ns]
    scopes = (*WORKLOAD_KINDS, "namespace")
    return [f"kube_{s}_label_{n}" for n in names for s in scopes] + names


label_maps = st.dictionaries(
    st.sampled_from(_all_columns()), st.one_of(st.none(), st.sampled_from(VALUES)), max_size=10
)


def _model(config: OrgConfig) -> OrgModel | None:
    try:
        return OrgModel(config)
    except ConfigError:
        return None  # e.g. a default the allow-list refuses: covered by tests/org


# --- org resolution ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_resolve_and_other_labels_match_the_plain_algorithm(
    data: st.DataObject, allowed_csv: Path
) -> None:
    config = data.draw(org_configs(allowed_csv))
    model = _model(config)
    if model is None:
        return
    # A few label maps used many times, so memoised answers are exercised as well as fresh ones.
    pool = data.draw(st.lists(st.tuples(st.sampled_from(KINDS), label_maps), min_size=1, max_size=6))
    for i in data.draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=20)):
        kind, labels = pool[i]
        got = model.resolve(kind, dict(labels))
        want = _ref_resolve(config, model, kind, labels)
        assert (dict(got.values), dict(got.sources), dict(got.original)) == (
            dict(want.values), dict(want.sources), dict(want.original))
        assert list(got.values) == list(ORG_KEYS)
        assert dict(model.other_labels(dict(labels))) == _ref_other_labels(config, labels)


def test_equal_labels_give_the_same_assignment_object() -> None:
    model = OrgModel(load_config(environ={}, overrides={"org": {"other_labels": ["env"]}}).org)
    labels = {"kube_namespace_label_team": "t1", "kube_deployment_label_env": "prod", "x": "y"}
    first = model.resolve("deployment", labels)
    # a different map with the same values of the columns read, and an unrelated label changed
    again = model.resolve("deployment", {**labels, "x": "z"})
    assert again is first and first.values["team"] == "t1"
    assert model.other_labels(dict(labels)) is model.other_labels({**labels, "x": "z"})
    assert model.other_labels(labels) == {"env": "prod"}
    # a value that matters, or a kind reading other columns, is resolved afresh
    other = model.resolve("deployment", {**labels, "kube_namespace_label_team": "t2"})
    assert other is not first and other.values["team"] == "t2"
    assert model.resolve("job", {"kube_deployment_label_team": "t3"}).values["team"] == UNALLOCATED
    assert model.resolve("pod", {"kube_deployment_label_team": "t3"}).values["team"] == "t3"


def test_memo_is_bounded_and_answers_stay_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(org_module, "_MEMO_LIMIT", 2)
    config = load_config(environ={}, overrides={"org": {"other_labels": ["env"]}}).org
    model = OrgModel(config)
    maps = [{"kube_job_label_team": f"t{i}", "kube_job_label_env": f"e{i}"} for i in range(5)]
    first = model.resolve("job", maps[0])
    first_other = model.other_labels(maps[0])
    for labels in maps[1:]:
        assert model.resolve("job", labels).values["team"] == labels["kube_job_label_team"]
        assert model.other_labels(labels) == {"env": labels["kube_job_label_env"]}
    # past the limit the memo started over: an equal, new object
    again = model.resolve("job", maps[0])
    assert again is not first and again == first
    other_again = model.other_labels(maps[0])
    assert other_again is not first_other and other_again == first_other


# --- units ------------------------------------------------------------------------------------


wide_decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=0, max_value=Decimal(10) ** 22, places=20),
    st.sampled_from([Decimal(0), Decimal("-0"), Decimal("0E-30"), Decimal("-0E+5"),
                     Decimal("1E+999990"), Decimal(10) ** 59 + 1, Decimal("9" * 70)]),
)
steps = st.one_of(st.sampled_from([1, 10, 15, 30, 60, 300, 3600]), st.integers(1, 86_400))


@settings(max_examples=500, deadline=None)
@given(wide_decimals, st.sampled_from(RESOURCES), steps)
def test_to_unit_hours_matches_the_plain_conversion(
    value: Decimal, resource: Resource, step: int
) -> None:
    want = _outcome(lambda: _ref_to_unit_hours(value, resource, step))
    assert _outcome(lambda: to_unit_hours(value, resource, step)) == want
    # charge_lines passes the step as a Decimal converted once per period
    assert _outcome(lambda: to_unit_hours(value, resource, Decimal(step))) == want


def test_negative_zero_becomes_zero() -> None:
    # Division keeps the sign of a zero; the conversion must not (records carry plain 0).
    cases: list[tuple[Decimal, Resource]] = [(Decimal("-0"), "memory"), (Decimal("-0E-3"), "cpu")]
    for value, resource in cases:
        got = to_unit_hours(value, resource, 10)
        assert got == 0 and not got.is_signed()
    assert str(to_unit_hours(Decimal("-0E-3"), "cpu", 10)) == "0.000"  # exponent kept


sums_strategy = st.builds(
    SampleSums,
    usage=st.decimals(min_value=0, max_value=Decimal(10) ** 15, places=9),
    request=st.decimals(min_value=0, max_value=Decimal(10) ** 15, places=9),
    chargeable=st.decimals(min_value=0, max_value=Decimal(10) ** 15, places=9),
)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_charge_lines_match_the_plain_algorithm(data: st.DataObject, allowed_csv: Path) -> None:
    config = data.draw(org_configs(allowed_csv))
    model = _model(config)
    if model is None:
        return
    step = data.draw(steps)
    workloads = tuple(
        WorkloadUsage(
            WorkloadKey(data.draw(st.sampled_from(["c1", "c2"])), "ns", kind, f"w{i}"),
            data.draw(label_maps),  # type: ignore[arg-type]  # None values as Sysdig gives them
            data.draw(st.dictionaries(st.sampled_from(RESOURCES), sums_strategy)),
        )
        for i, kind in enumerate(data.draw(st.lists(st.sampled_from(KINDS), max_size=8)))
    )
    usage = PeriodUsage(PERIOD, step, "pod", workloads, coverage={"c1": Decimal("0.97")})
    got = charge_lines(usage, model)
    want = [
        (w.key, res, *(str(_ref_to_unit_hours(getattr(w.sums[res], f), res, step))
                       for f in ("usage", "request", "chargeable")),
         dict(_ref_resolve(config, model, w.key.kind, w.labels).values),
         _ref_other_labels(config, w.labels),
         str(usage.coverage.get(w.key.cluster, Decimal(0))))
        for w in workloads for res in ("cpu", "memory") if res in w.sums
    ]
    assert [
        (ln.workload, ln.resource, str(ln.usage), str(ln.request), str(ln.chargeable),
         dict(ln.org.values), dict(ln.labels), str(ln.coverage))
        for ln in got
    ] == want
    assert all(ln.period == PERIOD and ln.method == method_id("pod", step) for ln in got)


# --- label coverage ----------------------------------------------------------------------------


org_assignments = st.builds(
    lambda values: OrgAssignment(values, {k: "workload" for k in values}),
    st.dictionaries(st.sampled_from(ORG_KEYS), st.sampled_from(["cc-1", "t", UNALLOCATED, INVALID])),
)
quantities = st.one_of(
    st.decimals(min_value=0, max_value=Decimal(10) ** 6, places=3),
    # 60 significant digits, as units gives them: sums then round in the caller's context
    st.integers(0, 10**60).map(lambda i: Decimal(i).scaleb(-50)),
    st.just(Decimal("0E-12")),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_label_coverage_matches_the_plain_algorithm(data: st.DataObject) -> None:
    # Few assignments, shared by several lines and also repeated as equal copies.
    assignments = data.draw(st.lists(org_assignments, min_size=1, max_size=4))
    rows = data.draw(st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(["a", "b"]),
            st.sampled_from(["api", "db", "web"]), st.sampled_from(RESOURCES), quantities,
            st.integers(0, len(assignments) - 1), st.booleans(),
            st.sampled_from(["direct", "direct", "shared-distribution"]),
        ),
        max_size=40,
    ))
    lines = [
        ChargeLine(
            period=PERIOD, workload=WorkloadKey(cluster, ns, "deployment", name), resource=res,
            usage=q, request=q, chargeable=q,
            org=assignments[a] if shared else OrgAssignment(
                dict(assignments[a].values), dict(assignments[a].sources)),
            labels={}, coverage=Decimal(1), method="m", allocation=allocation,
        )
        for cluster, ns, name, res, q, a, shared, allocation in rows
    ]
    top_n = data.draw(st.integers(0, 4))
    prec = data.draw(st.sampled_from([28, 12, 60]))  # the caller's context rounds the sums
    with localcontext() as ctx:
        ctx.prec = prec
        got = repr(label_coverage(lines, top_n))
        want = repr(_ref_label_coverage(lines, top_n))
    assert got == want


@settings(max_examples=300, deadline=None)
@given(wide_decimals, wide_decimals)
def test_share_matches_the_plain_division(part: Decimal, total: Decimal) -> None:
    assert _outcome(lambda: share(part, total)) == _outcome(lambda: _ref_share(part, total))
