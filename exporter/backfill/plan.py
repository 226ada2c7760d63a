"""Planning a backfill: which periods, measured at which step, and what is refused.

Pure: from the options, the state read back by `state` and the retention model, one
`PeriodPlan` per period (its step and what was published for it before), or `BackfillRefused`
naming the first offending period and the flag that would allow it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.backfill.state import Published
from exporter.config import Config
from exporter.errors import ConfigError
from exporter.periods import Period, format_duration, iso
from exporter.pipeline import Prior
from exporter.sysdig import Retention
from exporter.units import CALCULATION_VERSION, method_step


class BackfillRefused(ConfigError):
    """The range cannot be backfilled as asked (exit 2); the message says which flag allows it."""


@dataclass(frozen=True, slots=True)
class Options:
    """What to backfill and how; times are epoch seconds aligned to `periods.length`."""

    start: int
    end: int
    force: bool = False
    dry_run: bool = False
    allow_coarse: bool = False
    max_age: int | None = None
    allow_old: bool = False
    transactional_id: str | None = None


def check_range(opts: Options, length: int) -> None:
    """A non-empty range aligned to the period length, or `ConfigError`."""
    for flag, ts in (("--from", opts.start), ("--to", opts.end)):
        if ts % length:
            raise ConfigError(f"{flag} {iso(ts)} is not aligned to periods.length {format_duration(length)}")
    if opts.end <= opts.start:
        raise ConfigError(f"--to {iso(opts.end)} must be after --from {iso(opts.start)}")


@dataclass(frozen=True, slots=True)
class PeriodPlan:
    """One period to backfill: the step it is measured at and what was published before."""

    period: Period
    step: int
    available_step: int
    prior: Mapping[str, Prior]
    coarse: bool = False


def _first(items: Sequence[Period]) -> str:
    more = f" and {len(items) - 1} more" if len(items) > 1 else ""
    return f"{items[0]}{more}"


def plan_periods(
    periods: Sequence[Period],
    *,
    cfg: Config,
    retention: Retention,
    published: Mapping[tuple[Period, str], Published],
    now: float,
    live_end: int | None,
    live_id: str,
    opts: Options,
) -> list[PeriodPlan]:
    """The plan for `periods`, or `BackfillRefused` naming the first offending period.

    Refused: periods the live worker has not committed yet (they are its to publish); periods
    not closed yet; periods older than the age guard without `--allow-old`; periods beyond every
    retention window of `retention`; periods only available at a step coarser than the period (or not dividing
    it) without `--allow-coarse`; published periods whose calculation method can no longer be
    reproduced (rolled up since, or another grain), since new record ids would double count.
    """
    length = cfg.periods.length
    settle = cfg.periods.settle_delay
    if live_end is not None and opts.end > live_end:
        raise BackfillRefused(
            f"--to {iso(opts.end)} is after the live worker's checkpoint {iso(live_end)} "
            f"(instance {live_id}); periods from {iso(live_end)} on are the live worker's to "
            "publish, end the backfill there"
        )
    if opts.end + settle > now:
        last = int(now) - settle
        raise BackfillRefused(
            f"--to {iso(opts.end)}: the period ending there is not closed yet; the last closed "
            f"period ends at {iso(last - last % length)} (periods.settle_delay "
            f"{format_duration(settle)})"
        )
    max_age = cfg.backfill.max_age if opts.max_age is None else opts.max_age
    if not opts.allow_old:
        old = [p for p in periods if now - p.start > max_age]
        if old:
            raise BackfillRefused(
                f"{len(old)} period(s) older than the age guard {format_duration(max_age)} "
                f"(first: {_first(old)}); billing platforms drop events older than their dedupe "
                "window: pass --allow-old to backfill them anyway, or --max-age"
            )
    by_period: dict[Period, dict[str, Published]] = {}
    for (pp, cluster), pub in published.items():
        by_period.setdefault(pp, {})[cluster] = pub
    plans: list[PeriodPlan] = []
    coarse: list[Period] = []
    gone: list[Period] = []
    for p in periods:
        available = retention.available_step(p)
        if available is None:
            gone.append(p)
            continue
        is_coarse = available > length or length % available != 0
        if is_coarse:
            coarse.append(p)
        step = length if is_coarse else available
        before = by_period.get(p, {})
        # Records keep the step they were published at while Sysdig still holds it, so unchanged
        # data re-measures identically; a coarser step only with --allow-coarse (same record ids,
        # the method shows the step).
        allow_coarse = opts.allow_coarse or cfg.backfill.allow_coarse
        pinned: set[int] = set()
        for cluster, pub in sorted(before.items()):
            was = method_step(pub.method, cfg.periods.grain)
            if was is None:
                raise BackfillRefused(
                    f"period {p} cluster {cluster} was published with method {pub.method}, which "
                    f"this configuration (grain {cfg.periods.grain}, {CALCULATION_VERSION}) does not "
                    "compute; its records would get new ids and be counted twice"
                )
            if was < step and not allow_coarse:
                raise BackfillRefused(
                    f"period {p} cluster {cluster} was published at {format_duration(was)} steps "
                    f"but Sysdig keeps it only at {format_duration(available)} now; pass "
                    "--allow-coarse to re-measure it at that step (a correction with the same "
                    "record ids whose method shows the coarser step)"
                )
            pinned.add(max(was, step))
        if len(pinned) > 1:
            raise BackfillRefused(
                f"period {p} was published at different steps per cluster "
                f"({', '.join(format_duration(x) for x in sorted(pinned))}); back it up per cluster "
                "with sysdig.clusters"
            )
        step = pinned.pop() if pinned else step
        prior = {cluster: pub.prior for cluster, pub in before.items()}
        plans.append(PeriodPlan(p, step, available, prior, is_coarse))
    if gone:
        raise BackfillRefused(
            f"{len(gone)} period(s) beyond Sysdig's retention (first: {_first(gone)}); their "
            "usage can no longer be measured"
        )
    if coarse and not (opts.allow_coarse or cfg.backfill.allow_coarse):
        first = retention.available_step(coarse[0]) or 0
        raise BackfillRefused(
            f"{len(coarse)} period(s) only available at {format_duration(first)} steps, too "
            f"coarse for periods.length {format_duration(length)} (first: {_first(coarse)}); pass "
            f"--allow-coarse to measure each as one {format_duration(length)} step"
        )
    return plans
