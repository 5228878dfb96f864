"""`kill -9` under load: a worker, then the master. Every 2xx answer a client got has its stored record, and the
evidence chain verifies after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from fraud_service.bootstrap import database
from fraud_service.config import Settings
from fraud_service.store import chain
from fraud_service.store.schema import Assessment
from tests.conftest import TrainedWorld
from tests.serving import CLI, Load, free_port, pid_alive, serve_env, stop_all, wait_ready

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_kill_9_of_a_worker_then_the_master_loses_no_answered_decision(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> None:
    env = serve_env(serving_home, tmp_path)
    subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    key = subprocess.run([*CLI, "keys", "create", "--role", "scoring", "--name", "chaos"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    port = free_port()
    servers: list[subprocess.Popen[bytes]] = []
    handles = []

    def start(log: Path) -> subprocess.Popen[bytes]:
        handles.append(log.open("wb"))
        servers.append(subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "2", "--threads", "2",
                                         "--analyst-port", "0"],
                                        env=env, stdout=handles[-1], stderr=subprocess.STDOUT,
                                        start_new_session=True))
        return servers[-1]

    load = None
    try:
        first = start(tmp_path / "first.log")
        workers = wait_ready(first, tmp_path / "first.log", 2)
        load = Load(f"http://127.0.0.1:{port}", key, trained_world.dataset)
        load.until(20)
        os.kill(min(workers), signal.SIGKILL)  # a worker, mid-load: the master starts another
        load.until(load.successes() + 20)
        os.kill(first.pid, signal.SIGKILL)  # the master: its workers die with it
        first.wait(timeout=30)
        second = start(tmp_path / "second.log")
        wait_ready(second, tmp_path / "second.log", 2)
        load.until(load.successes() + 20)
    finally:
        if load is not None:
            load.stop()
        stop_all(servers, handles)
    assert not any(pid_alive(p) for p in workers)
    answered = {rid: body["assessment_id"] for rid, status, body in load.answers if 200 <= status < 300}
    assert len(answered) >= 60
    engine, sessions = database(Settings.from_env(env))
    try:
        with sessions() as session:
            stored = dict(session.execute(select(Assessment.return_id, Assessment.id)).all())
            verified = chain.verify(session)
    finally:
        engine.dispose()
    missing = {rid for rid in answered if stored.get(rid) != answered[rid]}
    assert missing == set()  # zero answered decisions without their stored record
    assert verified.ok and verified.events > len(stored)  # every assessment's event, and the key's and cases'

