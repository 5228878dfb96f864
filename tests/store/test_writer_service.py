"""The evidence writer process: workers' assessments committed over a Unix socket, as the in-process writer does."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from fraud_service.store import chain
from fraud_service.store.db import make_engine, session_factory
from fraud_service.store.schema import Assessment, Case, EvidenceEvent
from fraud_service.store.writer import DatabaseDown
from fraud_service.store.writer_service import (
    _LENGTH,
    EvidenceServer,
    RemoteEvidenceWriter,
    WriterError,
    _frame,
    socket_path,
)


@pytest.fixture
def served(engine: Engine) -> Iterator[tuple[EvidenceServer, RemoteEvidenceWriter]]:
    """An evidence server on ENGINE, its loop in a thread, and a client."""
    server = EvidenceServer(engine, socket_path())
    stop = threading.Event()
    loop = threading.Thread(target=server.serve_forever, args=(stop, 0.05), daemon=True)
    loop.start()
    client = RemoteEvidenceWriter(server.path, timeout=10)
    try:
        yield server, client
    finally:
        client.close()
        stop.set()
        loop.join(timeout=10)
        server.close()


def _row(tag: str, n: int, decision: str = "approve", customer: str | None = None) -> dict:
    return {"id": f"asm_{tag}{n}", "return_id": f"r-{tag}-{n}", "customer_id": customer or f"c-{tag}-{n}",
            "request_hash": f"h{n}", "created_at": dt.datetime.now(dt.UTC), "score": 0.1 + n / 1000,
            "decision": decision, "risk_level": "low", "model_version": "v1", "policy_version": "v1.p1",
            "refund_amount": 10.0 + n, "case_id": None, "reason": "timing"}


def _payload(n: int) -> dict:
    return {"request_hash": f"h{n}", "features": {"x": n, "y": 0.5}, "response": {"case_id": None, "n": n}}


def test_concurrent_workers_assessments_are_all_stored_in_one_unbroken_chain(engine, served):
    server, client = served
    tag = uuid.uuid4().hex[:8]
    results: dict[int, int | None] = {}
    errors: list[BaseException] = []

    def worker(start: int) -> None:
        try:
            for n in range(start, start + 25):
                results[n] = client.store(_row(tag, n), _payload(n), "scoring-key", dt.datetime.now(dt.UTC))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i * 25,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = sorted(results.values())  # type: ignore[type-var]
    assert len(seqs) == 150 and len(set(seqs)) == 150 and None not in seqs
    assert server.stored == 150
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Assessment)) == 150
        stored = session.execute(select(Assessment.return_id, Assessment.event_seq)).all()
        assert {r: s for r, s in stored} == {f"r-{tag}-{n}": seq for n, seq in results.items()}
        event = session.get(EvidenceEvent, results[7])
        assert event is not None and event.kind == "assessment" and event.actor == "scoring-key"
        assert chain.fast_canonical(_payload(7)) == event.payload
        verified = chain.verify(session)
    assert verified.ok and verified.events == 150


def test_a_return_stored_before_is_not_stored_again(served):
    _, client = served
    tag = uuid.uuid4().hex[:8]
    first = client.store(_row(tag, 1), _payload(1), "k", dt.datetime.now(dt.UTC))
    again = client.store({**_row(tag, 1), "id": f"asm_{tag}other"}, _payload(1), "k", dt.datetime.now(dt.UTC))
    assert first is not None and again is None


def test_an_assessment_for_a_human_opens_a_case_and_its_id_comes_back(engine, served):
    _, client = served
    tag = uuid.uuid4().hex[:8]
    links = {"customer": f"c-{tag}", "device": f"d-{tag}"}
    rows = [_row(tag, n, "review", customer=f"c-{tag}") for n in (1, 2)]
    payloads = [_payload(1), _payload(2)]
    for row, payload in zip(rows, payloads, strict=True):
        assert client.store(row, payload, "k", dt.datetime.now(dt.UTC), links) is not None
    case_id = rows[0]["case_id"]
    assert case_id is not None and case_id.startswith("cas_")
    assert rows[1]["case_id"] == case_id  # the second joined the first's case
    assert payloads[0]["response"]["case_id"] == payloads[1]["response"]["case_id"] == case_id
    with session_factory(engine)() as session:
        case = session.get(Case, case_id)
        assert case is not None and case.assessments == 2 and case.amount == pytest.approx(23.0)
        stored = session.execute(select(EvidenceEvent.payload)
                                 .join(Assessment, Assessment.event_seq == EvidenceEvent.seq)
                                 .where(Assessment.id == rows[1]["id"])).scalar_one()
        assert f'"case_id":"{case_id}"' in stored  # the evidence records the case the answer named


def test_a_database_that_cannot_be_reached_is_reported_as_down_and_nothing_is_stored(tmp_path):
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    server = EvidenceServer(engine, socket_path())
    stop = threading.Event()
    loop = threading.Thread(target=server.serve_forever, args=(stop, 0.05), daemon=True)
    loop.start()
    client = RemoteEvidenceWriter(server.path, timeout=30)
    try:
        with pytest.raises(DatabaseDown, match="127.0.0.1"):
            client.store(_row("down", 1), _payload(1), "k", dt.datetime.now(dt.UTC))
        assert server.stored == 0
        assert client.ping()  # the writer itself still answers
    finally:
        client.close()
        stop.set()
        loop.join(timeout=10)
        server.close()
        engine.dispose()


def test_without_a_writer_process_the_client_says_the_evidence_cannot_be_stored(tmp_path):
    client = RemoteEvidenceWriter(tmp_path / "absent.sock", timeout=5)
    with pytest.raises(DatabaseDown, match="not answering"):
        client.store(_row("absent", 1), _payload(1), "k", dt.datetime.now(dt.UTC))
    assert not client.ping()


def test_a_writer_that_stopped_is_noticed_and_a_new_one_is_reached_again(engine, tmp_path):
    path = socket_path()

    def start() -> tuple[EvidenceServer, threading.Event, threading.Thread]:
        server = EvidenceServer(engine, path)
        stop = threading.Event()
        loop = threading.Thread(target=server.serve_forever, args=(stop, 0.05), daemon=True)
        loop.start()
        return server, stop, loop

    client = RemoteEvidenceWriter(path, timeout=10)
    server, stop, loop = start()
    assert client.store(_row("restart", 1), _payload(1), "k", dt.datetime.now(dt.UTC)) is not None
    stop.set()
    loop.join(timeout=10)
    server.close()
    with pytest.raises(DatabaseDown):
        client.store(_row("restart", 2), _payload(2), "k", dt.datetime.now(dt.UTC))
    server, stop, loop = start()
    try:
        assert client.store(_row("restart", 3), _payload(3), "k", dt.datetime.now(dt.UTC)) is not None
    finally:
        client.close()
        stop.set()
        loop.join(timeout=10)
        server.close()


def test_a_bug_in_a_batch_reaches_the_caller_as_itself(served):
    _, client = served
    row = _row("bug", 1, "review")
    del row["reason"]  # a caller's bug: the case needs it
    with pytest.raises(WriterError, match="KeyError"):
        client.store(row, _payload(1), "k", dt.datetime.now(dt.UTC), {"customer": "c-bug"})
    assert client.store(_row("bug", 2), _payload(2), "k", dt.datetime.now(dt.UTC)) is not None


def test_a_message_the_writer_does_not_know_is_answered_with_an_error(served):
    server, _ = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(server.path))
        conn.sendall(_frame(("delete everything",)))
        size = _LENGTH.unpack(conn.recv(_LENGTH.size, socket.MSG_WAITALL))[0]
        import pickle

        answer = pickle.loads(conn.recv(size, socket.MSG_WAITALL))
    assert answer[0] == "error" and "unknown message" in answer[1]


def test_the_socket_sits_in_a_directory_only_its_user_can_enter():
    path = socket_path()
    try:
        assert path.parent.stat().st_mode & 0o777 == 0o700
        assert len(str(path)) < 100  # AF_UNIX paths are limited to 107 bytes
    finally:
        Path(path.parent).rmdir()
