"""Running `fraud-service serve` in tests: a free port, JSON over HTTP, the environment of a private home, and
which workers are up."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from tests.api.conftest import body_from_dataset, private_home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, key: str | None = None, timeout: float = 5) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(url: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


CLI = [sys.executable, "-m", "api.cli"]


def serve_env(serving_home: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a `serve` on a private copy of the trained home (SQLite evidence, own metrics)."""
    home = private_home(serving_home, tmp_path / "home")
    env = {**os.environ, "FRAUD_HOME": str(home), "FRAUD_LOG_LEVEL": "INFO"}
    for name in ("FRAUD_DATABASE_URL", "FRAUD_LIVE_LOG", "PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        env.pop(name, None)
    return env


def ready_workers(log: Path) -> set[int]:
    """The pids of the workers whose app has loaded (their "app ready" log line)."""
    pids = set()
    for line in log.read_text(errors="replace").splitlines():
        if '"app ready"' in line:
            pids.add(json.loads(line)["pid"])
    return pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"




def wait_ready(server: Any, log: Path, workers: int, seconds: float = 120) -> set[int]:
    """The pids of SERVER's loaded workers once WORKERS of them are up (AssertionError after SECONDS)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None and len(ready_workers(log)) < workers:
        time.sleep(0.25)  # waiting for the workers to load, not timing anything
    pids = ready_workers(log)
    assert len(pids) >= workers, log.read_text()[-2000:]
    return pids


def stop_all(servers: list[Any], handles: list[Any]) -> None:
    """Stop the `serve` process groups still running (SIGTERM, then wait) and close their log files."""
    import signal

    for server in servers:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    for handle in handles:
        handle.close()


class Load:
    """CLIENTS threads posting new returns as fast as answers come, recording every answer (or its failure)."""

    def __init__(self, base: str, key: str, dataset: Path, clients: int = 4, prefix: str = "kill-") -> None:
        sources = [str(s) for s in pd.read_parquet(dataset / "returns.parquet")["return_id"].iloc[:50]]
        self.bodies = [body_from_dataset(dataset, s) for s in sources]
        self.base, self.key, self.prefix = base, key, prefix
        self.answers: list[tuple[str, int, Any]] = []  # return_id, status (0: no answer), body
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            n = next(self._ids)
            return_id = f"{self.prefix}{n}"
            body = {**self.bodies[n % len(self.bodies)], "return_id": return_id}
            try:
                status, answer = post(f"{self.base}/v1/returns/assess", body, self.key)
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut mid-body: no answer
                status, answer = 0, repr(exc)
            with self._lock:
                self.answers.append((return_id, status, answer))
            if status == 0:
                self._stop.wait(0.02)  # the port is closed: don't spin while it is

    def successes(self) -> int:
        with self._lock:
            return sum(200 <= status < 300 for _, status, _ in self.answers)

    def until(self, successes: int, seconds: float = 60) -> None:
        """Wait until SUCCESSES 2xx answers in all (AssertionError after SECONDS)."""
        deadline = time.monotonic() + seconds
        while self.successes() < successes and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for answers, not timing anything
        assert self.successes() >= successes, self.answers[-5:]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
