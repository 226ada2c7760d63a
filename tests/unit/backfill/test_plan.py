"""Pure parts of the backfill: identities, planning (with the retention model) and refusals, AIMD."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.backfill.plan import BackfillRefused, Options, plan_periods
from exporter.backfill.runner import AdaptiveLimit
from exporter.backfill.state import BackfillCheckpoint, Published, resolve_ids
from exporter.clock import FakeClock
from exporter.config import Config, load_config
from exporter.errors import ConfigError
from exporter.periods import Period
from exporter.pipeline import Prior
from exporter.sysdig import Retention

H = 3600
D = 86400
NOW = 1_794_009_600 + 6 * H + 300


def config(**sections: Any) -> Config:
    return load_config(environ={}, overrides={"periods": {"settle_delay": "2m"}, **sections})


def hour(i: int) -> Period:
    start = 1_794_009_600 + i * H
    return Period(start, start + H)


def plan(periods: list[Period], cfg: Config | None = None, *, published: Any = None,
         live_end: int | None = None, timelines: Any = None, **opts: Any) -> Any:
    cfg = cfg or config()
    o = Options(periods[0].start, periods[-1].end, **opts)
    reader = None if timelines is None else Timelines(timelines)
    retention = Retention(reader, clock=FakeClock(NOW), resolution=cfg.periods.resolution)
    return plan_periods(periods, cfg=cfg, retention=retention,
                        published=published or {}, now=NOW, live_end=live_end, live_id="live", opts=o)


class Timelines:
    """A `TimelinesReader` serving one body."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def timelines(self) -> Any:
        return self.body


@pytest.mark.parametrize(("configured", "flag", "backfill_id", "expected"), [
    ("chargeback", None, None, ("chargeback", "chargeback-backfill")),
    ("chargeback-backfill", None, None, ("chargeback", "chargeback-backfill")),
    ("chargeback", None, "october-fix", ("chargeback", "october-fix")),
    ("chargeback", "manual-1", "october-fix", ("chargeback", "manual-1")),
    ("chargeback-backfill", "manual-1", None, ("chargeback", "manual-1")),
])
def test_transactional_ids(configured: str, flag: str | None, backfill_id: str | None,
                           expected: tuple[str, str]) -> None:
    cfg = config(kafka={"transactional_id": configured}, backfill={"transactional_id": backfill_id})
    assert resolve_ids(cfg, flag) == expected


def test_the_live_id_is_refused_as_the_backfill_id() -> None:
    cfg = config(kafka={"transactional_id": "chargeback"})
    with pytest.raises(ConfigError, match="is the live worker's"):
        resolve_ids(cfg, "chargeback")


def test_plan_steps_come_from_the_retention_model() -> None:
    us = 1_000_000
    body = {"agents": [
        {"from": (NOW - 2 * D) * us, "to": NOW * us, "sampling": 60 * us},
        {"from": (NOW - 6 * H) * us, "to": NOW * us, "sampling": 10 * us},
        {"from": None, "to": None, "sampling": 3600 * us},
    ]}
    steps = [p.available_step for p in plan([hour(1), hour(2), hour(5)], timelines=body,
                                            allow_coarse=True)]
    assert steps == [10, 10, 10]  # this tenant keeps 10 s data for 6 h
    [old] = plan([hour(-24)], timelines=body, allow_coarse=True)
    assert old.step == 60
    [ancient] = plan([hour(-24 * 400)], timelines=body, allow_coarse=True, allow_old=True)
    assert ancient.step == 3600
    [p] = plan([hour(-24)], config(periods={"resolution": "10m", "settle_delay": "2m"}),
               timelines=body)
    assert p.step == 600  # never finer than periods.resolution


def test_documented_table_steps_and_its_end() -> None:
    assert plan([hour(-2)])[0].step == 60  # 8 h old: beyond the documented 4 h of 10 s data
    assert plan([hour(-24 * 10)], allow_old=True)[0].step == 600
    with pytest.raises(BackfillRefused, match="beyond Sysdig's retention"):
        plan([hour(-24 * 451)], allow_old=True)


def test_plan_pins_the_published_step_and_carries_the_priors() -> None:
    published = {(hour(5), "a"): Published(2, "h-a", "max-request-usage/pod/10s/v1"),
                 (hour(4), "b"): Published(0, "h-b", "max-request-usage/pod/10s/v1")}
    plans = plan([hour(4), hour(5)], published=published)
    assert [(p.period, p.step, dict(p.prior)) for p in plans] == [
        (hour(4), 10, {"b": Prior(0, "h-b")}), (hour(5), 10, {"a": Prior(2, "h-a")})]


def test_plan_refuses_what_would_double_count() -> None:
    container = {(hour(5), "a"): Published(0, "h", "max-request-usage/container/10s/v1")}
    with pytest.raises(BackfillRefused, match="grain pod"):
        plan([hour(5)], published=container)
    mixed = {(hour(5), "a"): Published(0, "h", "max-request-usage/pod/60s/v1"),
             (hour(5), "b"): Published(0, "h", "max-request-usage/pod/600s/v1")}
    with pytest.raises(BackfillRefused, match="different steps per cluster"):
        plan([hour(5)], published=mixed)


def test_plan_refuses_beyond_retention_even_with_allow_old() -> None:
    with pytest.raises(BackfillRefused, match="beyond Sysdig's retention"):
        plan([hour(-24 * 460)], allow_old=True)


def test_allow_coarse_from_configuration() -> None:
    cfg = config(periods={"length": "10m", "settle_delay": "2m"}, backfill={"allow_coarse": True})
    start = 1_794_009_600 - 20 * D
    [p] = plan([Period(start, start + 600)], cfg)
    assert (p.step, p.available_step, p.coarse) == (600, 3600, True)


def test_resumption_needs_the_same_range_and_a_point_inside_it() -> None:
    cp = BackfillCheckpoint(end=300, start=100, stop=500)
    assert cp.resumes(100, 500)
    assert not cp.resumes(100, 600) and not cp.resumes(0, 500)
    assert not BackfillCheckpoint(500, 100, 500).resumes(100, 500), "a completed range starts afresh"
    assert not BackfillCheckpoint(300, None, None).resumes(100, 500), "no range stored: afresh"


def test_adaptive_limit_halves_once_per_storm_and_grows_by_one() -> None:
    limit = AdaptiveLimit(8)
    limit.throttled()
    limit.throttled()  # same storm: no success in between
    assert (limit.limit, limit.throttles) == (4, 2)
    limit.succeeded()
    limit.throttled()
    assert limit.limit == 2  # 4 + 1 = 5, halved to 2
    for _ in range(10):
        limit.succeeded()
    assert (limit.limit, limit.lowest) == (8, 2)
    limit = AdaptiveLimit(1)
    limit.throttled()
    assert limit.limit == 1
    with limit.slot():
        pass
