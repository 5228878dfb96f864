"""gunicorn settings used by `fraud-service serve` (passed as `--config python:api.gunicorn_conf`)."""

from __future__ import annotations

from typing import Any

accesslog = None  # the app writes one JSON line per request itself (api/logs.py)
timeout = 60
graceful_timeout = 20
keepalive = 5
# gunicorn's control socket (`gunicornc`) sits at one path per user (~/.gunicorn/gunicorn.ctl): two `serve` instances on
# one host would take it from each other, and the service is run by signals and `serve` alone
control_socket_disable = True

OWNER = "owner.pid"
"""The file in an instance's metrics folder naming the master that owns it (`serve` writes it): only that master
removes the folder when it exits."""


def post_fork(server: Any, worker: Any) -> None:
    """A worker dies with its master: when the master is killed (even with SIGKILL) the kernel sends the worker
    SIGTERM, so no orphan keeps answering on, or holding, the port."""
    import ctypes
    import os
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM) != 0:
        server.log.warning("worker %s cannot ask to die with its master (prctl errno %s)", worker.pid,
                           ctypes.get_errno())
    if os.getppid() != server.pid:  # the master died before the request took effect
        os._exit(1)


def pre_fork(server: Any, worker: Any) -> None:
    """The worker about to be forked lives from now (api.gunicorn_worker: old workers hand over to new ones)."""
    from api.worker_table import born

    born(worker.age)


def on_reload(server: Any) -> None:
    """A reload (`kill -HUP`) begins: the workers alive now are the old ones, which serve on until a new one serves
    (api.gunicorn_worker)."""
    from api.worker_table import reloading

    reloading(server.worker_age)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges stop counting in /metrics (prometheus_client multiprocess mode), and neither its
    connections against the others' share nor its life for the old workers of a reload (api.gunicorn_worker)."""
    import os

    from api.worker_table import clear

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


def on_exit(server: Any) -> None:
    """The instance's metrics folder goes with it (`serve` empties it at the next start anyway): in /dev/shm it
    would hold memory after the server stopped. Only while it is still this master's: an instance started on the
    same home and port as soon as this one's port was free has emptied it and made it its own, and removing it then
    left that instance answering 500 to everything (a helper's fault probe)."""
    import os
    import shutil
    from pathlib import Path

    folder = os.environ.get("FRAUD_METRICS_DIR")
    try:
        owner = (Path(folder) / OWNER).read_text().strip() if folder else None
    except OSError:
        owner = None
    if folder and owner == str(server.pid):
        shutil.rmtree(folder, ignore_errors=True)
