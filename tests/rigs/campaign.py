"""The crash campaign: `chargeback-exporter run --once` killed with SIGKILL again and again.

The exporter runs as a real process against a real noida-db broker and the Sysdig simulator
(served from the calling process, on the real clock, with `history` hours of fleet data). A
seeded RNG draws a kill plan up front; each run is killed at its planned point, then restarted,
until the plan is spent and a last run catches up and exits 0. Kill points are of three kinds:

- `startup`: a random instant before the worker is up (imports, topic check, `init_transactions`,
  the checkpoint read), as a fraction of the observed start-up time;
- `compute`: after the n-th committed period, a random fraction into the next period's Sysdig
  queries (measured from the run's own `export_seconds`);
- `transaction`: after the n-th committed period, as soon as a `read_uncommitted` watcher on the
  broker sees the first record of the next period (its transaction is open and being written),
  plus a random fraction of a few milliseconds.

Wall-clock jitter moves every point a little, so the plan (and the seed) is reproducible while
the exact instructions a kill interrupts are not; `Ledger.aborted_transactions` counts, from the
broker itself, how many kills left a transaction open with records in it.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import SimulatorServer
from exporter.clock import SystemClock
from exporter.config import Config, load_config
from exporter.periods import align_down
from tests.rigs.harness import (
    ExporterProcess,
    Ledger,
    RecordWatch,
    check_ledger,
    is_event,
    last_checkpoint,
)

TOKEN = "crash-campaign-token"
MODES = ("startup", "compute", "transaction")
# One message per produce request, one request in flight: the same transactional semantics,
# but a period's transaction lasts long enough (tens of ms) for kills to land inside it.
SLOW_PRODUCER = {"batch.num.messages": "1", "max.in.flight.requests.per.connection": "1"}
TRANSACTION_AIM = 0.01  # seconds after the first record of a transaction reaches the broker


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """Size of a campaign; the defaults are the CI variant."""

    seed: int
    kills: int = 36
    hours: int = 17
    period: int = 600
    fleet: FleetSpec = field(default_factory=lambda: FleetSpec(
        seed=3, clusters=3, namespaces_per_cluster=4, workloads_per_namespace=6))
    weights: tuple[int, int, int] = (2, 3, 5)  # startup, compute, transaction
    max_after: int = 3  # a compute or transaction kill follows 1..max_after committed periods
    producer_extra: tuple[tuple[str, str], ...] = tuple(SLOW_PRODUCER.items())
    max_unexpected_exits: int = 5


@dataclass(frozen=True, slots=True)
class PlannedKill:
    mode: str
    after: int  # committed periods in the run before the kill point (compute, transaction)
    fraction: float


@dataclass(slots=True)
class Kill:
    run: int
    mode: str
    after: int
    delay: float  # seconds after the anchor (spawn, or the after-th committed period)
    committed_in_run: int


@dataclass
class CampaignResult:
    spec: CampaignSpec
    start: int
    end: int
    kills: list[Kill] = field(default_factory=list)
    runs: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    ledger: Ledger | None = None
    campaign_seconds: float = 0.0
    verify_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seed": self.spec.seed, "planned_kills": self.spec.kills, "kills": len(self.kills),
            "kills_by_mode": dict(Counter(k.mode for k in self.kills)), "runs": self.runs,
            "unexpected_exits": len(self.unexpected_exits),
            "campaign_seconds": round(self.campaign_seconds, 1),
            "verify_seconds": round(self.verify_seconds, 1),
        }
        if self.ledger is not None:
            out.update(self.ledger.summary())
            out["mid_transaction_kills"] = self.ledger.aborted_transactions
        return out


def tune_server(server: SimulatorServer) -> None:
    """Call after each `start()`. A killed client resets its connections, and the stdlib server
    would print a traceback for each. Its handler also writes headers and body separately, so
    without TCP_NODELAY every response waits ~40 ms for the client's delayed ACK."""
    httpd = server._httpd
    if httpd is not None:
        httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        httpd.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]


def plan_kills(spec: CampaignSpec) -> list[PlannedKill]:
    """The seeded kill plan: mode, anchor and fraction of every kill, in order."""
    rng = random.Random(spec.seed)
    return [PlannedKill(rng.choices(MODES, weights=spec.weights)[0], rng.randint(1, spec.max_after),
                        rng.random())
            for _ in range(spec.kills)]


def write_config(path: Path, *, sysdig_url: str, bootstrap: str, start: int, spec: CampaignSpec,
                 tag: str, extra: dict[str, Any] | None = None) -> Config:
    """The exporter's YAML (JSON is YAML) for the campaign; returns it loaded."""
    doc: dict[str, Any] = {
        "sysdig": {"url": sysdig_url, "token": TOKEN, "timeout": 10, "retention_tiers": False,
                   "max_attempts": 3, "max_retry_time": 30},
        "periods": {"length": spec.period, "settle_delay": "1m", "start": start},
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 3, "replication_factor": 1,
                  "transactional_id": f"crash-{tag}", "transaction_timeout": 30,
                  "connect_timeout": 10, "extra": dict(spec.producer_extra),
                  "topics": {"records": f"records-{tag}", "manifests": f"manifests-{tag}",
                             "checkpoint": f"checkpoint-{tag}"}},
        "web": {"enabled": False},
        "worker": {"max_batch_periods": 24},
        "logging": {"format": "json", "level": "INFO"},
    }
    for section, values in (extra or {}).items():
        doc.setdefault(section, {}).update(values)
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return load_config(path, environ={})


class Campaign:
    """One campaign: a fleet on the real clock, its simulator, a broker and a config."""

    def __init__(self, spec: CampaignSpec, workdir: Path, broker: LocalBroker) -> None:
        self.spec = spec
        self.workdir = workdir
        self.broker = broker
        self.clock = SystemClock()
        history = (spec.hours + 3) * 3600
        # 10 s data over the whole history: the campaign measures at 10 s with retention tiers
        # off, and tests crash safety, not Sysdig's roll-ups.
        self.fleet = Fleet(spec.fleet, clock=self.clock, history=history,
                           timelines=((10, history),))
        self.server = SimulatorServer(self.fleet, self.clock, tokens=[TOKEN])
        now = int(self.clock.time())
        self.start = align_down(now - spec.hours * 3600, spec.period)
        self.config_path = workdir / "config.yaml"
        self.cfg: Config | None = None
        self.watch: RecordWatch

    def run(self) -> CampaignResult:
        self.server.start()
        tune_server(self.server)
        try:
            return self._run()
        finally:
            self.server.stop()

    def _run(self) -> CampaignResult:
        spec = self.spec
        self.cfg = cfg = write_config(self.config_path, sysdig_url=self.server.url,
                                      bootstrap=self.broker.bootstrap, start=self.start, spec=spec,
                                      tag=f"{spec.seed}")
        result = CampaignResult(spec, self.start, self.start)
        argv = ["run", "--once", "--config.file", str(self.config_path)]
        log_path = self.workdir / "exporter.log"
        plan = plan_kills(spec)
        startup: list[float] = []
        compute: list[float] = [0.15]
        began = time.monotonic()
        self.watch = RecordWatch(cfg)
        try:
            self._loop(argv, log_path, plan, startup, compute, result)
        finally:
            self.watch.close()
        result.campaign_seconds = time.monotonic() - began
        end = last_checkpoint(cfg)
        assert end is not None, "nothing was ever committed"
        result.end = end
        t = time.monotonic()
        result.ledger = check_ledger(cfg, self.fleet, self.start, end)
        result.verify_seconds = time.monotonic() - t
        return result

    def _loop(self, argv: list[str], log_path: Path, plan: list[PlannedKill], startup: list[float],
              compute: list[float], result: CampaignResult) -> None:
        spec = self.spec
        while True:
            result.runs += 1
            proc = ExporterProcess(argv, log_path=log_path)
            planned = plan[len(result.kills)] if len(result.kills) < len(plan) else None
            if planned is None:
                code = proc.wait(600)
                if code != 0:
                    raise AssertionError(f"final run exited {code}: {proc.stderr[-2000:]}")
                break
            killed = self._kill_at(proc, planned, startup, compute, result)
            ready = proc.wait_event(is_event("worker started"), timeout=0)
            if ready is not None:
                startup.append(ready[0] - proc.started)
            compute.extend(float(d.get("export_seconds", 0)) for d in proc.matching("period exported"))
            if killed:
                continue
            code = proc.wait(60)
            if code == 0:
                break  # caught up before its planned kill: the campaign ran out of periods
            result.unexpected_exits.append(f"run {result.runs}: exit {code}: "
                                           f"{(proc.stderr_lines or [''])[-1][:300]}")
            if len(result.unexpected_exits) > spec.max_unexpected_exits:
                raise AssertionError("too many unexpected exits:\n" + "\n".join(result.unexpected_exits))

    def _kill_at(self, proc: ExporterProcess, planned: PlannedKill, startup: list[float],
                 compute: list[float], result: CampaignResult) -> bool:
        """Kill `proc` at the planned point; False if it exited before getting there."""
        if planned.mode == "startup":
            typical = statistics.median(startup) if startup else 1.5
            delay = planned.fraction * typical
            if proc.finished(delay):
                return False
            committed = len(proc.matching("period exported"))
        else:
            anchor = proc.wait_event(is_event("period exported"), count=planned.after, timeout=120)
            if anchor is None:
                return False
            at, doc = anchor
            if planned.mode == "compute":
                delay = planned.fraction * float(doc.get("export_seconds", statistics.median(compute)))
            else:
                # Re-anchor on the broker: the first record of the next period means its
                # transaction is open; the kill follows within a few milliseconds.
                seen = self.watch.seen_after(int(doc["period_end"]), at, timeout=120,
                                             alive=lambda: proc.proc.poll() is None)
                if seen is None:
                    return False
                at, delay = seen, planned.fraction * TRANSACTION_AIM
            if proc.finished(max(0.0, at + delay - time.monotonic())):
                return False
            committed = planned.after
        proc.kill()
        result.kills.append(Kill(result.runs, planned.mode, planned.after, round(delay, 4), committed))
        return True
