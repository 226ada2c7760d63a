"""`chargeback-exporter check-sysdig`: is this Sysdig tenant safe to bill from?

Run once with the configured URL and token before the first bill. Each check asks Sysdig what
the exporter relies on and reports ok, warn or FAIL with its evidence; the command prints the
table and exits 0 when billing is safe, or 1 naming the failing checks. What each check means
and what to do when it fails: docs/sysdig.md, "check-sysdig".
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from rich.table import Table

from exporter.clock import Clock
from exporter.commands import add_common, config_from_args
from exporter.config import Config
from exporter.errors import ExporterError, SourceQueryError
from exporter.model import RESOURCES
from exporter.org import OrgModel
from exporter.periods import Period, align_down, format_duration, iso
from exporter.queries import (
    CPU_USED,
    MEM_USED,
    POD_GRAIN,
    REQUEST_CONTAINER_LABEL,
    REQUESTS,
    USAGE_CONTAINER_LABEL,
    cluster_matchers,
    grouped,
    not_running,
    plan,
    re_escape,
    selector,
)
from exporter.sysdig import SERIES_CAP, SysdigClient, parse_vector, read_team_scope
from exporter.sysdig.retention import parse_timelines
from exporter.wiring import build_client, gpu_names, storage_names

Result = Literal["ok", "warn", "FAIL"]
SAMPLE_INTERVAL = 10  # Sysdig's native sample interval (seconds)
DAY = 86400
# An answer this close to Sysdig's cap is reported as a warning before it becomes a failure.
WARN_SHARE = Decimal("0.8")


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the table: what was checked, the verdict and the evidence."""

    name: str
    result: Result
    evidence: str


class PreflightFailed(ExporterError):
    """At least one check failed: billing from this tenant is not safe as configured."""


def last_period(now: float, cfg: Config) -> Period:
    """The last period the worker could bill at `now`: closed and past its settle delay."""
    length = cfg.periods.length
    end = align_down(int(now) - cfg.periods.settle_delay, length)
    return Period(end - length, end)


class Preflight:
    """The checks of `check-sysdig` against one tenant, in the order they are printed.

    Every instant is taken a settle delay before `clock`'s now, when Sysdig has the samples.
    """

    def __init__(self, client: SysdigClient, cfg: Config, clock: Clock) -> None:
        self._client = client
        self._cfg = cfg
        self._now = clock.time()
        self._where = f"Sysdig {cfg.sysdig.url}"
        # A 10 s boundary a settle delay ago; queries sample at a step's middle, as billing does.
        self._settled = align_down(int(self._now) - cfg.periods.settle_delay, SAMPLE_INTERVAL)
        self._at = self._settled - SAMPLE_INTERVAL // 2
        self._m = cluster_matchers(cfg.clusters)
        self._raw: dict[str, dict[str, int]] = {}

    def run(self) -> list[Check]:
        """Every check; a failed `auth` stops the rest (they would all fail the same way)."""
        checks = self._guard("auth", self.auth)
        if checks[0].result == "FAIL":
            return checks
        steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
            ("team scope", self.team_scope), ("stamping", self.stamping),
            ("sample grid", self.sample_grid), ("retention", self.retention),
            ("metrics", self.metrics), ("container labels", self.container_labels),
            ("workload kinds", self.workload_kinds), ("completed pods", self.completed_pods),
            ("gpu names", self.gpu_names), ("storage names", self.storage_names),
            ("1d subquery", self.day_subquery), ("headroom", self.headroom)]
        for name, step in steps:
            checks.extend(self._guard(name, step))
        return checks

    @staticmethod
    def _guard(name: str, step: Callable[[], Check | list[Check]]) -> list[Check]:
        """The step's rows; an error of ours is its one FAIL row, with the error's line."""
        try:
            found = step()
        except ExporterError as exc:
            return [Check(name, "FAIL", str(exc))]
        return found if isinstance(found, list) else [found]

    # ------------------------------------------------------------------ helpers
    def _sel(self, metric: str, extra: Sequence[tuple[str, str, str]] = ()) -> str:
        return selector(metric, [*self._m, *extra])

    def _vector(self, query: str, at: float, what: str) -> list[tuple[dict[str, str], Decimal]]:
        raw = self._client.query_instant(query, at, f"check-sysdig {what}")
        return parse_vector(raw, at, f"{self._where} (check-sysdig {what})")

    def _count(self, query: str, what: str, at: float | None = None) -> int:
        """The value of a one-series count answer; an empty answer counts 0."""
        answer = self._vector(query, self._at if at is None else at, what)
        return int(sum((v for _, v in answer), Decimal(0)))

    # ------------------------------------------------------------------ checks
    def auth(self) -> Check:
        self._vector("vector(1)", self._at, "auth")
        return Check("auth", "ok", f"the token is accepted: {self._where} answers PromQL")

    def team_scope(self) -> Check:
        scope = read_team_scope(self._client)
        if scope.whole_fleet:
            return Check("team scope", "ok", f"{scope.describe()}: it sees the whole fleet")
        allowed = self._cfg.sysdig.allow_scoped_team
        note = ("allowed by sysdig.allow_scoped_team: only what the team sees is billed" if allowed
                else "bills would be partial; use a service account of an unscoped team")
        return Check("team scope", "warn" if allowed else "FAIL", f"{scope.describe()}; {note}")

    def stamping(self) -> Check:
        query = f"count({self._sel(CPU_USED)})"
        t = self._settled - 7  # on no step of 10 s or 60 s: stamping shows
        raw = self._client.query_instant(query, t, "check-sysdig stamping (instant)")
        stamps = sorted({float(s["value"][0]) for s in raw if isinstance(s, dict)
                         and isinstance(s.get("value"), list) and s["value"]})
        if not stamps:
            return Check("stamping", "FAIL", f"{query} at {_instant(t)} answered no series: "
                                             "nothing to compare")
        wrong = [s for s in stamps if not math.isclose(s, t, abs_tol=1e-3)]
        if wrong:
            return Check("stamping", "FAIL",
                         f"the instant answer is stamped at {_instant(wrong[0])}, asked for "
                         f"{_instant(t)}: billing reads instant answers at the instant asked")
        start, step = t - 300, 60
        series = self._client.query_range(query, start, t, step, "check-sysdig stamping (range)")
        points = sorted({float(p[0]) for s in series if isinstance(s, dict)
                         for p in s.get("values") or () if isinstance(p, list) and p})
        if points and all(p % step == 0 for p in points):
            how = f"aligned to the step (Sysdig): {_num(points[0])} ... {_num(points[-1])}"
        elif points and all((p - start) % step == 0 for p in points):
            how = f"stamped from start (Prometheus): {_num(points[0])} ... {_num(points[-1])}"
        else:
            how = f"stamped at {', '.join(_num(p) for p in points[:4]) or 'nothing'}"
        return Check("stamping", "ok",
                     f"the instant answer is stamped at the instant asked ({_num(t)}); a range "
                     f"answer over [{_num(start)}, {_num(t)}] every {step} s is {how}; billing "
                     "reads no range answer")

    def sample_grid(self) -> Check:
        found = self._vector(f"topk(1, count_over_time({self._sel(CPU_USED)}[5m]))", self._settled,
                             "sample grid (one series)")
        if not found:
            return Check("sample grid", "FAIL", f"no {CPU_USED} series in the last 5 minutes")
        labels = {k: v for k, v in found[0][0].items() if k != "__name__"}
        query = selector(CPU_USED, sorted((k, "=", v) for k, v in labels.items())) + "[2m]"
        result = self._client.query_instant(query, self._settled, "check-sysdig sample grid",
                                            answer="matrix")
        if not result or not isinstance(result[0], dict):
            raise SourceQueryError(f"{self._where} (check-sysdig sample grid): no raw samples "
                                   "(a matrix answer) for one series over 2 minutes")
        stamps = [float(p[0]) for p in result[0].get("values") or () if isinstance(p, list) and p]
        who = "/".join(labels.get(k, "?") for k in ("kube_pod_name", REQUEST_CONTAINER_LABEL,
                                                    USAGE_CONTAINER_LABEL) if k in labels)
        gaps = sorted({round(b - a, 3) for a, b in itertools.pairwise(stamps)})
        off = sorted({round(s % SAMPLE_INTERVAL, 3) for s in stamps})
        seen = (f"{len(stamps)} raw samples of {who or 'one series'} in the 2 minutes before "
                f"{_instant(self._settled)}")
        if len(stamps) < 2 or gaps != [SAMPLE_INTERVAL] or off != [0]:
            spacing = ", ".join(f"{_num(g)} s" for g in gaps) or "none"
            return Check("sample grid", "FAIL",
                         f"{seen}: spacing {spacing}, offsets {', '.join(_num(o) for o in off)} s; "
                         f"billing samples a 10 s grid on multiples of 10 s")
        return Check("sample grid", "ok", f"{seen}: 10 s apart, on multiples of 10 s")

    def retention(self) -> Check:
        body = self._client.timelines("check-sysdig retention timelines")
        if body is None:
            return Check("retention", "warn",
                         "Sysdig serves no retention timelines (/api/history/timelines/ HTTP 404); "
                         "the exporter falls back on Sysdig's documented table")
        # The worker's own model of the timelines: this check sees what billing will see.
        tiers = parse_timelines(body, self._now)
        res = self._cfg.periods.resolution
        need = self._cfg.periods.length + self._cfg.periods.settle_delay
        shown = "; ".join(f"{format_duration(t.step)}: {_reach(t.window)}" for t in tiers)
        found = [t.window for t in tiers if t.step == res]
        if not found:
            return Check("retention", "FAIL", f"no {format_duration(res)} timeline ({shown})")
        back = math.inf if found[0] is None else found[0]
        return Check("retention", "ok" if back >= need else "FAIL",
                     f"{format_duration(res)} data reaches back {_reach(found[0])}; one "
                     f"period + settle delay needs {format_duration(need)} ({shown})")

    def metrics(self) -> list[Check]:
        out = []
        wanted: list[tuple[str, str, tuple[tuple[str, str, str], ...]]] = [
            (f"metric {CPU_USED}", CPU_USED, ()), (f"metric {MEM_USED}", MEM_USED, ()),
            (f'metric {REQUESTS}{{resource="cpu"}}', REQUESTS, (("resource", "=", "cpu"),)),
            (f'metric {REQUESTS}{{resource="memory"}}', REQUESTS, (("resource", "=", "memory"),))]
        idle = self._cfg.idle
        # Idle capacity reads a metric whose Sysdig name is configurable (docs/queries.md,
        # "Idle capacity"): every cluster that runs workloads must show it, per resource.
        allocatable = [(f'metric {idle.metric}{{resource="{name}"}}', idle.metric,
                        (("resource", "=", name),))
                       for name in idle.resources.values()] if idle.enabled else []
        # A GPU resource's allocatable is needed where pods request it: a cluster without GPU
        # nodes offers none, and has no GPU charges for it to be the rest of.
        gpu_of = {f'metric {idle.metric}{{resource="{name}"}}': res
                  for res, name in idle.resources.items() if res not in RESOURCES}
        for name, metric, extra in (*wanted, *allocatable):
            counts = {lb.get("kube_cluster_name", ""): int(v) for lb, v in self._vector(
                f"count by (kube_cluster_name) ({self._sel(metric, extra)})", self._at, name)}
            self._raw[name] = counts
            if name in gpu_of:
                out.append(self._gpu_allocatable(name, gpu_of[name], counts))
                continue
            missing = [c for c in self._cfg.clusters if c not in counts]
            per = ", ".join(f"{c or '(no cluster)'} {n:,}" for c, n in sorted(counts.items()))
            if not counts:
                out.append(Check(name, "FAIL", f"no series at {_instant(self._at)}: the metric is "
                                               "missing or not visible to this token"))
            elif missing:
                out.append(Check(name, "FAIL", f"no series for configured cluster(s) "
                                               f"{', '.join(missing)} ({per})"))
            elif (metric == idle.metric and (lacking := sorted(
                    set(self._raw[f"metric {CPU_USED}"]) - set(counts)))):
                out.append(Check(name, "FAIL", f"no series for cluster(s) {', '.join(lacking)}, "
                                               f"which run workloads ({per}); idle.metric and "
                                               "idle.resources name it on this tenant"))
            else:
                out.append(Check(name, "ok", f"{sum(counts.values()):,} series in {len(counts)} "
                                             f"cluster(s): {per}"))
        return out

    def _gpu_allocatable(self, name: str, resource: str, counts: dict[str, int]) -> Check:
        """The allocatable row of GPU resource `resource`: it fails when a cluster whose pods
        request it (under a `resources.gpu.resources` name charged as it) has no series."""
        requested = sorted(r for r, charged in self._cfg.resources.gpu.resources.items()
                           if charged == resource)
        names = "|".join(re_escape(r) for r in requested)
        asking = {lb.get("kube_cluster_name", "") for lb, _ in self._vector(
            f"count by (kube_cluster_name) ({self._sel(REQUESTS, [('resource', '=~', names)])})",
            self._at, name)}
        per = ", ".join(f"{c or '(no cluster)'} {n:,}" for c, n in sorted(counts.items()))
        lacking = sorted(asking - set(counts))
        if lacking:
            return Check(name, "FAIL", f"no series for cluster(s) {', '.join(lacking)}, which "
                                       f"request {resource} ({per or 'none'}); idle.metric and "
                                       "idle.resources name it on this tenant")
        if not counts:
            return Check(name, "ok", f"no series, and no cluster requests {resource}")
        return Check(name, "ok", f"{sum(counts.values()):,} series in {len(counts)} "
                                 f"cluster(s): {per}")

    def container_labels(self) -> Check:
        usage = self._count(f"count({self._sel(CPU_USED, [(USAGE_CONTAINER_LABEL, '!=', '')])})",
                            "container label on usage")
        requests = self._count(
            f"count({self._sel(REQUESTS, [(REQUEST_CONTAINER_LABEL, '!=', '')])})",
            "container label on requests")
        seen = (f"{usage:,} usage series carry {USAGE_CONTAINER_LABEL}, {requests:,} request "
                f"series carry {REQUEST_CONTAINER_LABEL}")
        if usage and requests:
            return Check("container labels", "ok", seen)
        if self._cfg.periods.grain == "container":
            return Check("container labels", "FAIL",
                         f"{seen}: periods.grain container needs both to join usage and requests")
        return Check("container labels", "warn", f"{seen}: only periods.grain container needs them")

    def workload_kinds(self) -> Check:
        kinds = {lb.get("kube_workload_type", "") for lb, _ in self._vector(
            f"count by (kube_workload_type) ({self._sel(CPU_USED)})", self._at, "workload kinds")}
        shown = ", ".join(sorted(k or "(none)" for k in kinds)) or "none"
        absent = [k for k in ("job", "cronjob") if k not in kinds]
        if absent:
            return Check("workload kinds", "warn",
                         f"seen now: {shown}; no {' or '.join(absent)} series now, so how Sysdig "
                         "labels them is not checked")
        return Check("workload kinds", "ok", f"seen now: {shown}")

    def completed_pods(self) -> Check:
        # The billing queries' own test of a running pod (exporter.queries.running).
        step = f"last_over_time({{}}[{SAMPLE_INTERVAL // 2}s])"
        req = step.format(self._sel(REQUESTS, [("resource", "=", "cpu")]))
        used = grouped(CPU_USED, self._m, POD_GRAIN, step)
        total = self._count(f"count({req})", "completed pods", self._settled)
        alone = self._count(f"count{not_running(req, used)}", "completed pods", self._settled)
        if alone:
            return Check("completed pods", "warn",
                         f"{alone:,} of {total:,} cpu request series at {_instant(self._settled)} "
                         "belong to pods with no usage sample then (Pending, Completed, Evicted, "
                         "Failed): their requests are not billed (docs/queries.md)")
        return Check("completed pods", "ok",
                     f"every one of {total:,} cpu request series at {_instant(self._settled)} "
                     "belongs to a pod with a usage sample then")

    def _labelled(self, metric: str, label: str, what: str) -> tuple[int, int]:
        """(series of `metric` now, of those the ones carrying `label`), over the last 5 minutes
        so that a metric scraped less often than every 10 s is still seen."""
        total = self._count(f"count(last_over_time({self._sel(metric)}[5m]))", what)
        carrying = self._count(
            f"count(last_over_time({self._sel(metric, [(label, '!=', '')])}[5m]))", what)
        return total, carrying

    def gpu_names(self) -> list[Check]:
        """GPU resources (`resources.gpu`): every GPU-like `resource` that kube-state-metrics
        reports is configured (one that is not would go unbilled), and the utilisation metric
        names the pods holding the devices. Information only past the first row."""
        gpu = self._cfg.resources.gpu
        if not gpu.enabled:
            return [Check("gpu names", "ok", "resources.gpu.enabled is false: GPUs not billed")]
        seen = {lb.get("resource", ""): int(v) for lb, v in self._vector(
            f"count by (resource) (last_over_time({self._sel(REQUESTS)}[5m]))", self._settled,
            "gpu names")}
        configured = set(gpu.resources)
        unbilled = sorted(r for r in seen if r not in configured and _gpu_like(r))
        found = sorted(r for r in seen if r in configured)
        shown = ", ".join(f"{r} {seen[r]:,}" for r in found) or "none now"
        out: list[Check] = []
        if unbilled:
            out.append(Check("gpu names", "FAIL",
                             f"GPU resource(s) {', '.join(unbilled)} requested on the tenant are "
                             "not in resources.gpu.resources: their GPUs would not be billed "
                             f"(configured and seen: {shown})"))
        else:
            absent = sorted(configured - set(found))
            note = (f"; not requested now: {', '.join(absent)} (a wrong name, or no such GPU "
                    "in use)" if absent else "")
            out.append(Check("gpu names", "ok" if found else "warn",
                             f"request series of configured GPU resources: {shown}{note}"))
        metric = gpu.utilization_metric
        if metric is None:
            return out
        pods = self._labelled(metric, gpu.utilization_pod_label, "gpu utilization")
        nss = self._labelled(metric, gpu.utilization_namespace_label, "gpu utilization")
        evidence = (f"{pods[0]:,} {metric} series, {pods[1]:,} with "
                    f"{gpu.utilization_pod_label}, {nss[1]:,} with "
                    f"{gpu.utilization_namespace_label}")
        if not pods[0] or not pods[1] or not nss[1]:
            # Information only: utilisation never changes a charge (docs/queries.md).
            out.append(Check("gpu utilization", "warn",
                             f"{evidence}: GPU utilisation is reported as 0 (set "
                             "resources.gpu.utilization_metric and its labels, or null)"))
        else:
            out.append(Check("gpu utilization", "ok", evidence))
        return out

    def storage_names(self) -> list[Check]:
        """Claims (`resources.storage`): each configured metric has series and carries the
        claim label, and the info metric the class label. One row per name missing; any of
        them fails, since claims would then be unbilled, merged or priced at another class."""
        st = self._cfg.resources.storage
        if not st.enabled:
            return [Check("storage names", "ok",
                          "resources.storage.enabled is false: claims not billed")]
        out: list[Check] = []
        needs = ((st.capacity_metric, "capacity_metric", (st.claim_label, "claim_label")),
                 (st.info_metric, "info_metric", (st.class_label, "class_label")),
                 (st.mount_metric, "mount_metric", (st.claim_label, "claim_label")))
        for metric, key, (label, label_key) in needs:
            total, carrying = self._labelled(metric, label, f"storage {metric}")
            if not total:
                out.append(Check(f"metric {metric}", "FAIL",
                                 f"no series in the 5 minutes before {_instant(self._settled)}: "
                                 f"set resources.storage.{key} to the tenant's name (or "
                                 "resources.storage.enabled: false)"))
            elif not carrying:
                out.append(Check(f"metric {metric}", "FAIL",
                                 f"none of its {total:,} series carries {label}: set "
                                 f"resources.storage.{label_key} to the tenant's label name"))
            else:
                out.append(Check(f"metric {metric}", "ok",
                                 f"{total:,} series, {carrying:,} with {label}"))
        return out

    def day_subquery(self) -> Check:
        step = self._cfg.periods.resolution
        want = DAY // step
        inner = f"count(last_over_time({self._sel(CPU_USED)}[{step // 2}s]))"
        got = self._count(f"count_over_time(({inner})[1d:{step}s])", "1d subquery")
        seen = (f"a one-day subquery every {format_duration(step)} sees {got:,} of {want:,} steps "
                f"with samples, ending {_instant(self._at)}")
        if got == want:
            return Check("1d subquery", "ok", seen)
        if self._cfg.periods.length == DAY:
            return Check("1d subquery", "FAIL", f"{seen}: periods.length 1d needs all of them")
        return Check("1d subquery", "warn", f"{seen}: only periods.length 1d needs all of them")

    def headroom(self) -> Check:
        cfg = self._cfg
        period = last_period(self._now, cfg)
        step = cfg.periods.resolution
        qplan = plan(period.length, step, cfg.periods.grain, cfg.clusters,
                     OrgModel(cfg.org).label_columns(), gpu=gpu_names(cfg),
                     storage=storage_names(cfg),
                     allocatable=tuple(cfg.idle.resources.values()) if cfg.idle.enabled else (),
                     allocatable_metric=cfg.idle.metric)
        at = period.end - step / 2
        sizes = {name: self._count(f"count({query})", f"headroom {name}", at)
                 for name, query in qplan.all()}
        name, largest = max(sizes.items(), key=lambda kv: kv[1])
        share = Decimal(largest) / SERIES_CAP
        raw = [(n, c, k) for n, per in self._raw.items() for c, k in per.items()]
        biggest = max(raw, key=lambda r: r[2]) if raw else None
        inputs = (f"; largest input: {biggest[2]:,} {biggest[0].removeprefix('metric ')} series in "
                  f"{biggest[1] or '(no cluster)'}" if biggest else "")
        seen = (f"largest answer of the plan for {period}: {name}, {largest:,} series "
                f"({share:.1%} of Sysdig's {SERIES_CAP:,} result segments); "
                f"{', '.join(f'{n} {s:,}' for n, s in sizes.items())}; every query of the plan "
                f"aggregates, so the 1,000-series limit of queries without aggregation does not "
                f"apply{inputs}")
        if largest >= SERIES_CAP:
            return Check("headroom", "FAIL", f"{seen}: split the fleet with sysdig.clusters")
        if share >= WARN_SHARE:
            return Check("headroom", "warn", f"{seen}: close to the cap; plan sysdig.clusters")
        return Check("headroom", "ok", seen)


# Extended resources that name a GPU or an accelerator slice, as kube-state-metrics v2 spells
# them: `nvidia_com_gpu`, `nvidia_com_mig_1g_5gb`, `amd_com_gpu`, `gpu_intel_com_i915`, ...
_GPU_HINTS = ("gpu", "nvidia_com_", "amd_com_", "habana_ai_", "aws_amazon_com_neuron")


def _gpu_like(resource: str) -> bool:
    return any(h in resource for h in _GPU_HINTS)


def _reach(window: int | None) -> str:
    return "without limit" if window is None else format_duration(max(0, window))


def _num(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else repr(float(t))


def _instant(t: float) -> str:
    return f"{_num(t)} ({iso(t)})"


def render(checks: Sequence[Check], url: str) -> Table:
    """The table `check-sysdig` prints."""
    table = Table(title=f"check-sysdig: {url}", show_lines=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("evidence", overflow="fold")
    for c in checks:
        table.add_row(c.name, c.result, c.evidence)
    return table


def cmd_check_sysdig(args: argparse.Namespace, *, clock: Clock) -> int:
    """Print the table; 0 when no check failed, else `PreflightFailed` naming the failures."""
    from exporter.report import print_table

    cfg = config_from_args(args)
    checks = Preflight(build_client(cfg, clock), cfg, clock).run()
    print_table(render(checks, cfg.sysdig.url), sys.stdout.write)
    failed = [c.name for c in checks if c.result == "FAIL"]
    if failed:
        raise PreflightFailed(f"{cfg.sysdig.url} is not safe to bill from as configured: "
                              f"FAIL in {', '.join(failed)} (see the table)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check-sysdig", help="preflight: is the configured Sysdig tenant safe to bill from?",
        description="Ask the configured Sysdig what billing relies on (token, team scope, "
                    "stamping, sample grid, retention, metrics and labels, limits) and print "
                    "one row per check. Exit 0 when safe, 1 naming the failing checks.")
    add_common(p)
    p.set_defaults(handler=cmd_check_sysdig)
