"""A simulator whose data can be corrected after a live export, a broker, and the backfill CLI.

`Rig` drives the real command (`exporter.backfill.command.cmd_backfill`) against the Sysdig simulator
and a real noida-db broker, on the simulator's `FakeClock`, and reads back what a
`read_committed` consumer sees.
"""

from __future__ import annotations

import argparse
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from confluent_kafka import Consumer, TopicPartition

from chargeback_simulator.fleet import FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.promql import LabelMatcher, SeriesSet
from chargeback_simulator.series import METRIC_NAME
from chargeback_simulator.server import SimulatorServer
from exporter.backfill.command import cmd_backfill, register
from exporter.backfill.runner import SinkFactory, default_sink
from exporter.config import Config, load_config
from exporter.errors import ExporterError
from exporter.kafka import ReadMessage, consumer_config, read_topic
from exporter.periods import Period
from exporter.records import BillingRecord, PeriodManifest
from exporter.wiring import build_codec, build_pipeline
from tests.rigs.kafka import publish_live
from tests.rigs.sim import T0, TOKEN, H, Sim

__all__ = ["T0", "EditableStorage", "H", "Result", "Rig", "hours"]


def hours(first: int, last: int, start: int = T0) -> list[Period]:
    """Hourly periods `first .. last - 1` counted from `start`."""
    return [Period(start + i * H, start + (i + 1) * H) for i in range(first, last)]


class EditableStorage:
    """The fleet as a PromQL `Storage`, with org labels that a test can correct afterwards.

    `relabel[(cluster, namespace)] = {"costcenter": "CC-X"}` makes every series of that
    namespace carry the new value, at workload and namespace level (so it wins either way);
    the series of a cluster in `hidden` disappear, and those of a (cluster, metric) in
    `hidden_metrics`; `scale[(cluster, metric)] = 2.0` multiplies every value of that metric in
    that cluster (a claim resized, a GPU busier).
    """

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet
        self.relabel: dict[tuple[str, str], dict[str, str]] = {}
        self.hidden: set[str] = set()
        self.hidden_metrics: set[tuple[str, str]] = set()
        self.scale: dict[tuple[str, str], float] = {}

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        data: SeriesSet = self.fleet.select(matchers, start_ms, end_ms)
        if self.scale:
            factors = np.array([self.scale.get((lb.get("kube_cluster_name", ""),
                                                lb.get(METRIC_NAME, "")), 1.0)
                                for lb in data.labels])
            if len(factors):
                data = SeriesSet(data.labels, data.ts, data.values * factors[:, None])
        if self.hidden or self.hidden_metrics:
            keep = [i for i, labels in enumerate(data.labels)
                    if labels.get("kube_cluster_name") not in self.hidden
                    and (labels.get("kube_cluster_name", ""), labels.get(METRIC_NAME, ""))
                    not in self.hidden_metrics]
            data = SeriesSet([data.labels[i] for i in keep], data.ts, data.values[keep])
        if not self.relabel:
            return data
        return SeriesSet([self._edit(labels) for labels in data.labels], data.ts, data.values)

    def _edit(self, labels: Mapping[str, str]) -> dict[str, str]:
        edits = self.relabel.get((labels.get("kube_cluster_name", ""), labels.get("kube_namespace_name", "")))
        out = dict(labels)
        for key, value in (edits or {}).items():
            for name in labels:
                if name.startswith("kube_") and name.endswith(f"_label_{key}"):
                    out[name] = value
            out[f"kube_namespace_label_{key}"] = value
        return out


class EditableSim(Sim):
    """`Sim` serving an `EditableStorage` over its fleet."""

    def __init__(self, now: int, history: int | None = 12 * H, seed: int = 1,
                 allocations: bool = False) -> None:
        super().__init__(FleetSpec(seed=seed, allocations=allocations), now,
                         history=history)  # type: ignore[arg-type]
        self.storage = EditableStorage(self.fleet)
        self.server = SimulatorServer(self.storage, self.clock, tokens=[TOKEN])


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def report(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.out)
        return doc

    @property
    def error_lines(self) -> list[str]:
        """stderr lines that are not JSON log lines."""
        return [ln for ln in self.err.splitlines() if ln.strip() and not ln.startswith("{")]


class Rig:
    """One simulator, one set of topics on the session broker, one config file."""

    def __init__(self, sim: EditableSim, broker: LocalBroker, path: Path) -> None:
        self.sim = sim
        self.clock = sim.clock
        self.path = path
        tag = uuid.uuid4().hex[:8]
        self.doc: dict[str, Any] = {
            "sysdig": {"url": sim.server.url, "token": TOKEN, "timeout": 30, "max_attempts": 3,
                       "max_concurrency": 4},
            "periods": {"settle_delay": "2m"},
            "kafka": {
                "bootstrap_servers": broker.bootstrap, "partitions": 3, "replication_factor": 1,
                "transactional_id": f"exporter-{tag}", "transaction_timeout": 30,
                "connect_timeout": 10,
                "topics": {"records": f"records-{tag}", "manifests": f"manifests-{tag}",
                           "checkpoint": f"checkpoint-{tag}"},
            },
            "backfill": {"max_concurrency": 3},
            "logging": {"level": "WARNING"},
        }
        self.configure()

    def configure(self, **sections: Mapping[str, Any]) -> Config:
        """Merge `sections` into the config file and return the configuration."""
        for name, values in sections.items():
            self.doc.setdefault(name, {}).update(values)
        self.path.write_text(yaml.safe_dump(self.doc), encoding="utf-8")
        return self.cfg

    @property
    def cfg(self) -> Config:
        return load_config(self.path, environ={})

    # --- the live path ------------------------------------------------------------------------

    def live_export(self, periods: Sequence[Period]) -> None:
        """What `run --once` does for `periods`: the live pipeline, sink and checkpoint."""
        publish_live(build_pipeline(self.cfg, self.clock), self.cfg, self.clock, periods)

    # --- the backfill CLI ---------------------------------------------------------------------

    def backfill(self, *argv: str, sink_factory: SinkFactory = default_sink,
                 fmt: str = "json") -> Result:
        """Run `chargeback-exporter backfill ARGV` the way `cli.main` does; capture its output."""
        parser = argparse.ArgumentParser(prog="chargeback-exporter")
        register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["backfill", "--config.file", str(self.path), "--format", fmt, *argv])
        out, err = io.StringIO(), io.StringIO()
        try:
            code = cmd_backfill(args, clock=self.clock, sink_factory=sink_factory, out=out, err=err)
        except ExporterError as exc:
            err.write(f"chargeback-exporter backfill: error: {exc}\n")
            code = exc.exit_code
        return Result(code, out.getvalue(), err.getvalue())

    # --- what a read_committed consumer sees --------------------------------------------------

    def messages(self, topic: str) -> list[ReadMessage]:
        return list(read_topic(self.cfg.kafka, topic))

    def records(self) -> list[tuple[BillingRecord, bytes]]:
        codec = build_codec(self.cfg)
        return [(codec.decode_record(m.value), m.value)
                for m in self.messages(self.cfg.kafka.topics.records) if m.value is not None]

    def manifests(self) -> list[PeriodManifest]:
        codec = build_codec(self.cfg)
        return [codec.decode_manifest(m.value)
                for m in self.messages(self.cfg.kafka.topics.manifests) if m.value is not None]

    def end_offsets(self) -> dict[str, tuple[int, ...]]:
        """High watermarks of every partition of the three topics (transaction markers too)."""
        cfg = self.cfg.kafka
        consumer = Consumer(consumer_config(cfg))
        try:
            out = {}
            for topic in (cfg.topics.records, cfg.topics.manifests, cfg.topics.checkpoint):
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                out[topic] = tuple(
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                    for p in sorted(meta.partitions))
            return out
        finally:
            consumer.close()
