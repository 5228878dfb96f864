"""Structured JSON logs, one line per request, each with a request id (from X-Request-ID or made here)."""

from __future__ import annotations

import logging
import re
import time
import uuid

import orjson
from flask import Flask, Response, g, request

from api.paths import sent_path

_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LOG = logging.getLogger("api.requests")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str) -> None:
    """JSON lines on stderr for the app's loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("api", "fraud_service"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def request_id(given: str) -> str:
    """The id a request is logged and answered under: the caller's X-Request-ID when it is a plain token of at most
    64 characters, else a new one."""
    return given if _ID.match(given) else uuid.uuid4().hex


def log_request(request_id: str | None, method: str, path: str, status: int, started: float,
                key_id: str | None) -> None:
    """The request's log line (PATH as sent, STARTED a `time.perf_counter()`)."""
    _LOG.info("request", extra={"fields": {
        "request_id": request_id, "method": method, "path": path, "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3), "key_id": key_id,
    }})


def install(app: Flask) -> None:
    @app.before_request
    def _request_id() -> None:
        g.request_id = request_id(request.headers.get("X-Request-ID", ""))
        g.log_started = time.perf_counter()

    @app.after_request
    def _log(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        principal = g.get("principal")
        # the path as sent (`//metrics`, `/%68ealthz`), not as werkzeug read it (`/metrics`, `/healthz`)
        log_request(g.get("request_id"), request.method, sent_path(request.environ), response.status_code,
                    g.get("log_started", time.perf_counter()), principal.key_id if principal else None)
        return response
