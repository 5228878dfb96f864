"""Two `serve` instances on different ports, one PostgreSQL evidence database, one Redis online store.

On one host they share one home. As on two hosts, each has a home of its own: they share only what several hosts
can (the databases, Redis, and the model registry's directory, FRAUD_MODEL_DIR, as on a network filesystem), and
the live-fact log is in PostgreSQL (FRAUD_LIVE_LOG).

Driven at once, they keep every promise one instance keeps: every 2xx answer has exactly one stored assessment,
the evidence chain verifies, a return sent to both at the same moment is stored once, a return assessed on one
counts in the other's live features within a second, and a model promoted on one is served by both within five
seconds. Each keeps its own analyst worker and its own metrics.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from sqlalchemy import func, select

from fraud_service.config import Settings
from fraud_service.store import chain
from fraud_service.store.schema import Assessment
from models.registry import ModelRegistry
from tests.api.conftest import body_from_dataset
from tests.conftest import TrainedWorld
from tests.serving import CLI, Load, free_port, get, post, serve_env, stop_all, wait_ready
from tests.store.conftest import postgres_engine

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
REDIS_DB = 13  # bench/features_bench.py uses 9, the parity tests 11


@pytest.fixture
def shared(serving_home: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment both instances share: a private home, a fresh PostgreSQL database, a Redis online store
    materialised from the home's features, and a registry holding v0002 beside production v0001."""
    engines = postgres_engine()
    engine = next(engines)
    try:
        env = serve_env(serving_home, tmp_path)
        env.update(FRAUD_DATABASE_URL=engine.url.render_as_string(hide_password=False),
                   FRAUD_ONLINE_STORE="redis", FRAUD_REDIS_URL=f"redis://127.0.0.1:6379/{REDIS_DB}")
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
        subprocess.run([*CLI, "features", "materialize"], env=env, check=True, capture_output=True)
        registry = ModelRegistry(Settings.from_env(env).models_dir)
        record = registry.load("production")
        registry.register(record.model_text(), {**record.manifest, "note": "retrained"}, record.policy,
                          gate={"against": "v0001", "passed": True})
        for role in ("scoring", "admin", "metrics"):
            env[f"KEY_{role}"] = subprocess.run([*CLI, "keys", "create", "--role", role, "--name", f"two-{role}"],
                                                env=env, check=True, capture_output=True, text=True).stdout.strip()
        yield env
    finally:
        engine.dispose()
        engines.close()  # drops the database


def _fresh_return(dataset: Path, customer: str, n: int, at: pd.Timestamp, return_type: str) -> dict[str, Any]:
    source = str(pd.read_parquet(dataset / "returns.parquet", columns=["return_id"])["return_id"].iloc[0])
    body = body_from_dataset(dataset, source, return_id=f"{customer}-{n}", customer_id=customer,
                             requested_at=at.isoformat(), return_type=return_type, channel="mail", reason="size")
    body["order"] = {**body["order"], "order_id": f"{customer}-o{n}", "customer_id": None,
                     "placed_at": (at - pd.Timedelta(days=3)).isoformat(), "delivered_at": None}
    return body


def _at_once(bases: list[str], body: dict[str, Any], key: str) -> list[tuple[int, Any]]:
    """BODY posted to every base at the same moment (the threads start together at a barrier)."""
    barrier = threading.Barrier(len(bases))
    answers: list[tuple[int, Any]] = [(0, None)] * len(bases)

    def send(i: int) -> None:
        barrier.wait()
        answers[i] = post(f"{bases[i]}/v1/returns/assess", body, key)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def _decisions(base: str, key: str) -> float:
    """The decisions an instance's /metrics counts (`fraud_decisions_total`, every label)."""
    request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("fraud_decisions_total{"))


def _hosts(env: dict[str, str], layout: str, tmp_path: Path) -> list[dict[str, str]]:
    """Each instance's environment: on one host, ENV for both; on two, a home of its own each (a copy of ENV's,
    without its registry and live-fact log), the registry in a directory both share, the live-fact log in the
    evidence database."""
    if layout == "one host":
        return [env, env]
    home = Path(env["FRAUD_HOME"])
    registry = tmp_path / "shared-registry"
    shutil.move(home / "models", registry)
    (home / "features" / "live.db").unlink(missing_ok=True)
    second = tmp_path / "second-host-home"
    shutil.copytree(home, second)
    apart = {"FRAUD_MODEL_DIR": str(registry), "FRAUD_LIVE_LOG": env["FRAUD_DATABASE_URL"]}
    return [{**env, **apart}, {**env, **apart, "FRAUD_HOME": str(second)}]


@pytest.mark.parametrize("layout", ["one host", "two hosts"])
def test_two_instances_keep_one_chain_one_answer_per_return_shared_live_features_and_one_model(
        shared: dict[str, str], trained_world: TrainedWorld, tmp_path: Path, layout: str) -> None:
    key, admin = shared["KEY_scoring"], shared["KEY_admin"]
    envs = _hosts(shared, layout, tmp_path)
    env = envs[0]
    ports, analyst_ports = [free_port(), free_port()], [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    servers: list[subprocess.Popen[bytes]] = []
    handles = []
    answers: list[tuple[int, str, int, Any]] = []  # instance, return_id, status, body: every answer of this test
    loads: list[Load] = []
    try:
        for i, (port, analyst) in enumerate(zip(ports, analyst_ports, strict=True)):
            log = tmp_path / f"instance-{i}.log"
            handles.append(log.open("wb"))
            servers.append(subprocess.Popen([*CLI, "serve", "--port", str(port), "--analyst-port", str(analyst),
                                             "--workers", "1", "--threads", "4"],
                                            env=envs[i], stdout=handles[-1], stderr=subprocess.STDOUT,
                                            start_new_session=True))
        for server, i in zip(servers, range(2), strict=True):
            wait_ready(server, tmp_path / f"instance-{i}.log", 2)  # the scoring worker and the analyst worker

        # both instances under load at once
        loads = [Load(base, key, trained_world.dataset, clients=2, prefix=f"two-{i}-") for i, base in enumerate(bases)]
        for load in loads:
            load.until(40)

        # the same return sent to both at the same moment: stored once, the other answer a replay of it
        for n in range(8):
            body = {**loads[0].bodies[n], "return_id": f"both-{n}"}
            pair = _at_once(bases, body, key)
            answers += [(i, body["return_id"], status, answer) for i, (status, answer) in enumerate(pair)]
            statuses = sorted(status for status, _ in pair)
            assert statuses in ([200, 201], [201, 409]), pair
            ids = {answer["assessment_id"] for status, answer in pair if status in (200, 201)}
            assert len(ids) == 1, pair

        # a return assessed on the first instance counts in the second's live features within a second
        customer = f"two-{uuid.uuid4().hex[:8]}"
        at = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=10)
        claim = _fresh_return(trained_world.dataset, customer, 0, at, "item_not_received")
        status, first = post(f"{bases[0]}/v1/returns/assess", claim, key)
        answered_at = time.monotonic()
        assert status == 201, first
        answers.append((0, claim["return_id"], status, first))
        seen_after = None
        for n in range(1, 200):
            probe = _fresh_return(trained_world.dataset, customer, n, at + pd.Timedelta(seconds=n), "return")
            sent = time.monotonic()
            status, answer = post(f"{bases[1]}/v1/returns/assess", probe, key)
            assert status == 201, answer
            answers.append((1, probe["return_id"], status, answer))
            _, evidence = get(f"{bases[1]}{answer['evidence']}", key)
            if evidence["features"]["cust_inr_90d"] >= 1:  # only the first instance's claim is item-not-received
                seen_after = sent - answered_at
                break
        assert seen_after is not None and seen_after < 1.0, seen_after

        # a model promoted on the first instance is served by both within five seconds
        status, promoted = post(f"{bases[0]}/v1/models/v0002/promote", {"reason": "two instances"}, admin)
        assert status == 200, promoted
        promoted_at = time.monotonic()
        serving: dict[int, float] = {}
        n = 0
        while len(serving) < 2 and time.monotonic() - promoted_at < 10:
            for i, base in enumerate(bases):
                n += 1
                body = {**loads[0].bodies[n % len(loads[0].bodies)], "return_id": f"promoted-{n}"}
                status, answer = post(f"{base}/v1/returns/assess", body, key)
                answers.append((i, body["return_id"], status, answer))
                if status == 201 and answer["model_version"] == "v0002":
                    serving.setdefault(i, time.monotonic() - promoted_at)
        assert set(serving) == {0, 1} and max(serving.values()) < 5.0, serving

        for load in loads:
            load.stop()
        for i, load in enumerate(loads):
            answers += [(i, *answer) for answer in load.answers]
        # each instance has its analyst worker, and its /metrics counts its own decisions, not the other's
        for i, (base, analyst) in enumerate(zip(bases, analyst_ports, strict=True)):
            assert get(f"http://127.0.0.1:{analyst}/healthz")[0] == 200
            decided = sum(1 for instance, _, status, _ in answers if instance == i and status == 201)
            unanswered = sum(1 for instance, _, status, _ in answers if instance == i and status == 0)
            # a request whose answer never arrived (status 0) may still have been decided and counted
            assert decided <= _decisions(base, env["KEY_metrics"]) <= decided + unanswered, i
    finally:
        for load in loads:
            load.stop()
        stop_all(servers, handles)

    answered = {rid: body["assessment_id"] for _, rid, status, body in answers if 200 <= status < 300}
    assert len(answered) >= 100
    from fraud_service.bootstrap import database

    engine, sessions = database(Settings.from_env(env))
    try:
        with sessions() as session:
            stored = dict(session.execute(select(Assessment.return_id, Assessment.id)).all())
            rows = session.execute(select(func.count()).select_from(Assessment)).scalar_one()
            verified = chain.verify(session)
    finally:
        engine.dispose()
    assert {rid for rid in answered if stored.get(rid) != answered[rid]} == set()  # each 2xx has its record
    assert rows == len(stored) == len(answered)  # and exactly one: nothing stored that was not answered
    assert verified.ok, verified
    if layout == "two hosts":  # nothing of the live features was kept on either host's disk
        assert not [e["FRAUD_HOME"] for e in envs if (Path(e["FRAUD_HOME"]) / "features" / "live.db").exists()]
