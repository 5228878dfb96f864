"""gunicorn settings used by `fraud-service serve` (passed as `--config python:api.gunicorn_conf`)."""

from __future__ import annotations

from typing import Any

accesslog = None  # the app writes one JSON line per request itself (api/logs.py)
timeout = 60
graceful_timeout = 20
keepalive = 5


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges stop counting in /metrics (prometheus_client multiprocess mode), and its
    connections no longer count against the others' share (api.gunicorn_worker)."""
    import os

    from api.gunicorn_worker import clear

    clear(worker.age)

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    """Finish the live-fact writes a worker still holds before it goes."""
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("fraud") if app is not None else None
    if service is not None:
        service.close()
