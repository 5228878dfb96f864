"""Chain segments: each evidence writer appends to a chain of its own, so writers never wait for each other's
commit; what must stay serialised (one return, one customer's case) is locked by subject; the log still
verifies end to end, and removing or editing anything in a segment is found."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from alembic import command
from sqlalchemy import DateTime, Engine, column, delete, func, select, table, text, update

from fraud_service.scoring.evidence import evidence_writer
from fraud_service.store import chain, checkpoint, locks
from fraud_service.store.db import session_factory
from fraud_service.store.migrate import _config, upgrade
from fraud_service.store.schema import Assessment, Case, ChainHead, EvidenceEvent
from fraud_service.store.writer import EvidenceWriter, Pending
from tests.store.conftest import postgres_engine

AT = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
OLD_EVENTS = table("evidence_events", *(column(name) for name in ("seq", "kind", "subject", "actor", "payload",
                                                                   "prev_hash", "hash")),
                   column("at", DateTime(timezone=True)))


def _pending(return_id: str, customer: str = "c-1", flagged: bool = False, assessment: str = "") -> Pending:
    row = {"id": assessment or f"asm_{return_id}", "return_id": return_id, "customer_id": customer,
           "request_hash": "h" * 64, "created_at": AT, "score": 0.9 if flagged else 0.1,
           "decision": "review" if flagged else "approve", "risk_level": "high" if flagged else "low",
           "model_version": "v1", "policy_version": "v1.p1", "refund_amount": 5.0, "case_id": None,
           "reason": "timing"}
    payload = {"request": {}, "features": {}, "response": {"case_id": None, "decision": row["decision"]}}
    return Pending(row, payload, "key:test", AT, Future(), {"customer": customer} if flagged else None)


def _store(writer: EvidenceWriter, p: Pending) -> int | None:
    return writer.store(p.row, p.payload, p.actor, p.at, p.links)


def _verify(engine: Engine) -> chain.Verification:
    with session_factory(engine)() as session:
        return chain.verify(session)


def _events(engine: Engine, chain_id: int) -> list[EvidenceEvent]:
    with session_factory(engine)() as session:
        return list(session.execute(select(EvidenceEvent).where(EvidenceEvent.chain == chain_id)
                                    .order_by(EvidenceEvent.position)).scalars())


def test_each_writer_appends_to_its_own_segment_opened_and_closed_on_the_root(engine: Engine) -> None:
    first, second = evidence_writer(engine, lanes=1), evidence_writer(engine, lanes=1)
    try:
        positions = [_store(first, _pending("r1")), _store(second, _pending("r2")), _store(first, _pending("r3"))]
        segments = (*first.segments, *second.segments)
        assert len(segments) == 2 and segments[0] != segments[1]
    finally:
        first.close()
        second.close()
    root = _events(engine, chain.ROOT)
    assert [(e.kind, e.subject) for e in root] == [
        ("chain_opened", f"chain:{segments[0]}"), ("chain_opened", f"chain:{segments[1]}"),
        ("chain_closed", f"chain:{segments[0]}"), ("chain_closed", f"chain:{segments[1]}")]
    mine = _events(engine, segments[0])
    assert [(e.position, e.subject) for e in mine] == [(1, "asm_r1"), (2, "asm_r3")]
    assert mine[0].prev_hash == root[0].hash  # the segment hangs from the event that opened it
    assert positions == [1, 1, 2] and mine[0].seq < mine[1].seq  # numbered by the database as inserted
    closing = json.loads(root[2].payload)
    assert closing == {"chain": segments[0], "position": 2, "hash": mine[-1].hash}
    result = _verify(engine)
    assert result.ok and result.events == 4 + 3
    with session_factory(engine)() as session:  # closed segments are anchored by their closing events on the root
        taken = checkpoint.take(session, checkpoint.Ed25519PrivateKey.generate(), AT)
    assert taken.segments == {} and taken.seq == 4 and taken.hash == root[-1].hash


@pytest.mark.postgres
def test_writers_commit_while_another_holds_the_root_and_a_segment_locked() -> None:
    """No lock shared by all writers is held across a commit: with the root chain's head and one writer's segment
    head locked by open transactions, another writer still commits at once."""
    for engine in postgres_engine():
        busy, free = evidence_writer(engine, wait_s=5, lanes=1), evidence_writer(engine, wait_s=5, lanes=1)
        try:
            _store(busy, _pending("r0"))
            _store(free, _pending("r1"))  # both segments open
            with engine.connect() as holder:
                holder.execute(text("SELECT seq FROM chain_head WHERE id IN (1, :busy) FOR UPDATE"),
                               {"busy": busy.segments[0]})
                assert isinstance(_store(free, _pending("r2", flagged=True)), int)  # not waiting for HOLDER
                holder.rollback()
        finally:
            busy.close()
            free.close()
        assert _verify(engine).ok


def _race(engine: Engine, key: int, pendings: list[Pending]) -> list[int | None]:
    """Two writers (warmed up: their segments open) each store one of PENDINGS while KEY's advisory lock is held
    elsewhere: both wait at it, then race when it is released. What each store returned."""
    writers = [evidence_writer(engine, wait_s=10, lanes=1) for _ in range(2)]
    try:
        for i, w in enumerate(writers):
            _store(w, _pending(f"warm-{i}"))
        with engine.connect() as holder, ThreadPoolExecutor(2) as pool:
            holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            outcomes = [pool.submit(_store, w, p) for w, p in zip(writers, pendings, strict=True)]
            _until_waiting(engine, 2)
            holder.rollback()
            return [f.result(timeout=10) for f in outcomes]
    finally:
        for w in writers:
            w.close()


@pytest.mark.postgres
def test_one_return_sent_to_two_writers_at_once_is_stored_once() -> None:
    for engine in postgres_engine():
        # two requests for one return (two assessment ids): both get past reading what is stored together
        results = _race(engine, locks.key("return", "same"),
                        [_pending("same", flagged=True, assessment=f"asm_same{i}") for i in range(2)])
        assert sorted(results, key=lambda r: r is None) == [results[0] or results[1], None]  # one stored, one replay
        assert any(isinstance(r, int) for r in results)
        with session_factory(engine)() as session:
            assert session.execute(select(func.count()).select_from(Assessment)
                                   .where(Assessment.return_id == "same")).scalar_one() == 1
            assert session.execute(select(func.count()).select_from(Case)).scalar_one() == 1
        assert _verify(engine).ok


@pytest.mark.postgres
def test_two_flagged_returns_of_one_customer_on_two_writers_share_one_case() -> None:
    for engine in postgres_engine():
        results = _race(engine, locks.key("link:customer", "c-9"),
                        [_pending(f"r{i}", "c-9", flagged=True) for i in range(2)])
        assert all(isinstance(r, int) for r in results)
        with session_factory(engine)() as session:
            cases = session.execute(select(Case)).scalars().all()
            assert len(cases) == 1 and cases[0].assessments == 2
            kinds = sorted(session.execute(select(EvidenceEvent.kind).where(EvidenceEvent.kind.like("case_%")))
                           .scalars())
            assert kinds == ["case_joined", "case_opened"]


def _until_waiting(engine: Engine, n: int) -> None:
    """Block until N sessions wait on an advisory lock (the writers have reached it); no sleeps, a bounded poll."""
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    with engine.connect() as watcher:
        while dt.datetime.now(dt.UTC) < deadline:
            waiting = watcher.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                           "AND NOT granted")).scalar_one()
            watcher.rollback()
            if waiting >= n:
                return
            threading.Event().wait(0.01)
    raise AssertionError(f"{n} writers never waited on the subject lock")


def _two_segments(engine: Engine, close: bool = True) -> tuple[int, int]:
    writers = [evidence_writer(engine, lanes=1), evidence_writer(engine, lanes=1)]
    try:
        for i in range(3):
            for j, w in enumerate(writers):
                _store(w, _pending(f"r{i}-{j}", customer=f"c{j}", flagged=i == 1))
        ids = (writers[0].segments[0], writers[1].segments[0])
    finally:
        for w in writers:
            w.close(seal=close)
    return ids


def _change(engine: Engine, *statements: Any) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(statement)


def _drop(event: EvidenceEvent) -> tuple[Any, ...]:
    """The statements that remove EVENT (and the assessment row that points to it, if any)."""
    return delete(Assessment).where(Assessment.event_seq == event.seq), delete(EvidenceEvent).where(
        EvidenceEvent.seq == event.seq)


def test_an_edited_segment_event_is_found(engine: Engine) -> None:
    segment, _ = _two_segments(engine)
    target = _events(engine, segment)[1]
    _change(engine, update(EvidenceEvent).where(EvidenceEvent.seq == target.seq).values(payload='{"x":1}'))
    result = _verify(engine)
    assert result.broken_at == target.seq
    assert result.problem == f"event {target.seq} (chain {segment}, link 2) was changed after it was written"


def test_a_segment_event_removed_from_the_middle_is_found(engine: Engine) -> None:
    segment, _ = _two_segments(engine)
    gone, after = _events(engine, segment)[1:3]
    _change(engine, *_drop(gone))
    result = _verify(engine)
    assert result.problem == (f"link 2 of chain {segment} is missing (next stored event is event {after.seq} "
                              f"(chain {segment}, link 3))")


def test_the_end_of_a_closed_segment_cut_off_is_found_even_with_its_head_rewritten(engine: Engine) -> None:
    segment, _ = _two_segments(engine)
    events = _events(engine, segment)
    last, kept = events[-1], events[-2]
    _change(engine, *_drop(last),
            update(ChainHead).where(ChainHead.id == segment).values(seq=kept.position, hash=kept.hash))
    result = _verify(engine)
    assert result.problem == (f"chain {segment} was closed at link {last.position} ending in {last.hash[:12]}, "
                              f"but holds {kept.position} events ending in {kept.hash[:12]}")


def test_the_end_of_an_open_segment_cut_off_is_found_by_the_head_and_by_a_checkpoint(engine: Engine, tmp_path) -> None:
    segment, other = _two_segments(engine, close=False)
    key, _ = checkpoint.load_or_create_key(tmp_path / "key.pem")
    with session_factory(engine)() as session:
        taken = checkpoint.take(session, key, AT)
        path = checkpoint.write(taken, tmp_path)
    assert set(taken.segments) == {str(segment), str(other)}
    events = _events(engine, segment)
    last, kept = events[-1], events[-2]
    _change(engine, *_drop(last))
    assert "events were removed from the end" in str(_verify(engine).problem)
    _change(engine, update(ChainHead).where(ChainHead.id == segment).values(seq=kept.position, hash=kept.hash))
    assert _verify(engine).ok  # the database's writer covered the cut: only the signed checkpoint still knows
    with session_factory(engine)() as session:
        check = checkpoint.verify(session, [path], key.public_key())
    assert check.problems == [f"{path.name}: chain {segment} held link {last.position} when the checkpoint was "
                              f"taken ({AT.isoformat()}) and no longer does: events were removed"]


def test_a_whole_segment_removed_is_found_by_the_root_event_that_opened_it(engine: Engine) -> None:
    segment, _ = _two_segments(engine)
    _change(engine, delete(Assessment),
            delete(EvidenceEvent).where(EvidenceEvent.chain == segment),
            delete(ChainHead).where(ChainHead.id == segment))
    assert _verify(engine).problem == f"chain {segment} was opened but its head row is gone"


def test_events_of_a_chain_the_root_never_opened_are_found(engine: Engine) -> None:
    segment, _ = _two_segments(engine)
    forged = _events(engine, segment)
    with engine.begin() as connection:
        connection.execute(update(EvidenceEvent).where(EvidenceEvent.chain == segment).values(chain=99))
        connection.execute(update(ChainHead).where(ChainHead.id == segment).values(id=99))
    result = _verify(engine)
    assert result.problem == f"event {forged[0].seq} belongs to chain 99, which no chain_opened event on the root " \
                             "chain names"


def test_a_root_only_log_from_before_segments_verifies_after_the_upgrade(engine: Engine, tmp_path) -> None:
    """A database at revision 0009 (one chain, events numbered by position, rows pointing at them) upgrades in place:
    its events keep their hashes and its rows, its checkpoints (format 1) still verify, and the log grows segments
    from there; once it has them, it cannot go back."""
    command.downgrade(_config(engine), "0009")
    previous = chain.GENESIS
    with engine.begin() as connection:
        for seq in (1, 2, 3):
            kind = "assessment" if seq == 2 else "test"
            subject = "asm_old" if seq == 2 else f"S{seq}"
            digest = chain.link_hash(previous, seq, AT, kind, subject, "tester", "{}")
            connection.execute(OLD_EVENTS.insert().values(  # revision 0009's columns, typed as SQLAlchemy stores them
                seq=seq, at=AT, kind=kind, subject=subject, actor="tester", payload="{}", prev_hash=previous,
                hash=digest))
            previous = digest
        connection.execute(text("UPDATE chain_head SET seq = 3, hash = :h WHERE id = 1"), {"h": previous})
        connection.execute(Assessment.__table__.insert().values(  # a row pointing at an event: SQLite refuses to
            id="asm_old", return_id="old", customer_id="c", request_hash="h" * 64, created_at=AT, score=0.1,  # rebuild
            decision="approve", risk_level="low", model_version="v1", policy_version="p1", refund_amount=1.0,
            case_id=None, event_seq=2))
        first = connection.execute(text("SELECT hash FROM evidence_events WHERE seq = 1")).scalar_one()
    key = checkpoint.Ed25519PrivateKey.generate()
    unsigned = checkpoint.Checkpoint(first, 3, previous, AT.isoformat(), format=checkpoint.FORMATS[0])
    signed = checkpoint.Checkpoint(first, 3, previous, AT.isoformat(), key.sign(unsigned.message()).hex(),
                                   format=checkpoint.FORMATS[0])
    path = tmp_path / "old.json"
    path.write_text(json.dumps(signed.to_dict()))
    upgrade(engine)
    writer = evidence_writer(engine, lanes=1)
    try:
        assert isinstance(_store(writer, _pending("after")), int)
    finally:
        writer.close()
    result = _verify(engine)
    assert result.ok and result.events == 3 + 2 + 1 and result.chains == 2
    with session_factory(engine)() as session:
        assert checkpoint.verify(session, [path], key.public_key()).problems == []
        assert session.execute(select(Assessment.event_seq).where(Assessment.id == "asm_old")).scalar_one() == 2
        assert session.execute(select(func.max(EvidenceEvent.seq))).scalar_one() > 3  # numbered after the old ones
    with pytest.raises(RuntimeError, match="events of chain segments"):
        command.downgrade(_config(engine), "0009")


def test_a_return_stored_before_is_found_again_by_another_writer(engine: Engine) -> None:
    """On PostgreSQL a batch goes out without asking first which returns are stored: the unique return id refuses a
    stored one, and the batch is sent again with the check. Either way the stored answer stands, and the batch-mate
    that was new is stored."""
    first, second = evidence_writer(engine, lanes=1), evidence_writer(engine, lanes=1)
    try:
        assert isinstance(_store(first, _pending("dup")), int)
        batch = [_pending("dup", flagged=True, assessment="asm_dup2"), _pending("new")]
        second._commit(second._lanes[0], batch)
        assert batch[0].future.result(timeout=5) is None and isinstance(batch[1].future.result(timeout=5), int)
        assert second._lanes[0].connection is not None  # a refused duplicate does not cost the connection
    finally:
        first.close()
        second.close()
    with session_factory(engine)() as session:
        stored = {r: d for r, d in session.execute(select(Assessment.return_id, Assessment.decision))}
        assert stored == {"dup": "approve", "new": "approve"}
        assert session.execute(select(func.count()).select_from(Case)).scalar_one() == 0  # the refused one opened none
    assert _verify(engine).ok


@pytest.mark.postgres
def test_a_second_lane_commits_while_the_first_waits_for_its_commit() -> None:
    """On PostgreSQL a process writes on two lanes, each with its own segment: an assessment that arrives while the
    first lane's transaction is held up goes out on the second at once."""
    for engine in postgres_engine():
        writer = evidence_writer(engine, wait_s=10)
        try:
            with engine.connect() as holder, ThreadPoolExecutor(1) as pool:
                holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": locks.key("return", "held")})
                held = pool.submit(_store, writer, _pending("held"))
                _until_waiting(engine, 1)
                assert isinstance(_store(writer, _pending("free")), int)  # not behind "held"
                assert not held.done()
                holder.rollback()
                assert isinstance(held.result(timeout=10), int)
            assert len(writer.segments) == 2
        finally:
            writer.close()
        with session_factory(engine)() as session:
            chains = dict(session.execute(select(Assessment.return_id, EvidenceEvent.chain)
                                          .join(EvidenceEvent, EvidenceEvent.seq == Assessment.event_seq)).all())
        assert set(chains) == {"held", "free"} and chains["held"] != chains["free"]
        assert _verify(engine).ok


@pytest.mark.postgres
def test_verify_in_a_snapshot_does_not_take_a_commit_made_while_it_runs_for_a_cut(monkeypatch) -> None:
    """`evidence verify` reads the heads, then the root, then the segments: a writer committing in between must not
    look like events added after a head. In a snapshot it does not; without one it would."""
    for engine in postgres_engine():
        _verify_while_a_writer_commits(engine, monkeypatch)


def _verify_while_a_writer_commits(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from fraud_service.store.uow import UnitOfWork

    writer = evidence_writer(engine, lanes=1)
    real, calls = chain._stream, []

    def stream(session: Any, where: Any) -> Any:
        calls.append(where)
        if len(calls) == 2:  # the root is checked, the segments not yet: a writer commits now
            _store(writer, _pending(f"r-{uuid.uuid4().hex[:8]}"))
        return real(session, where)

    try:
        _store(writer, _pending("r0"))
        monkeypatch.setattr(chain, "_stream", stream)
        uow = UnitOfWork(session_factory(engine))
        with uow.read(snapshot=True):
            assert chain.verify(uow.session).ok
        calls.clear()
        with uow.read():
            assert "events were added after the head" in str(chain.verify(uow.session).problem)
    finally:
        writer.close()


def test_a_segment_left_open_by_a_killed_process_of_this_host_is_closed_by_the_next_writer(engine: Engine) -> None:
    import subprocess

    from fraud_service.store.writer import gone, owner

    dead = subprocess.Popen(["true"])
    dead.wait()
    host, namespace, _ = owner().split(":")
    killed, elsewhere = f"{host}:{namespace}:{dead.pid}", f"other-host:{namespace}:{dead.pid}"
    assert gone(killed) and not gone(elsewhere) and not gone(owner())
    with session_factory(engine).begin() as session:
        left, _ = chain.open_segment(session, killed)
        foreign, _ = chain.open_segment(session, elsewhere)
    writer = evidence_writer(engine, lanes=1)
    try:
        _store(writer, _pending("r1"))
        with session_factory(engine)() as session:
            still_open = chain.open_segments(session)
        assert left not in still_open and foreign in still_open and writer.segments[0] in still_open
    finally:
        writer.close()
    assert _verify(engine).ok


@pytest.mark.postgres
def test_a_batch_of_assessments_and_case_events_keeps_every_event_in_its_place() -> None:
    """On PostgreSQL a batch's statements go in one pipeline and the database numbers the events: the sequence must
    number them in position order, every assessment must name its own event, and a case event must follow its
    assessment's."""
    for engine in postgres_engine():
        writer = evidence_writer(engine, wait_s=10, lanes=1)
        try:
            _store(writer, _pending("warm"))
            with engine.connect() as holder, ThreadPoolExecutor(13) as pool:
                holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": locks.key("return", "first")})
                outcomes = [pool.submit(_store, writer, _pending("first"))]
                _until_waiting(engine, 1)  # the writer is stuck in a batch of its own: the rest queue up behind it
                later = [_pending(f"r{i}", customer=f"c-{i % 4}", flagged=i % 3 == 0) for i in range(12)]
                outcomes += [pool.submit(_store, writer, p) for p in later]
                deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
                while writer._queue.qsize() < len(later) and dt.datetime.now(dt.UTC) < deadline:
                    threading.Event().wait(0.01)
                assert writer._queue.qsize() == len(later)
                holder.rollback()
                positions = [f.result(timeout=10) for f in outcomes]
            assert writer.batches == 3  # the warm-up, the first, then the twelve at once
            segment = writer.segments[0]
        finally:
            writer.close()
        events = _events(engine, segment)
        in_segment = [e for e in events if e.kind != "chain_closed"]
        assert [e.seq for e in in_segment] == sorted(e.seq for e in in_segment)  # numbered in position order
        assert [e.position for e in events] == list(range(1, len(events) + 1))
        with session_factory(engine)() as session:
            rows = {a.return_id: a for a in session.execute(select(Assessment)).scalars()}
            by_seq = {e.seq: e for e in events}
            for return_id, position in zip(["first", *[p.row["return_id"] for p in later]], positions, strict=True):
                event = by_seq[rows[return_id].event_seq]
                assert (event.kind, event.subject, event.position) == ("assessment", rows[return_id].id, position)
                if return_id in {f"r{i}" for i in range(0, 12, 3)}:  # flagged: its case event comes next
                    following = next(e for e in events if e.position == position + 1)
                    assert following.kind in ("case_opened", "case_joined")
                    assert json.loads(following.payload)["case_id"] == rows[return_id].case_id is not None
            assert session.execute(select(func.count()).select_from(Case)).scalar_one() == 4  # c-0 .. c-3: one each
        assert _verify(engine).ok
