"""Stopping a child process we started (a local broker, Prometheus, a bench helper)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], grace: float, *,
                 group: bool = False, kill: bool = False) -> None:
    """Signal `proc` (its whole process group when `group`) with SIGTERM, or SIGKILL when
    `kill`; if it has not exited after `grace` seconds, SIGKILL it and reap it. Nothing is
    signalled when it has already exited."""
    if proc.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)

    send(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=10)
