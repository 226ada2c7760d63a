"""Sharding on a real broker: shards split the fleet without changing a byte, and fence only
their own replicas.

Two shards publishing into the same topics must, between them, publish exactly the records and
manifests one unsharded instance publishes for the same fleet and periods: same partitions,
keys and values, no overlap and no gap. Each shard has a transactional id and checkpoint of its
own, so the two never fence each other; a second replica of one shard fences the first.
"""

from __future__ import annotations

import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from chargeback_simulator.localbroker import LocalBroker
from exporter.config import Config
from exporter.errors import FencedError
from exporter.kafka import read_topic
from exporter.metrics import Metrics
from exporter.periods import Period
from exporter.run import Service, assemble
from exporter.shards import shard_of
from exporter.wiring import build_checkpoints, build_codec, build_worker_parts
from tests.rigs.sim import T0, H, Sim

PERIODS = [Period(T0 + H, T0 + 2 * H), Period(T0 + 2 * H, T0 + 3 * H)]

Message = tuple[int, bytes, bytes]  # partition, key, value


def config(sim: Sim, broker: LocalBroker, topics: str, **sections: Any) -> Config:
    """The simulator's Sysdig, hourly periods from PERIODS[0], the topics of `topics`."""
    return sim.config(
        periods={"length": "1h", "settle_delay": "2m", "start": PERIODS[0].start},
        kafka={"bootstrap_servers": broker.bootstrap, "partitions": 3, "replication_factor": 1,
               "transactional_id": f"billing-{topics}", "transaction_timeout": 30,
               "connect_timeout": 10,
               "topics": {"records": f"r-{topics}", "manifests": f"m-{topics}",
                          "checkpoint": f"c-{topics}"}},
        web={"enabled": False}, **sections)


def service(cfg: Config, sim: Sim) -> Service:
    """What `run` wires (the Sysdig source, the Kafka sink and checkpoints), on the sim's clock."""
    return assemble(cfg, sim.clock, Metrics(CollectorRegistry()), build_worker_parts,
                    serve_http=False)


def run_once(cfg: Config, sim: Sim) -> list[Period]:
    """`run --once` of `cfg`: every closed period from the checkpoint, then stop."""
    return service(cfg, sim).worker.run_once()


def published(cfg: Config, topic: str) -> list[Message]:
    return [(m.partition, m.key or b"", m.value) for m in read_topic(cfg.kafka, topic)
            if m.value is not None]


def clusters_of(sim: Sim) -> list[str]:
    return sorted({w.key.cluster for w in sim.fleet.workloads()})


def shard_sections(sim: Sim, mode: str) -> list[dict[str, Any]]:
    """Two shards of the sim's fleet: by hash (index of 2) or by explicit halves."""
    if mode == "hash":
        owners = {shard_of(c, 2) for c in clusters_of(sim)}
        assert owners == {0, 1}, "the fleet's names must put a cluster in each shard"
        return [{"name": f"h{i}", "index": i, "count": 2} for i in range(2)]
    names = clusters_of(sim)
    return [{"name": "first", "clusters": names[:2]}, {"name": "second", "clusters": names[2:]}]


@pytest.mark.parametrize("mode", ["hash", "list"])
def test_two_shards_publish_exactly_what_one_instance_publishes(
        sim_factory: Callable[..., Sim], noida: LocalBroker, mode: str) -> None:
    sim = sim_factory(clusters=4, namespaces_per_cluster=2, workloads_per_namespace=3)
    tag = uuid.uuid4().hex[:8]
    whole = config(sim, noida, f"one-{tag}")
    assert run_once(whole, sim) == PERIODS
    shards = [config(sim, noida, f"two-{tag}", shard=s) for s in shard_sections(sim, mode)]
    for cfg in shards:
        assert run_once(cfg, sim) == PERIODS

    topics = whole.kafka.topics
    shared = shards[0].kafka.topics
    records_one = published(whole, topics.records)
    records_two = published(shards[0], shared.records)
    codec = build_codec(whole)
    # Every cluster and period is there: the comparison below is not between two empty sets.
    assert {(r.cluster, r.period) for r in map(codec.decode_record, (v for _, _, v in records_one))} \
        == {(c, p) for c in clusters_of(sim) for p in PERIODS}
    # No overlap (each key once) and no gap (the same multiset), byte for byte.
    assert max(Counter(k for _, k, _ in records_two).values()) == 1
    assert Counter(records_two) == Counter(records_one)
    assert Counter(published(shards[0], shared.manifests)) == Counter(
        published(whole, topics.manifests))

    # One workload's records (every resource and period) share a partition, in period order:
    # the partition is CRC-32 of its ResourceId modulo the partitions (schemas/README.md).
    where: dict[str, list[tuple[int, int, int]]] = {}
    for m in read_topic(shards[0].kafka, shared.records):
        assert m.value is not None
        r = codec.decode_record(m.value)
        resource_id = f"{r.cluster}/{r.namespace}/{r.workload_kind}/{r.workload_name}"
        assert m.partition == zlib.crc32(resource_id.encode()) % 3
        where.setdefault(resource_id, []).append((m.partition, m.offset, r.period_start))
    for placed in where.values():
        assert len({part for part, _, _ in placed}) == 1
        assert [start for _, _, start in sorted(placed)] == sorted(start for _, _, start in placed)
    assert len({placed[0][0] for placed in where.values()}) == 3  # spread over every partition

    # Each shard carried its own clusters only, under its own checkpoint.
    for cfg in shards:
        state = build_checkpoints(cfg, sim.clock).read()
        assert state is not None and state.last_period_end == PERIODS[-1].end
        assert sorted(state.clusters) == [c for c in clusters_of(sim) if cfg.shard.owns(c)]
    owned = [set(build_checkpoints(cfg, sim.clock).read().clusters) for cfg in shards]  # type: ignore[union-attr]
    assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(clusters_of(sim))


def test_shards_do_not_fence_each_other_but_a_second_replica_of_one_shard_is_fenced(
        sim_factory: Callable[..., Sim], noida: LocalBroker) -> None:
    sim = sim_factory(clusters=4, namespaces_per_cluster=2, workloads_per_namespace=3)
    names = clusters_of(sim)
    tag = uuid.uuid4().hex[:8]
    sim.clock.advance(-H)  # only PERIODS[0] is closed
    first, second = (config(sim, noida, tag, shard={"name": n, "clusters": part})
                     for n, part in (("a", names[:2]), ("b", names[2:])))
    a, b = service(first, sim), service(second, sim)
    a.worker.start()
    b.worker.start()  # another shard: its own transactional.id, nobody is fenced
    assert a.worker.export_due().exported == (PERIODS[0],)
    out = b.worker.export_due()
    assert out.exported == (PERIODS[0],), out.error

    sim.clock.advance(H)
    again = service(first, sim)
    again.worker.start()  # the same shard started twice: fences the first replica of `a`
    with pytest.raises(FencedError) as caught:
        a.worker.export_due()
    assert caught.value.exit_code == 4
    a.worker.close()
    assert b.worker.export_due().exported == (PERIODS[1],)  # shard b is untouched
    assert again.worker.export_due().exported == (PERIODS[1],)
    again.worker.close()
    b.worker.close()
    records = published(first, first.kafka.topics.records)
    codec = build_codec(first)
    # Every cluster in both periods, and no record twice (the fenced replica left nothing).
    assert {(r.cluster, r.period) for r in (codec.decode_record(v) for _, _, v in records)} == {
        (c, p) for c in names for p in PERIODS}
    assert max(Counter(k for _, k, _ in records).values()) == 1


def test_a_cluster_moved_to_another_shard_is_exported_by_its_new_shard_only(
        sim_factory: Callable[..., Sim], noida: LocalBroker) -> None:
    """Resharding at a period boundary: the old shard no longer expects the cluster it gave
    away (its checkpoint remembered it), the new one exports it from its own checkpoint on."""
    sim = sim_factory(clusters=4, namespaces_per_cluster=2, workloads_per_namespace=3)
    names = clusters_of(sim)
    tag = uuid.uuid4().hex[:8]
    sim.clock.advance(-H)  # only PERIODS[0] is closed
    for name, part in (("a", names[:2]), ("b", names[2:])):
        assert run_once(config(sim, noida, tag, shard={"name": name, "clusters": part}), sim) \
            == PERIODS[:1]
    sim.clock.advance(H)
    moved = names[1]
    after = [config(sim, noida, tag, shard={"name": name, "clusters": part})
             for name, part in (("a", names[:1]), ("b", names[1:]))]
    for cfg in after:
        assert run_once(cfg, sim) == PERIODS[1:]
    state = build_checkpoints(after[0], sim.clock).read()
    assert state is not None and sorted(state.clusters) == names[:1]
    codec = build_codec(after[0])
    records = published(after[0], after[0].kafka.topics.records)
    assert max(Counter(k for _, k, _ in records).values()) == 1
    assert {(r.cluster, r.period) for r in (codec.decode_record(v) for _, _, v in records)} == {
        (c, p) for c in names for p in PERIODS}
    assert moved in build_checkpoints(after[1], sim.clock).read().clusters  # type: ignore[union-attr]


def test_a_shard_backfills_its_own_clusters_under_its_own_id(
        sim_factory: Callable[..., Sim], noida: LocalBroker) -> None:
    """Backfill of a hash shard: its own transactional id (never the live shard's nor the
    other shard's), its own clusters only, and unchanged data stays unpublished."""
    from exporter.backfill.plan import Options
    from exporter.backfill.runner import backfill

    sim = sim_factory(clusters=4, namespaces_per_cluster=2, workloads_per_namespace=3)
    tag = uuid.uuid4().hex[:8]
    shards = [config(sim, noida, tag, shard=s) for s in shard_sections(sim, "hash")]
    for cfg in shards:
        assert run_once(cfg, sim) == PERIODS
    before = Counter(published(shards[0], shards[0].kafka.topics.records))
    report = backfill(shards[1], Options(PERIODS[0].start, PERIODS[-1].end), sim.clock)
    assert report.exit_code == 0, report.error
    assert report.instance == f"billing-{tag}-shard-h1-backfill"
    mine = sorted(c for c in clusters_of(sim) if shard_of(c, 2) == 1)
    for outcome in report.outcomes:
        assert outcome.status == "skipped"
        assert sorted(c.cluster for c in outcome.clusters) == mine
        assert {c.change for c in outcome.clusters} == {"unchanged"}
    assert Counter(published(shards[0], shards[0].kafka.topics.records)) == before
