"""`chargeback-exporter simulate` as a real subprocess: it serves until SIGTERM (flag validation
in-process is in tests/unit/simulator/test_sim_command.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

from sdcclient import SdMonitorClient

from chargeback_simulator.command import DEFAULT_TOKEN
from tests.rigs.paths import ROOT
from tests.rigs.small_fleet import T0

REPO = ROOT


def test_subprocess_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "simulate", "--now", "2024-01-01T03:30:00Z",
         "--clusters", "1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=30)
        assert first and first[0], "simulate printed nothing within 30 s"
        match = re.search(r"http://127\.0\.0\.1:\d+", first[0])
        assert match, first[0]
        client = SdMonitorClient(token=DEFAULT_TOKEN, sdc_url=match.group(0))
        ok, res = client.get_data_promql_instant("count(sysdig_container_cpu_cores_used)")
        assert ok and res["data"]["result"][0]["value"][0] == T0 + 3 * 3600 + 1800
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "stopped" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
