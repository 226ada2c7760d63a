#!/usr/bin/env python3
"""Run the crash campaign of tests/system outside pytest, at any size, and print its figures.

    .venv/bin/python scripts/crash-campaign.py --seed 20261129 --kills 100 --hours 20

Starts its own noida-db broker and Sysdig simulator on 127.0.0.1, kills `chargeback-exporter run
--once` with SIGKILL at seeded points, restarts it until it catches up, then checks the topics
against the fleet's ground truth. Prints one JSON summary; exits 1 if the ledger is not exact.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chargeback_simulator.fleet import FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from tests.rigs.campaign import SLOW_PRODUCER, Campaign, CampaignSpec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--kills", type=int, default=36)
    parser.add_argument("--hours", type=int, default=17, help="hours of 10-minute periods to export")
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--workloads", type=int, default=6)
    parser.add_argument("--fast-producer", action="store_true",
                        help="keep librdkafka's default batching (shorter transactions)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and print it")
    args = parser.parse_args()
    spec = CampaignSpec(
        seed=args.seed, kills=args.kills, hours=args.hours,
        fleet=FleetSpec(seed=3, clusters=args.clusters, namespaces_per_cluster=args.namespaces,
                        workloads_per_namespace=args.workloads),
        producer_extra=() if args.fast_producer else tuple(SLOW_PRODUCER.items()),
        # Enough periods for every planned kill: progress per kill is at most max_after periods.
        max_after=max(1, min(3, args.hours * 6 // max(1, args.kills))),
    )
    workdir = Path(tempfile.mkdtemp(prefix="crash-campaign-"))
    broker = LocalBroker("noida", data_dir=workdir / "noida")
    broker.start()
    try:
        result = Campaign(spec, workdir, broker).run()
    finally:
        broker.cleanup()
    summary = result.summary()
    if args.keep:
        summary["workdir"] = str(workdir)
    print(json.dumps(summary, indent=1))
    ledger = result.ledger
    if ledger is None or ledger.problems:
        for line in (ledger.problems if ledger else ["no ledger"]):
            print(line, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
