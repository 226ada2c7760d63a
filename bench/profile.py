"""cProfile of one period of the exporter's path (after a warm-up period)."""

from __future__ import annotations

import cProfile
import io
import pstats
from pathlib import Path

from bench.fleets import period
from bench.measure import make_rig, run_period


def profile(recording: Path, url: str, bootstrap: str, tag: str, top: int = 25) -> str:
    """The top `top` functions by own time, then by cumulative time, as pstats text."""
    rig = make_rig(url, bootstrap, tag, recording.parent)
    try:
        run_period(rig, period(-1))
        prof = cProfile.Profile()
        prof.runcall(run_period, rig, period(0))
    finally:
        rig.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs()
    out.write(f"== by own time (tottime), top {top}\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write(f"== by cumulative time, top {top}\n")
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()
