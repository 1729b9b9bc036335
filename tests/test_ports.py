"""Port reservation across processes: two processes never get the same free port."""

from __future__ import annotations

import subprocess
import sys

from harness import ports
from harness.ports import free_ports, port_free, release_ports, reserved

HOLD = """
import sys
from harness.ports import _reserve
held = [p for p in map(int, sys.argv[1:]) if _reserve(p)]
print(" ".join(map(str, held)), flush=True)
sys.stdin.read()
"""


def test_free_ports_are_distinct_free_and_reserved_until_released():
    got = free_ports(5)
    try:
        assert len(set(got)) == 5
        assert all(port_free(p) and reserved(p) for p in got)
    finally:
        release_ports(got)
    assert not any(reserved(p) for p in got)


def test_a_port_another_process_reserved_is_skipped_until_that_process_dies(monkeypatch):
    a, b, c = free_ports(3)
    release_ports([a, b, c])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(a), str(b)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().split() == [str(a), str(b)]
        monkeypatch.setattr(ports, "candidate_ports", lambda: [a, b, c])
        mine = free_ports(1)
        assert mine == [c]  # a and b are free to bind, but the other process holds them
        release_ports(mine)
    finally:
        holder.kill()  # killed, not closed: the kernel drops its locks with it
        holder.wait(timeout=30)
    # The process has exited (waited for), so its descriptors and their locks are gone.
    again = free_ports(2)
    assert sorted(again) == sorted([a, b])
    release_ports(again)


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch):
    import socket

    a, b = free_ports(2)
    release_ports([a, b])
    with socket.socket() as listener:  # a listener that never reserves (another program)
        listener.bind(("127.0.0.1", a))
        listener.listen()
        monkeypatch.setattr(ports, "candidate_ports", lambda: [a, b])
        got = free_ports(1)
    assert got == [b]
    assert not reserved(a)
    release_ports(got)
