"""Peak RSS over a long backfill: the same per-period path, many periods, one process.

Records of a period are garbage once published, so resident memory should level off after
the first period. The driver compares a one-period process with a many-period one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.fleets import period
from bench.measure import current_rss_mib, make_rig, peak_rss_mib, run_period


def backfill(recording: Path, url: str, bootstrap: str, tag: str, periods: int) -> dict[str, Any]:
    """Export `periods` consecutive periods; RSS after each, peak at the end."""
    rig = make_rig(url, bootstrap, tag, recording.parent)
    rss: list[float] = []
    records = 0
    began = time.perf_counter()
    try:
        for i in range(periods):
            out = run_period(rig, period(i))
            records += out["records"]
            del out
            rss.append(current_rss_mib())
    finally:
        rig.close()
    return {"periods": periods, "records": records, "seconds": time.perf_counter() - began,
            "rss_after_period_mib": rss, "peak_rss_mib": peak_rss_mib()}
