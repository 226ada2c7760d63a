"""Record the simulator's answers to one period's queries, once per fleet.

The queries are exactly those `SysdigSource.plan_for` sends; each answer is the body the
simulator's HTTP server would write (same `json.dumps` separators), evaluated in-process so its
time is the simulator's evaluation and rendering time alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.fleets import STEP, exporter_config, fleet_spec, period
from chargeback_simulator.fleet import SAMPLE_INTERVAL, Fleet
from chargeback_simulator.server import SimulatorServer
from exporter.clock import FakeClock
from exporter.wiring import build_source

QUERY = "/prometheus/api/v1/query"


@dataclass(frozen=True, slots=True)
class Recording:
    """What `record` wrote: files per query and the fleet's counts for the recorded period."""

    target_pods: int
    spec: dict[str, int]  # the FleetSpec's fields
    pods: int
    workloads: int
    pod_samples: int  # Σ over the period's pods of their 10 s samples
    pod_steps: int  # the same at the period's step: what unaggregated per-pod series would carry
    step: int
    at: float
    simulator_seconds: float
    query_seconds: dict[str, float]
    files: dict[str, str]  # query text -> file name in the recording directory
    names: dict[str, str]  # query text -> plan name (cpu.usage, labels, ...)
    total_bytes: int

    def save(self, directory: Path) -> None:
        (directory / "meta.json").write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Recording:
        return cls(**json.loads((directory / "meta.json").read_text(encoding="utf-8")))

    def bodies(self, directory: Path) -> dict[str, bytes]:
        """Plan name -> recorded body."""
        return {self.names[q]: (directory / f).read_bytes() for q, f in self.files.items()}


def existing(target_pods: int, directory: Path, seed: int = 1, max_replicas: int = 1,
             step: int = STEP) -> Recording | None:
    """The recording in `directory` if it is of the same fleet and step, else None."""
    try:
        rec = Recording.load(directory)
    except (OSError, ValueError, TypeError):
        return None
    same = rec.spec == asdict(fleet_spec(target_pods, seed, max_replicas)) and rec.step == step
    return rec if same else None


def record(target_pods: int, directory: Path, seed: int = 1, max_replicas: int = 1,
           step: int = STEP) -> Recording:
    """Evaluate period 0's queries for the fleet of `target_pods` at `step` seconds and write
    them to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    p = period(0)
    fleet = Fleet(fleet_spec(target_pods, seed, max_replicas))
    pods = fleet.pods(p.start, p.end)
    samples = sum(pod.samples(p.start, p.end) for pod in pods)
    clock = FakeClock(p.end + 3600)
    server = SimulatorServer(fleet, clock)  # not started: answers are taken from `handle`
    cfg = exporter_config("http://127.0.0.1:9", "127.0.0.1:9", "record", None, step=step)
    qplan, chosen, at = build_source(cfg, clock).plan_for(p)
    assert chosen == step, f"expected the {step}s step, the source chose {chosen}s"
    files: dict[str, str] = {}
    names: dict[str, str] = {}
    seconds: dict[str, float] = {}
    total = 0
    for i, (name, query) in enumerate(qplan.all()):
        params = {"query": [query], "time": [str(at)]}
        began = time.perf_counter()
        status, payload, _ = server.handle("GET", QUERY, params, {}, b"")
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        seconds[name] = time.perf_counter() - began
        if status != 200:
            raise RuntimeError(f"simulator answered {status} to {name}: {body[:200]!r}")
        fname = f"q{i}.json"
        (directory / fname).write_bytes(body)
        files[query] = fname
        names[query] = name
        total += len(body)
    rec = Recording(target_pods, asdict(fleet.spec), len(pods), len(fleet.workloads()), samples,
                    samples * SAMPLE_INTERVAL // step, step, at, sum(seconds.values()), seconds,
                    files, names, total)
    rec.save(directory)
    return rec
