"""A namespace per grade: fixed addresses (HTTP on 5001, a broker at rabbitmq:5672) are an
implementation's own there, so two such implementations run side by side."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import requests

from harness.brokers.netns import GradeNamespace, netns_available
from harness.waiting import wait_until

pytestmark = pytest.mark.skipif(not netns_available()[0], reason=netns_available()[1])

SERVE = "import http.server as h; h.test(h.SimpleHTTPRequestHandler, port=5001, bind='127.0.0.1')"


def test_two_programs_on_port_5001_side_by_side_and_a_host_name_inside(tmp_path):
    upstream = socket.create_server(("127.0.0.1", 0))  # stands for the broker
    spaces, procs = [GradeNamespace(("rabbitmq",)).create() for _ in range(2)], []
    try:
        for i, ns in enumerate(spaces):
            (tmp_path / str(i)).mkdir()
            (tmp_path / str(i) / "who").write_text(f"shop {i}")
            procs.append(subprocess.Popen([*ns.prefix, sys.executable, "-c", SERVE],
                                          cwd=tmp_path / str(i), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for ns in spaces:
            wait_until(lambda ns=ns: ns.accepts(5001), 20, "port 5001 open inside")
        outs = [ns.forward_out(5001) for ns in spaces]
        got = [requests.get(f"http://127.0.0.1:{f.port}/who", timeout=5).text for f in outs]
        assert got == ["shop 0", "shop 1"]
        # Inside, rabbitmq:5672 reaches what the harness forwards there.
        spaces[0].forward_in(5672, lambda: upstream.getsockname())
        probe = subprocess.run(
            [*spaces[0].prefix, sys.executable, "-c",
             "import socket; socket.create_connection(('rabbitmq', 5672), timeout=5).close()"],
            capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, probe.stderr
        upstream.settimeout(5)
        upstream.accept()[0].close()  # the connection arrived at the "broker"
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for ns in spaces:
            ns.destroy()
        upstream.close()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns.name in left for ns in spaces)


def test_a_connection_forwarded_in_stays_open_while_idle(monkeypatch):
    """An idle AMQP consumer through the forward is not cut when the connect timeout passes
    (it was: the pump's recv inherited the timeout, and the original lab lost its consumers)."""
    from harness.brokers import netns

    monkeypatch.setattr(netns, "CONNECT_TIMEOUT_S", 0.2)
    upstream = socket.create_server(("127.0.0.1", 0))  # stands for the broker
    listener = netns._listener("127.0.0.1", 0)
    fwd = netns.Forward(listener, lambda: netns.connect_to(upstream.getsockname), "idle")
    client = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
    try:
        upstream.settimeout(5)
        server, _ = upstream.accept()
        client.settimeout(1.0)  # five times the connect timeout with nothing sent
        with pytest.raises(TimeoutError):
            client.recv(1)  # an EOF (b"") here was the bug
        server.sendall(b"still here")
        client.settimeout(5)
        assert client.recv(64) == b"still here"
        server.close()
    finally:
        client.close()
        fwd.close()
        upstream.close()
