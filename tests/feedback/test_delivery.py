"""Webhook delivery against a real HTTP receiver on loopback: signatures checked by an independent implementation,
a receiver that is down and comes back, one that hangs, dead deliveries and replay, and a sender killed mid-delivery.

Waiting for a delivery is polling for a state with a deadline (the deadline is the promise under test), never a
sleep standing in for one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fraud_service.feedback import webhooks
from fraud_service.feedback.dispatch import Dispatcher
from fraud_service.feedback.webhooks import Outbox
from fraud_service.store.db import make_engine, session_factory
from fraud_service.store.migrate import upgrade
from fraud_service.store.schema import WebhookDelivery
from fraud_service.store.uow import UnitOfWork


class Receiver:
    """An HTTP server on loopback that records what it gets; `mode` is ok, fail (500) or hang (until released)."""

    def __init__(self, port: int = 0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.mode = "ok"
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append(({k: v for k, v in self.headers.items()}, body))
                mode = receiver.mode
                if mode == "hang_once":
                    receiver.mode = "ok"
                if mode in ("hang", "hang_once"):
                    receiver.release.wait(30)
                    return
                if mode == "drip":  # an answer that never ends, a byte at a time (each within any socket timeout)
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 60:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if receiver.release.wait(0.25):
                            return
                    return
                if mode == "nul":  # a binary error page
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"\x1f\x8b\x00\x00broken\x00page")
                    return
                self.send_response(500 if mode == "fail" else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(check: Callable[[], Any], seconds: float) -> Any:
    """CHECK's first truthy value within SECONDS, else a failure saying how long was waited."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> dict[str, Any]:
    """The receiver's side, written from the documented contract: parse `t` and `v1`, recompute, compare."""
    parts = dict(item.split("=", 1) for item in headers["Fraud-Signature"].split(","))
    assert abs(time.time() - int(parts["t"])) < tolerance
    mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, parts["v1"])
    event: dict[str, Any] = json.loads(body)
    assert headers["Fraud-Event-Id"] == event["id"]
    return event


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Callable[[], UnitOfWork]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fraud.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    yield lambda: UnitOfWork(sessions)
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], UnitOfWork]]:
    """A migrated evidence database on SQLite and on the real PostgreSQL, as units of work."""
    from tests.store.conftest import postgres_engine

    engines = postgres_engine() if request.param == "postgres" else None
    engine = next(engines) if engines is not None else make_engine(f"sqlite:///{tmp_path / 'fraud.db'}")
    if engines is None:
        upgrade(engine)
    sessions = session_factory(engine)
    yield lambda: UnitOfWork(sessions)
    engine.dispose()
    if engines is not None:
        next(engines, None)


def emit(uow: Callable[[], UnitOfWork], kind: str = "case.closed", retry_hours: float = 24.0, **data: Any) -> str:
    with uow() as unit:
        event_id = Outbox(unit.session, dt.datetime.now(dt.UTC), retry_hours).emit(kind, {"case_id": "cas_1", **data})
        unit.commit()
    webhooks.wake()
    return event_id


def status(uow: Callable[[], UnitOfWork], event_id: str) -> dict[str, str]:
    with uow() as unit:
        return {w: s for w, s in unit.session.execute(select(WebhookDelivery.webhook_id, WebhookDelivery.status)
                                                      .where(WebhookDelivery.event_id == event_id)).all()}


def test_a_delivery_is_signed_and_a_receiver_can_check_it(db: Callable[[], UnitOfWork]) -> None:
    receiver = Receiver()
    hook, secret = webhooks.add(db(), url=receiver.url, events=["case.closed"], actor="test", allow_private=True)
    sender = Dispatcher(db, allow_private=True, timeout_s=2)
    try:
        event_id = emit(db, closed_by="user:ana")
        assert sender.run_once(wait=True) == 1
        [(headers, body)] = receiver.got
        event = verify(secret, headers, body)
        assert (event["id"], event["type"], event["data"]) == (event_id, "case.closed",
                                                               {"case_id": "cas_1", "closed_by": "user:ana"})
        assert headers["Content-Type"] == "application/json"
        with pytest.raises(AssertionError):
            verify("whsec_wrong", headers, body)
        with pytest.raises(AssertionError):
            verify(secret, headers, body.replace(b"ana", b"eve"))
        assert status(db, event_id) == {hook.id: "delivered"}
        assert sender.run_once(wait=True) == 0  # delivered once, not again
    finally:
        sender.close()
        receiver.close()


def test_a_receiver_that_is_down_gets_the_event_when_it_comes_back(db: Callable[[], UnitOfWork]) -> None:
    port = free_port()
    hook, secret = webhooks.add(db(), url=f"http://127.0.0.1:{port}/hook", events=["case.closed"], actor="t",
                                allow_private=True)
    sender = Dispatcher(db, allow_private=True, timeout_s=1, backoff_s=0.2, poll_s=0.05)
    event_id = emit(db)
    sender.start()
    try:
        until(lambda: webhooks.deliveries(db(), webhook_id=hook.id)[0].attempts >= 2, 10)  # refused, retried
        [failed] = webhooks.deliveries(db(), webhook_id=hook.id)
        assert failed.status == "pending" and failed.last_status is None and "Refused" in (failed.last_error or "")
        receiver = Receiver(port)
        try:
            until(lambda: status(db, event_id) == {hook.id: "delivered"}, 10)
            assert [verify(secret, h, b)["id"] for h, b in receiver.got] == [event_id]
        finally:
            receiver.close()
    finally:
        sender.close()


def test_a_hanging_receiver_holds_up_no_other(db: Callable[[], UnitOfWork]) -> None:
    stuck, fine = Receiver(), Receiver()
    stuck.mode = "hang"
    slow, _ = webhooks.add(db(), url=stuck.url, events=["case.closed"], actor="t", allow_private=True)
    backlog = [emit(db, n=i) for i in range(250)]  # older than anything the other receiver will get
    fast, secret = webhooks.add(db(), url=fine.url, events=["case.closed"], actor="t", allow_private=True)
    sender = Dispatcher(db, allow_private=True, timeout_s=20, poll_s=0.5)
    sender.start()
    try:
        first = [emit(db, n=1000 + i) for i in range(6)]  # more than the stuck receiver's share of the pool
        until(lambda: len(stuck.got) >= 1, 5)
        started = time.monotonic()
        later = emit(db, n=99)
        # every event to the other receiver arrives within the bound, in whatever order the rounds take them
        until(lambda: {verify(secret, h, b)["id"] for h, b in fine.got} >= {*first, later}, 5)
        assert time.monotonic() - started < 5
        assert {verify(secret, h, b)["id"] for h, b in fine.got} == {*first, later}
        assert len(stuck.got) <= sender.per_hook  # the stuck one holds at most its own share of threads
        assert status(db, later)[slow.id] == "pending" and status(db, backlog[-1]) == {slow.id: "pending"}
    finally:
        stuck.release.set()
        sender.close()
        stuck.close()
        fine.close()


def test_receivers_that_hang_get_one_thread_each_and_the_answering_ones_the_rest(
        sqlite_db: Callable[[], UnitOfWork]) -> None:
    """Five hung receivers took four threads each, every thread of the pool, and a sixth got its events 8.6 s late
    (a helper's probe). Once a receiver's attempt failed, it gets one thread at a time, after the ones that answer."""
    db = sqlite_db
    stuck, fine = [Receiver(), Receiver()], Receiver()
    for receiver in stuck:
        receiver.mode = "hang"
    hooks = [webhooks.add(db(), url=r.url, events=["case.closed"], actor="t", allow_private=True)[0]
             for r in [*stuck, fine]]
    sender = Dispatcher(db, allow_private=True, timeout_s=1.0, backoff_s=600, workers=6, per_hook=4)
    try:
        for i in range(20):
            emit(db, n=i)
        for _ in range(3):  # both hung receivers have failed by then (the first rounds take them in id order)
            sender.run_once(wait=True)
        assert [d.status for d in webhooks.deliveries(db(), webhook_id=hooks[0].id)].count("pending") == 20
        before = [len(r.got) for r in (*stuck, fine)]
        assert sender.run_once(wait=True) == 6
        got = [len(r.got) - n for r, n in zip((*stuck, fine), before, strict=True)]
        assert got == [1, 1, 4], got  # the answering receiver first, its full share; one each for the hung
    finally:
        sender.close()
        for receiver in (*stuck, fine):
            receiver.close()


def test_an_event_is_dead_after_its_retry_window_and_replay_sends_it_again(db: Callable[[], UnitOfWork]) -> None:
    receiver = Receiver()
    receiver.mode = "fail"
    hook, secret = webhooks.add(db(), url=receiver.url, events=["case.closed"], actor="t", allow_private=True)
    sender = Dispatcher(db, allow_private=True, timeout_s=2)
    try:
        event_id = emit(db, retry_hours=1e-9)  # the window is over by the first attempt
        assert sender.run_once(wait=True) == 1
        [dead] = webhooks.deliveries(db(), webhook_id=hook.id, status="dead")
        assert (dead.event_id, dead.attempts, dead.last_status) == (event_id, 1, 500)
        assert webhooks.listing(db())[0].dead == 1
        assert sender.run_once(wait=True) == 0  # dead is not retried
        receiver.mode = "ok"
        assert webhooks.replay(db(), event_id=event_id, actor="t") == 1
        assert sender.run_once(wait=True) == 1
        assert status(db, event_id) == {hook.id: "delivered"}
        assert [verify(secret, h, b)["id"] for h, b in receiver.got] == [event_id, event_id]
    finally:
        sender.close()
        receiver.close()


def test_a_removed_webhook_gets_nothing_more(db: Callable[[], UnitOfWork]) -> None:
    receiver = Receiver()
    hook, _ = webhooks.add(db(), url=receiver.url, events=["case.closed"], actor="t", allow_private=True)
    sender = Dispatcher(db, allow_private=True, timeout_s=2)
    try:
        emit(db)
        webhooks.remove(db(), webhook_id=hook.id, actor="t")
        emit(db)
        assert sender.run_once(wait=True) == 0 and receiver.got == []
    finally:
        sender.close()
        receiver.close()


def test_an_address_that_becomes_private_is_refused_at_delivery(db: Callable[[], UnitOfWork]) -> None:
    receiver = Receiver()
    hook, _ = webhooks.add(db(), url=receiver.url, events=["case.closed"], actor="t", allow_private=True)
    sender = Dispatcher(db, allow_private=False, timeout_s=2)  # the rules of the process that sends it
    try:
        event_id = emit(db)
        assert sender.run_once(wait=True) == 1
        [refused] = webhooks.deliveries(db(), webhook_id=hook.id)
        assert receiver.got == [] and refused.status == "pending" and "ALLOW_PRIVATE" in (refused.last_error or "")
        assert status(db, event_id) == {hook.id: "pending"}
    finally:
        sender.close()
        receiver.close()


def test_a_sender_killed_mid_delivery_is_followed_by_one_that_delivers(tmp_path: Path,
                                                                       sqlite_db: Callable[[], UnitOfWork]) -> None:
    db = sqlite_db  # the senders below are processes on this file
    receiver = Receiver()
    receiver.mode = "hang"
    hook, secret = webhooks.add(db(), url=receiver.url, events=["case.closed"], actor="t", allow_private=True)
    env = {**os.environ, "FRAUD_HOME": str(tmp_path), "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'fraud.db'}",
           "FRAUD_WEBHOOK_ALLOW_PRIVATE": "true", "FRAUD_WEBHOOK_TIMEOUT_S": "1"}
    command = [sys.executable, "-m", "api.cli", "webhooks", "run", "--report-every", "0.5"]
    event_id = emit(db)
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: receiver.got, 30)  # committed, claimed, and in flight
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert status(db, event_id) == {hook.id: "pending"}  # its lease is left behind, not a delivery
        receiver.mode = "ok"
        receiver.release.set()
        second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            until(lambda: status(db, event_id) == {hook.id: "delivered"}, 30)  # once the lease (8 s) runs out
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=20)
        assert second.returncode == 0, err.decode()
        ids = [verify(secret, h, b)["id"] for h, b in receiver.got]
        assert ids[0] == ids[-1] == event_id and len(ids) >= 2  # at least once: the same event id again
    finally:
        if first.poll() is None:
            first.kill()
        receiver.close()


def test_a_delivery_in_flight_is_never_sent_twice_at_once_nor_recorded_late(db: Callable[[], UnitOfWork]) -> None:
    receiver = Receiver()
    receiver.mode = "hang_once"  # the first attempt hangs, later ones are answered at once
    hook, _ = webhooks.add(db(), url=receiver.url, events=["case.closed"], actor="t", allow_private=True)
    first = Dispatcher(db, allow_private=True, timeout_s=20, lease_s=0.3)
    try:
        event_id = emit(db)
        assert first.run_once() == 1
        until(lambda: receiver.got, 5)
        until(lambda: not first.run_once(), 5)  # its own delivery in flight is not claimed again, lease or not
        assert len(receiver.got) == 1
        second = Dispatcher(db, allow_private=True, timeout_s=2)  # another process, once the lease ran out
        try:
            until(lambda: second.run_once(wait=True) == 1, 5)
        finally:
            second.close()
        assert status(db, event_id) == {hook.id: "delivered"}
        receiver.release.set()  # the first attempt ends (no answer): its result is stale
        until(lambda: first.run_once() == 0 and first._inflight == set(), 10)
        [delivery] = webhooks.deliveries(db(), webhook_id=hook.id)
        assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 1, 204)
    finally:
        receiver.release.set()
        first.close()
        receiver.close()


def test_an_attempt_ends_within_twice_the_timeout_however_slowly_the_receiver_answers(
        db: Callable[[], UnitOfWork]) -> None:
    receiver = Receiver()
    receiver.mode = "drip"
    hook, _ = webhooks.add(db(), url=receiver.url, events=["case.closed"], actor="t", allow_private=True)
    sender = Dispatcher(db, allow_private=True, timeout_s=1)
    try:
        emit(db)
        started = time.monotonic()
        assert sender.run_once(wait=True) == 1
        assert time.monotonic() - started < 2 * 1 + 1  # the drip alone would take 15 s
        [delivery] = webhooks.deliveries(db(), webhook_id=hook.id)
        assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status is None
    finally:
        receiver.release.set()
        sender.close()
        receiver.close()


def test_a_receivers_binary_answer_is_recorded_and_sinks_no_other_result(db: Callable[[], UnitOfWork]) -> None:
    binary, fine = Receiver(), Receiver()
    binary.mode = "nul"
    bad, _ = webhooks.add(db(), url=binary.url, events=["case.closed"], actor="t", allow_private=True)
    good, _ = webhooks.add(db(), url=fine.url, events=["case.closed"], actor="t", allow_private=True)
    sender = Dispatcher(db, allow_private=True, timeout_s=2)
    try:
        event_id = emit(db)
        assert sender.run_once(wait=True) == 2  # both results recorded in one round
        assert status(db, event_id) == {bad.id: "pending", good.id: "delivered"}
        [failed] = webhooks.deliveries(db(), webhook_id=bad.id)
        assert failed.last_status == 500 and "\x00" not in (failed.last_error or "") and "broken" in failed.last_error
    finally:
        sender.close()
        binary.close()
        fine.close()


def test_a_failed_round_logs_the_cause_not_only_that_the_database_cannot_be_reached(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On a database never migrated, each round said "the evidence database cannot be reached"."""
    import logging

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema
    sessions = session_factory(engine)
    dispatcher = Dispatcher(lambda: UnitOfWork(sessions), poll_s=0.05)
    logger = logging.getLogger("fraud_service.feedback.dispatch")
    logger.addHandler(caplog.handler)  # the service's loggers do not propagate
    try:
        dispatcher.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("round failed" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)  # waiting for the first round, not timing it
    finally:
        dispatcher.close()
        logger.removeHandler(caplog.handler)
        engine.dispose()
    failed = [r.getMessage() for r in caplog.records if "round failed" in r.getMessage()]
    assert failed and "no such table" in failed[0], failed
