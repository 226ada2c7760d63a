"""What a backfill refuses (exit 2, one line) or stops on (exit 4), and which step it measures at."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from exporter.periods import iso
from exporter.sink import Batch, PeriodSink
from exporter.wiring import build_checkpoints, build_sink
from tests.rigs.backfill import T0, H, Rig, hours

D = 86400


def one_line(err_lines: list[str]) -> str:
    assert len(err_lines) == 1, err_lines
    assert err_lines[0].startswith("chargeback-exporter backfill: error: ")
    return err_lines[0]


def methods(rig: Rig) -> set[str]:
    return {r.method for r, _ in rig.records()}


def test_range_after_the_live_checkpoint_is_refused(rig: Rig) -> None:
    rig.live_export(hours(3, 4))
    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H))
    assert res.code == 2
    line = one_line(res.error_lines)
    assert f"after the live worker's checkpoint {iso(T0 + 4 * H)}" in line
    assert rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 4 * H), "--dry-run").code == 0


def test_helm_style_transactional_id_reads_the_live_checkpoint_without_doubling_the_suffix(
        rig: Rig) -> None:
    rig.live_export(hours(3, 4))
    live = rig.cfg.kafka.transactional_id
    rig.configure(kafka={"transactional_id": f"{live}-backfill"})  # what the Helm Job sets
    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 5 * H))
    assert res.code == 2 and f"(instance {live})" in one_line(res.error_lines)
    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 4 * H), "--force")
    assert res.code == 0 and res.report["transactional_id"] == f"{live}-backfill"


def test_without_a_live_checkpoint_the_range_is_new_and_the_live_checkpoint_stays_absent(rig: Rig) -> None:
    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H))
    assert res.code == 0, res.err
    changes = {(c["change"], c["revision_before"], c["revision"])
               for d in res.report["details"] for c in d["clusters"]}
    assert changes == {("new", None, 0)}
    assert {r.revision for r, _ in rig.records()} == {0}
    assert build_checkpoints(rig.cfg, rig.clock).read() is None


def test_periods_older_than_the_age_guard_need_allow_old(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(now=T0 + 6 * H + 300, history=None)
    old = ("--from", iso(T0 - 40 * D), "--to", iso(T0 - 40 * D + H))
    res = rig.backfill(*old)
    assert res.code == 2
    line = one_line(res.error_lines)
    assert "older than the age guard 34d" in line and "--allow-old" in line
    assert rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 4 * H), "--max-age", "2h").code == 2

    res = rig.backfill(*old, "--allow-old")
    assert res.code == 0, res.err
    # 40 days back Sysdig keeps 1 h samples: the tier picks the step, the method names it.
    assert methods(rig) == {"max-request-usage/pod/3600s/v1"}


def test_coarse_periods_need_allow_coarse(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(now=T0 + 6 * H + 300, history=None)
    rig.configure(periods={"length": "10m"})
    span = ("--from", iso(T0 - 20 * D), "--to", iso(T0 - 20 * D + 1200))
    res = rig.backfill(*span)
    assert res.code == 2
    line = one_line(res.error_lines)
    assert "only available at 1h steps, too coarse for periods.length 10m" in line
    assert "--allow-coarse" in line
    res = rig.backfill(*span, "--allow-coarse")
    # Hourly roll-ups leave the 10-minute period that holds no hourly point with no series at
    # all: it fails loudly instead of being published as zero usage.
    assert res.code == 3, res.err
    assert "00:10:00Z" in res.err and "no series at all" in res.err
    assert methods(rig) == {"max-request-usage/pod/600s/v1"}  # one step per 10-minute period


def test_steps_come_from_sysdig_timelines_when_served(rig: Rig) -> None:
    rig.sim.server.faults.push("/api/history/timelines", status=200,
                               body={"agents": [{"from": None, "to": None, "sampling": 60_000_000}]})
    res = rig.backfill("--from", iso(T0 + 5 * H), "--to", iso(T0 + 6 * H))
    assert res.code == 0, res.err
    assert res.report["retention"] == "timelines"
    assert methods(rig) == {"max-request-usage/pod/60s/v1"}


def test_documented_tiers_when_sysdig_has_no_timelines(rig: Rig) -> None:
    rig.sim.server.faults.push("/api/history/timelines", status=404)
    res = rig.backfill("--from", iso(T0 + 5 * H), "--to", iso(T0 + 6 * H))
    assert res.code == 0, res.err
    assert res.report["retention"] == "documented"
    assert methods(rig) == {"max-request-usage/pod/10s/v1"}


def test_published_period_rolled_up_since_is_refused(rig: Rig) -> None:
    rig.live_export(hours(3, 4))  # published at 10 s steps
    rig.clock.set(T0 + 10 * H)  # now Sysdig keeps that hour at 1 min only
    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 4 * H))
    assert res.code == 2
    assert "was published at 10s steps but Sysdig keeps it only at 1m now" in one_line(res.error_lines)


def test_allow_coarse_corrects_a_rolled_up_period_under_the_same_record_ids(rig: Rig) -> None:
    rig.live_export(hours(3, 4))
    before = {r.record_id: r for r, _ in rig.records()}
    rig.clock.set(T0 + 10 * H)
    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 4 * H), "--allow-coarse")
    assert res.code == 0, res.err
    after = [r for r, _ in rig.records() if r.revision == 1]
    assert after, "re-measured at 1 min: a correction"
    assert {r.record_id for r in after} == set(before)
    assert {r.method for r in after} == {"max-request-usage/pod/60s/v1"}


@pytest.mark.parametrize(("argv", "message"), [
    (("--from", "last tuesday", "--to", iso(T0 + H)), "--from: not a time: 'last tuesday'"),
    (("--from", iso(T0 + 1800), "--to", iso(T0 + H)), "is not aligned to periods.length 1h"),
    (("--from", iso(T0 + H), "--to", iso(T0 + H)), "must be after --from"),
    (("--from", iso(T0), "--to", iso(T0 + 7 * H)), "is not closed yet"),
    (("--from", iso(T0), "--to", iso(T0 + H), "--max-age", "soon"), "--max-age: not a duration"),
])
def test_bad_input_is_one_line_exit_2(rig: Rig, argv: tuple[str, ...], message: str) -> None:
    res = rig.backfill(*argv)
    assert res.code == 2
    assert message in one_line(res.error_lines)
    assert "Traceback" not in res.err


def test_rejected_token_is_one_line_without_the_token(rig: Rig) -> None:
    rig.configure(sysdig={"token": "not-the-right-token-123"})
    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 4 * H))
    assert res.code == 2
    line = one_line(res.error_lines)
    assert "HTTP 401" in line and "not-the-right-token-123" not in res.err + res.out


class FencingSink:
    """The real sink; before its first publish another producer takes its transactional id."""

    def __init__(self, inner: PeriodSink, rival: Callable[[], PeriodSink]) -> None:
        self.inner = inner
        self.rival = rival
        self.rivals: list[PeriodSink] = []

    def start(self) -> None:
        self.inner.start()

    def publish(self, batch: Batch) -> None:
        if not self.rivals:
            rival = self.rival()
            rival.start()
            self.rivals.append(rival)
        self.inner.publish(batch)

    def close(self) -> None:
        self.inner.close()
        for r in self.rivals:
            r.close()


def test_fenced_backfill_exits_4(rig: Rig) -> None:
    def factory(cfg, clock, instance):  # type: ignore[no-untyped-def]
        def rival() -> PeriodSink:
            sink: PeriodSink = build_sink(cfg, clock, transactional_id=instance)
            return sink
        return FencingSink(build_sink(cfg, clock, transactional_id=instance), rival)

    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H), sink_factory=factory)
    assert res.code == 4
    assert "took over" in one_line(res.error_lines)
    assert rig.records() == []
