"""Digest of the billing records the exporter computes for the simulator's fleet.

`python scripts/record-digest.py OUT.json` computes several hourly periods of a fixed fleet
(priced, shared costs on), each once as first published and once as a correction (revision
bump), and writes, per period and revision, the SHA-256 of every record's Avro body in record_id
order, plus the manifests' content hashes. Run on two revisions of the code, equal files show
that records are unchanged, byte for byte, for the same input.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from exporter.clock import FakeClock
from exporter.config import load_config
from exporter.periods import Period
from exporter.pipeline import Prior

try:  # the composition root and the simulator's package, or their earlier homes
    from chargeback_simulator.fleet import Fleet, FleetSpec
    from chargeback_simulator.server import SimulatorServer
    from exporter.wiring import build_pipeline
except ImportError:  # pragma: no cover - older layouts
    from exporter.simulator.fleet import Fleet, FleetSpec  # type: ignore[no-redef]
    from exporter.simulator.server import SimulatorServer  # type: ignore[no-redef]

    from exporter.commands import build_pipeline  # type: ignore[attr-defined,no-redef]

H = 3600
T0 = 1_794_009_600  # 2026-11-07T00:00:00Z
PERIODS = 6
TOKEN = "digest-token"  # noqa: S105 - the simulator's, not a secret
# The card of tests.rigs.rate_cards.JANUARY_2026, written out: the script also runs on older
# revisions of the code, which do not have that module.
RATE_CARD = """\
currency: EUR
versions:
  - id: "2026-01"
    effective_from: 2026-01-01T00:00:00Z
    default: {cpu: "0.0310", memory: "0.0042"}
"""


def main(out: Path) -> None:
    clock = FakeClock(T0 + PERIODS * H + 600)
    fleet = Fleet(FleetSpec(seed=7, clusters=2, namespaces_per_cluster=3, workloads_per_namespace=6),
                  clock=clock, history=(PERIODS + 2) * H, timelines=((10, (PERIODS + 2) * H),))
    server = SimulatorServer(fleet, clock, tokens=[TOKEN])
    server.start()
    card = out.with_suffix(".rate-card.yaml")
    card.write_text(RATE_CARD)
    shared = sorted({w.key.namespace for w in fleet.workloads()})[0]
    try:
        cfg = load_config(environ={}, overrides={
            "sysdig": {"url": server.url, "token": TOKEN, "retention_tiers": False},
            "periods": {"settle_delay": "2m"},
            "pricing": {"rate_card_file": str(card)},
            "shared_costs": {"enabled": True, "namespaces": [shared]},
        })
        pipeline = build_pipeline(cfg, clock)
        doc: dict[str, Any] = {}
        for i in range(PERIODS):
            period = Period(T0 + i * H, T0 + (i + 1) * H)
            first = pipeline.compute(period)
            # A correction: what was published before had another content hash.
            prior = {m.cluster: Prior(m.revision, "0" * 64) for m in first.manifests}
            again = pipeline.compute(period, prior)
            for name, result in (("first", first), ("correction", again)):
                bodies = result.bodies
                h = hashlib.sha256()
                for rid in sorted(bodies):
                    h.update(rid.encode() + bodies[rid])
                doc[f"{period.start}/{name}"] = {
                    "records": len(bodies), "bodies": h.hexdigest(),
                    "manifests": sorted((m.cluster, m.revision, m.record_count, m.content_hash)
                                        for m in result.manifests),
                }
        out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    finally:
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
