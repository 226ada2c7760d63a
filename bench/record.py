"""Record the simulator's answers to one period's queries, once per fleet.

The queries are exactly those `SysdigSource.fetch` sends (the pre-count of series, then the plan
of each cluster group), one at a time; each answer is the body the simulator's HTTP server
wrote, timed inside the server so its time is the simulator's evaluation and rendering alone,
with the samples the query scanned (what the latency model of a replay charges for).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fleets import (
    STEP,
    TOKEN,
    WALL_CONCURRENCY,
    WALL_PREFETCH,
    exporter_config,
    fleet_spec,
    period,
)
from chargeback_simulator.fleet import SAMPLE_INTERVAL, Fleet
from chargeback_simulator.server import SimulatorServer
from exporter.clock import FakeClock
from exporter.queries import series_count
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
    names: dict[str, str]  # query text -> plan name (cpu.usage, labels, ..., series count)
    total_bytes: int
    samples: dict[str, int] = field(default_factory=dict)  # query text -> samples it scanned
    # The wall-time run's queries that the others do not send (its own cluster groups): query
    # text -> file name, served by the replay only, left out of every other figure.
    wall_files: dict[str, str] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        (directory / "meta.json").write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Recording:
        return cls(**json.loads((directory / "meta.json").read_text(encoding="utf-8")))

    def bodies(self, directory: Path) -> dict[str, list[bytes]]:
        """Plan name -> recorded bodies, one per cluster group, in recording order."""
        out: dict[str, list[bytes]] = {}
        for q, f in self.files.items():
            out.setdefault(self.names[q], []).append((directory / f).read_bytes())
        return out


def existing(target_pods: int, directory: Path, seed: int = 1, max_replicas: int = 1,
             step: int = STEP, clusters: int | None = None) -> Recording | None:
    """The recording in `directory` if it is of the same fleet and step, else None."""
    try:
        rec = Recording.load(directory)
    except (OSError, ValueError, TypeError):
        return None
    same = (rec.spec == asdict(fleet_spec(target_pods, seed, max_replicas, clusters))
            and rec.step == step)
    return rec if same else None


def record(target_pods: int, directory: Path, seed: int = 1, max_replicas: int = 1,
           step: int = STEP, clusters: int | None = None) -> Recording:
    """Evaluate period 0's queries for the fleet of `target_pods` pods over `clusters` clusters
    (`fleets.default_clusters` when None) at `step` seconds and write them to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    p = period(0)
    fleet = Fleet(fleet_spec(target_pods, seed, max_replicas, clusters))
    pods = fleet.pods(p.start, p.end)
    samples = sum(pod.samples(p.start, p.end) for pod in pods)
    clock = FakeClock(p.end + 3600)
    with SimulatorServer(fleet, clock, tokens=[TOKEN]) as server:
        bodies: dict[str, bytes] = {}
        seconds: dict[str, float] = {}
        lock = threading.Lock()
        handle = server.handle

        def recording(method: str, path: str, query: Any, headers: Any, body: bytes) -> Any:
            began = time.perf_counter()
            status, payload, extra = handle(method, path, query, headers, body)
            text = json.dumps(payload, separators=(",", ":")).encode("utf-8")
            if status != 200:
                raise RuntimeError(f"simulator answered {status}: {text[:200]!r}")
            with lock:
                bodies[query["query"][-1]] = text
                seconds[query["query"][-1]] = time.perf_counter() - began
            return status, payload, extra

        server.handle = recording  # type: ignore[method-assign]
        cfg = exporter_config(server.url, "127.0.0.1:9", "record", None, step=step)
        source = build_source(cfg, clock)
        _, chosen, at = source.plan_for(p)
        assert chosen == step, f"expected the {step}s step, the source chose {chosen}s"
        names = {series_count(p.length, cfg.sysdig.clusters): "series count"}
        for chunk in source.fetch_chunks(p):
            names.update((q, name) for name, q in source.plan_for(p, sorted(chunk.clusters))[0].all())
        measured = set(bodies)
        wall_cfg = exporter_config(server.url, "127.0.0.1:9", "record", None, step=step,
                                   concurrency=WALL_CONCURRENCY, prefetch=WALL_PREFETCH)
        wall_source = build_source(wall_cfg, clock)
        for chunk in wall_source.fetch_chunks(p):
            names.update((q, name) for name, q in
                         wall_source.plan_for(p, sorted(chunk.clusters))[0].all())
        scanned = {s.query: s.samples for s in server.stats}
    wall_only = {q: bodies.pop(q) for q in list(bodies) if q not in measured}
    for q in wall_only:
        seconds.pop(q)
    wall_files: dict[str, str] = {}
    for i, (query, body) in enumerate(wall_only.items()):
        fname = f"w{i}.json"
        (directory / fname).write_bytes(body)
        wall_files[query] = fname
    files: dict[str, str] = {}
    total = 0
    for i, (query, body) in enumerate(bodies.items()):
        fname = f"q{i}.json"
        (directory / fname).write_bytes(body)
        files[query] = fname
        total += len(body)
    names = {q: names[q] for q in files}
    seconds_by_name: dict[str, float] = {}
    for q, took in seconds.items():
        seconds_by_name[names[q]] = seconds_by_name.get(names[q], 0.0) + took
    rec = Recording(target_pods, asdict(fleet.spec), len(pods), len(fleet.workloads()), samples,
                    samples * SAMPLE_INTERVAL // step, step, at, sum(seconds.values()),
                    seconds_by_name, files, names, total,
                    {q: scanned[q] for q in (*files, *wall_files)}, wall_files)
    rec.save(directory)
    return rec
