"""Idle and slow HTTP clients cannot lock the others out of a service (issue 18, item 2).

waitress stops accepting at its connection limit (100 by default) and dropped idle
connections only after 120 s: 100 idle clients held the order service down for minutes.
"""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Iterator

import psutil
import pytest
import requests

from harness.waiting import wait_until
from lab_services.settings import SettingsError, load
from lab_services.web import FD_MARGIN, connection_limit

IDLE = 200


@contextlib.contextmanager
def idle_connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    """n TCP connections to a port that never send a byte; closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield socks
    finally:
        for s in socks:
            s.close()


def held_by(pid: int, port: int) -> int:
    """How many established connections the process holds on its listening port."""
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


@pytest.mark.broker
def test_idle_connections_do_not_lock_out_orders_or_health(make_lab):
    lab = make_lab()
    with contextlib.ExitStack() as stack:
        for svc in lab.services.values():
            stack.enter_context(idle_connections(svc.port, IDLE))
        for name, svc in lab.services.items():
            # The service took every idle client in (waitress stops accepting at its limit).
            wait_until(lambda svc=svc: held_by(svc.proc.pid, svc.port) >= IDLE, 30,
                       f"{name} holding {IDLE} idle connections")
        with requests.Session() as http:
            answers = [lab.place_order("idle-neighbours", [{"item_id": "item_1",
                                                             "quantity": 1}], session=http)
                       for _ in range(10)]
            assert [r.status_code for r in answers] == [201] * 10
            for name, svc in lab.services.items():
                r = http.get(svc.url + "/health", timeout=10)
                assert r.status_code == 200, (name, r.text)
        ids = [r.json()["order_id"] for r in answers]
        lab.wait_notified(ids, 60)


@pytest.mark.broker
def test_an_idle_connection_is_closed_after_the_idle_timeout(make_lab):
    lab = make_lab(extra_env={"HTTP_IDLE_TIMEOUT": "2"})
    with idle_connections(lab.services["order"].port, 1) as (sock,):
        sock.settimeout(0.2)

        def closed_by_server() -> bool:
            try:
                return sock.recv(1) == b""
            except TimeoutError:
                return False

        wait_until(closed_by_server, 30, "the idle connection closed by the order service")
    assert lab.get("order", "/health")["status"] == "ok"


@pytest.mark.parametrize("name, value", [("HTTP_CONNECTION_LIMIT", "5"),
                                         ("HTTP_CONNECTION_LIMIT", "lots"),
                                         ("HTTP_IDLE_TIMEOUT", "0"),
                                         ("HTTP_IDLE_TIMEOUT", "-3")])
def test_http_limits_out_of_range_are_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        load("order", {name: value})


def test_the_http_settings_default_to_room_for_many_idle_clients():
    service = load("order", {}).service
    assert service.http_connection_limit >= 5 * IDLE
    assert service.http_idle_timeout <= 60


def test_the_connection_limit_never_exceeds_what_the_process_may_open():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    assert connection_limit(hard * 2) == hard - FD_MARGIN
    assert connection_limit(100) == 100
