"""A service that trickles its answer cannot hold the harness past a request's deadline.

A real socket server sends its answer a byte at a time, each byte well inside requests' own
(per-read) timeout: without a total deadline the request would run until the whole answer
was out. The proof is what the server managed to send before the client hung up, never a
measured time.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from harness.lab.client import LabClient
from harness.lab.deadline import DeadlineSession

BODY = b"[" + b" " * 2000 + b"]"  # JSON, once all of it has arrived
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(BODY)).encode() + b"\r\n\r\n")


class Trickler:
    """Answers every connection with HEAD + BODY, `head_at_once` or not, a byte per `gap`
    seconds after that; counts the bytes it got out before the client hung up."""

    def __init__(self, *, head_at_once: bool, gap: float = 0.05) -> None:
        self.head_at_once, self.gap = head_at_once, gap
        self.sent = 0
        self.finished = threading.Event()  # the whole answer went out: the client waited
        self.hung_up = threading.Event()
        self.stop = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.recv(65536)  # the request
            answer = HEAD + BODY
            if self.head_at_once:
                conn.sendall(HEAD)
                self.sent, answer = len(HEAD), BODY
            try:
                for byte in answer:
                    if self.stop.wait(self.gap):
                        return
                    conn.sendall(bytes([byte]))
                    self.sent += 1
                self.finished.set()
            except OSError:  # the client closed the connection
                self.hung_up.set()

    def close(self) -> None:
        self.stop.set()
        self.server.close()


@pytest.fixture(params=[True, False], ids=["trickled-body", "trickled-headers"])
def trickler(request: pytest.FixtureRequest) -> Iterator[Trickler]:
    t = Trickler(head_at_once=request.param)
    yield t
    t.close()


def test_a_trickled_answer_ends_at_the_deadline_not_when_the_service_is_done(trickler):
    with pytest.raises(requests.Timeout):
        DeadlineSession().get(trickler.url + "/notifications", timeout=1.0)
    # The client gave up while the service still had most of its answer to send.
    assert not trickler.finished.is_set()
    assert trickler.sent < len(HEAD + BODY) // 2


def test_the_lab_client_reads_a_service_through_the_deadline(trickler):
    class Svc:
        url, http = trickler.url, True

    class Client(LabClient):
        def __init__(self) -> None:
            self.services, self.gaps = {"notification": Svc()}, []

    # What the run does with any request error: the read fails, the grade goes on.
    with pytest.raises(requests.RequestException):
        Client().get("notification", "/notifications", timeout=1.0)
    assert not trickler.finished.is_set()


def test_a_prompt_answer_is_read_whole_through_the_same_session():
    t = Trickler(head_at_once=True, gap=0.0)
    try:
        assert DeadlineSession().get(t.url + "/x", timeout=5.0).json() == []
    finally:
        t.close()
