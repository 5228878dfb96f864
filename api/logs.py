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


def install(app: Flask) -> None:
    log = logging.getLogger("api.requests")

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _ID.match(given) else uuid.uuid4().hex
        g.log_started = time.perf_counter()

    @app.after_request
    def _log(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        principal = g.get("principal")
        log.info("request", extra={"fields": {
            # the path as sent (`//metrics`, `/%68ealthz`), not as werkzeug read it (`/metrics`, `/healthz`)
            "request_id": g.get("request_id"), "method": request.method, "path": sent_path(request.environ),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - g.get("log_started", time.perf_counter())) * 1000, 3),
            "key_id": principal.key_id if principal else None,
        }})
        return response
