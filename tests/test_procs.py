"""Process-group helpers: a frozen group is one whose every thread has stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from harness.brokers.procs import freeze_group, group_stopped
from harness.waiting import wait_until

# A process with a second thread that keeps running, as a service's AMQP thread does.
BUSY = ("import threading, time\n"
        "def spin():\n"
        "    while True: time.sleep(0.001)\n"
        "threading.Thread(target=spin, daemon=True).start()\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(0.001)\n")


def test_freeze_group_returns_once_every_thread_has_stopped():
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"up"
        assert not group_stopped(proc.pid)
        freeze_group(proc.pid)
        assert group_stopped(proc.pid)
        os.killpg(proc.pid, signal.SIGCONT)
        wait_until(lambda: not group_stopped(proc.pid), 10, "the group running again")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
