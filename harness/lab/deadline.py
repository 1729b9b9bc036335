"""HTTP with a total deadline per request.

`requests`' timeout bounds each read from the socket, not the whole answer: a service that
trickles its answer a byte at a time (each byte inside the read timeout) holds the caller,
and the grade, for as long as it likes. Here `timeout` is the time the whole request may
take, from connecting to the last byte of the body; past it the request raises
`requests.Timeout`, whatever the service is still sending.

    session() -> DeadlineSession      this thread's session (sessions are not shared)
    DeadlineSession().get(url, timeout=10)   at most 10 s, all told (plain http://)
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool
from urllib3.connection import HTTPConnection

_current = threading.local()  # .at: the deadline (time.monotonic()) of this thread's request
_sessions = threading.local()


class _DeadlineSocket(socket.socket):
    """A socket whose every blocking call waits at most until its thread's deadline."""

    @classmethod
    def adopt(cls, sock: socket.socket) -> _DeadlineSocket:
        """The same connection (file descriptor and timeout) as this class."""
        timeout = sock.gettimeout()
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.settimeout(timeout)
        return new

    def _bound(self) -> None:
        at = getattr(_current, "at", None)
        if at is None:  # no deadline: the socket's own (per-call) timeout
            return
        left = at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's total deadline has passed")
        self.settimeout(left)

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._bound()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self._bound()
        return super().recv(*args, **kwargs)

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._bound()
        return super().sendall(*args, **kwargs)

    def send(self, *args: Any, **kwargs: Any) -> int:
        self._bound()
        return super().send(*args, **kwargs)


class _Connection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _DeadlineSocket.adopt(super()._new_conn())


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme, "http": _Pool}


class DeadlineSession(requests.Session):
    """A requests session whose `timeout` (a number of seconds) bounds the whole request."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # the lab's services are local: no proxy in between
        self.mount("http://", _Adapter())

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                timeout: float = 10.0, **kwargs: Any) -> requests.Response:
        """Send a request that ends, answered or not, within `timeout` seconds."""
        _current.at = time.monotonic() + timeout
        try:
            return super().request(method, url, *args, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            if time.monotonic() < _current.at:
                raise
            # A body cut off by the deadline reads as a ConnectionError in requests: say what
            # it was.
            raise requests.Timeout(f"no complete answer from {url!r} within {timeout:g} s "
                                   f"({exc.__class__.__name__})", request=exc.request) from exc
        finally:
            _current.at = None


def session() -> DeadlineSession:
    """This thread's DeadlineSession (made on first use)."""
    if not hasattr(_sessions, "session"):
        _sessions.session = DeadlineSession()
    return _sessions.session
