"""Shared Flask pieces: JSON errors, a body-size limit, health, and serving with waitress."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from lab_services.bus import Bus

MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", str(64 * 1024)))
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """One log format for every service; level from LOG_LEVEL (default INFO)."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), format=LOG_FORMAT,
                        stream=sys.stderr)
    logging.getLogger("pika").setLevel(logging.WARNING)


def error(status: int, message: str, **fields: Any):
    """A JSON error response."""
    return jsonify({"error": message, **fields}), status


def create_app(name: str, bus: Bus, health_extra: Callable[[], dict] | None = None) -> Flask:
    """A Flask app with JSON errors, a request-size limit and `GET /health`."""
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logging.getLogger(name).exception("unhandled error")
        return error(500, f"internal error: {exc.__class__.__name__}")

    @app.get("/health")
    def health():
        body = {"service": name, "pid": os.getpid(),
                "status": "ok" if bus.connected else "degraded",
                "broker": "connected" if bus.connected else "disconnected",
                "reconnects": bus.reconnects, "reconnect_attempts": bus.reconnect_attempts,
                **(health_extra() if health_extra else {})}
        return jsonify(body), 200 if bus.connected else 503

    return app


def serve(app: Flask, bus: Bus, port: int) -> None:
    """Serve the app with waitress until SIGTERM or Ctrl-C, then close the bus cleanly."""
    from waitress import create_server

    server = create_server(app, host=os.environ.get("HOST", "127.0.0.1"), port=port,
                           threads=int(os.environ.get("HTTP_THREADS", "8")),
                           max_request_body_size=MAX_BODY_BYTES * 4, ident=app.name)

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


def run_service(make_service: Callable[[], Any], make_app: Callable[[Any], Flask]) -> None:
    """Run one service process: logging, the service, its HTTP app and bus, until stopped."""
    configure_logging()
    service = make_service()
    app = make_app(service)
    service.bus.start()
    serve(app, service.bus, service.config.port)
