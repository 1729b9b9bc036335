"""Shared Flask pieces: JSON errors, a body-size limit, health, and serving with waitress."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, jsonify
from werkzeug.exceptions import HTTPException

from lab_services import events, openapi
from lab_services.bus import Bus
from lab_services.settings import ServiceSettings, Settings, SettingsError, load
from lab_services.store_health import RETRY_AFTER_S, STORE_ERRORS, CommitWatch

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# File descriptors kept free beside the HTTP connections: the store's, the broker's, logs.
FD_MARGIN = 64


def configure_logging(level: str = "INFO") -> None:
    """One log format for every service."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("pika").setLevel(logging.WARNING)


def error(status: int, message: str, **fields: Any):
    """A JSON error response."""
    return jsonify({"error": message, **fields}), status


class BadBody(Exception):
    """A request body the API refuses: answered as a JSON 4xx naming the field."""

    def __init__(self, status: int, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def read_json(req: Request) -> Any:
    """The request's JSON body, strictly parsed; raise BadBody for anything else."""
    if not req.is_json:
        raise BadBody(415, "body: Content-Type must be application/json")
    raw = req.get_data(cache=False)
    if not raw:
        raise BadBody(400, "body: empty")
    try:
        return events.loads_strict(raw)
    except events.InvalidEvent as exc:
        raise BadBody(400, exc.reason) from None


def create_app(name: str, bus: Bus, health_extra: Callable[[], dict] | None = None, *,
               max_body_bytes: int = 64 * 1024, store: CommitWatch | None = None) -> Flask:
    """A Flask app with JSON errors, a request-size limit and `GET /health`.

    With `store`, a store that cannot commit makes `/health` answer 503, and a request it
    refuses gets a 503 with Retry-After naming the cause instead of a 500.
    """
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.json.sort_keys = False

    @app.errorhandler(BadBody)
    def _bad_body(exc: BadBody):
        return error(exc.status, exc.message, field=exc.field)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:
            return error(413, f"body: larger than {max_body_bytes} bytes", field="body")
        return error(exc.code or 500, exc.description or exc.name)

    def _store_failed(exc: Exception):
        # A full disk or an I/O error: nothing was stored, and a retry may succeed later.
        if store is not None:
            store.failed(exc)
        logging.getLogger(name).warning("store refused a request: %s", exc)
        response, status = error(503, f"not stored: the service's store cannot commit ({exc})",
                                 cause="store", retry=True)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response, status

    for store_error_type in STORE_ERRORS:
        app.register_error_handler(store_error_type, _store_failed)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logging.getLogger(name).exception("unhandled error")
        return error(500, f"internal error: {exc.__class__.__name__}")

    document = openapi.document(name.removesuffix("-service"), "/")
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(document))

    @app.get("/health")
    def health():
        store_error = store.check() if store is not None else None
        ok = bus.connected and store_error is None
        body = {"service": name, "pid": os.getpid(),
                "status": "ok" if ok else "degraded",
                "broker": "connected" if bus.connected else "disconnected",
                "reconnects": bus.reconnects, "reconnect_attempts": bus.reconnect_attempts,
                **({"store": "ok" if store_error is None else "failing"}
                   if store is not None else {}),
                **({"store_error": store_error} if store_error is not None else {}),
                **({"problem": bus.problem} if bus.problem and not bus.connected else {}),
                **(health_extra() if health_extra else {})}
        return jsonify(body), 200 if ok else 503

    return app


def connection_limit(wanted: int) -> int:
    """How many HTTP connections the open-file limit allows, raising its soft limit if it can.

    Every connection is a file descriptor: a limit above what the process may open would
    make accept() fail instead of queueing new clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < need:
        allowed = max(10, soft - FD_MARGIN)
        logging.getLogger(__name__).warning(
            "HTTP_CONNECTION_LIMIT %d needs %d open files, the process may open %d: "
            "holding at most %d connections", wanted, need, soft, allowed)
        return allowed
    return wanted


def serve(app: Flask, bus: Bus, settings: ServiceSettings) -> None:
    """Serve the app with waitress until SIGTERM or Ctrl-C, then close the bus cleanly."""
    from waitress import create_server

    server = create_server(app, host=settings.host, port=settings.port,
                           threads=settings.http_threads,
                           # Idle clients hold a socket each, never a thread: with room for
                           # many and a short idle timeout, slow clients cannot lock out the
                           # others (waitress stops accepting at the limit).
                           connection_limit=connection_limit(settings.http_connection_limit),
                           channel_timeout=settings.http_idle_timeout,
                           # How often idle connections are looked for: the timeout is kept
                           # to within half of itself.
                           cleanup_interval=max(1, min(30, settings.http_idle_timeout // 2)),
                           # select() cannot watch a descriptor numbered 1024 or above.
                           asyncore_use_poll=True,
                           # Up to this, Flask answers a JSON 413 naming the body; waitress
                           # refuses anything larger itself, in plain text.
                           max_request_body_size=max(settings.max_body_bytes * 4, 16 << 20),
                           ident=app.name)

    def _stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    logging.getLogger(app.name).info("%s listening on http://%s:%s", app.name,
                                     server.effective_host, server.effective_port)
    try:
        server.run()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.close()
        bus.close()


def run_service(name: str, make_service: Callable[[Settings], Any],
                make_app: Callable[[Any], Flask]) -> None:
    """Run one service process: settings, logging, the service, its HTTP app and bus."""
    try:
        settings = load(name)
    except SettingsError as exc:
        configure_logging()
        logging.getLogger(name).error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    service = make_service(settings)
    app = make_app(service)
    service.bus.start()
    service.start()
    serve(app, service.bus, settings.service)
