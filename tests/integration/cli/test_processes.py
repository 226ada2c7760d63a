"""`stop_process` ends a child: politely, then by force after the grace period."""

from __future__ import annotations

import signal
import subprocess
import sys

from chargeback_simulator.processes import stop_process

IGNORES_TERM = ("import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n")


def test_a_child_that_honours_sigterm_ends_with_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(proc, 10)
    assert proc.returncode == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    stop_process(proc, 0.2)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()


def test_kill_and_process_group() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    stop_process(proc, 10, group=True, kill=True)
    assert proc.returncode == -signal.SIGKILL


def test_an_exited_child_is_left_alone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    stop_process(proc, 10, group=True)  # its group is gone: signalling it would raise
    assert proc.returncode == 0
