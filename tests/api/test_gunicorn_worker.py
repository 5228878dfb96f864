"""The worker's share of connections: two more than the least loaded other live worker published."""

from __future__ import annotations

import pytest

from api.worker_table import SLOTS, fair_limit, slot


def _table(**rows: int) -> list[int]:
    counts = [0] * SLOTS
    for name, held in rows.items():
        counts[int(name[1:])] = held + 1  # a live worker's row holds its connections + 1
    return counts


@pytest.mark.parametrize(("rows", "own", "limit"), [
    ({"w0": 0}, 0, None),                      # alone: no limit beyond gunicorn's own
    ({"w0": 0, "w1": 0}, 0, 2),                # both idle: take up to two, then let the other catch up
    ({"w0": 5, "w1": 3}, 0, 5),                # ahead: stop at two above the other
    ({"w0": 3, "w1": 5}, 0, 7),                # behind: may catch up and pass by two
    ({"w0": 2, "w1": 7, "w2": 1}, 1, 3),       # the least loaded other worker decides
    ({"w0": 4}, 3, 6),                         # a row not yet published (own) is not counted
])
def test_fair_limit(rows, own, limit):
    assert fair_limit(_table(**rows), own) == limit


def test_a_cleared_row_does_not_hold_the_others_back():
    counts = _table(w0=6, w1=2)
    counts[1] = 0  # worker 1 exited: child_exit clears its row
    assert fair_limit(counts, 0) is None


def test_sixteen_connections_arriving_at_once_split_evenly():
    """The loop the worker runs: accept while below the limit, each worker publishing after each accept."""
    counts = _table(w0=0, w1=0)  # both workers have published once, at start
    held = {0: 0, 1: 0}
    for _ in range(16):
        for worker in (0, 0, 1):  # worker 0 wakes first, twice as often: without the limit it takes everything
            counts[worker] = held[worker] + 1
            limit = fair_limit(counts, worker)
            if limit is None or held[worker] < limit:
                held[worker] += 1
                counts[worker] = held[worker] + 1
                break
    assert max(held.values()) - min(held.values()) <= 2
    assert slot(SLOTS + 3) == 3


def test_two_workers_holding_as_many_never_both_stop_accepting():
    """Each publishes its row before its wait and may accept one more in it, so a row lags by one: with rows equal to
    what each holds, one of them must still accept (both stopped, each waiting a second for the other)."""
    for held in range(6):
        counts = _table(w0=held - 1, w1=held - 1) if held else _table(w0=0, w1=0)  # published before the last accept
        both = [fair_limit(counts, worker) for worker in (0, 1)]
        assert any(held < limit for limit in both if limit is not None), (held, both)


def test_a_lingering_close_runs_off_the_callers_thread_and_a_full_closer_closes_at_once():
    """gthread's main thread closed each failed connection itself, lingering up to 2 s on a silent client."""
    import socket
    import threading

    from api.worker_io import Closer

    release, lingering = threading.Event(), []

    def graceful(sock: socket.socket, timeout: float, max_drain: int) -> None:  # as a silent client makes it
        lingering.append(sock)
        release.wait(10)
        sock.close()

    closer = Closer(graceful, threads=1, backlog=1)
    pairs = [socket.socketpair() for _ in range(3)]
    for ours, _ in pairs:
        closer.close(ours)  # returns at once, whatever the lingering does
    assert pairs[2][0].fileno() == -1  # the one past threads + backlog was closed at once
    assert pairs[0][0].fileno() != -1 and pairs[1][0].fileno() != -1  # lingering, and waiting for a thread
    release.set()
    closer._pool.shutdown(wait=True)
    assert lingering == [pairs[0][0], pairs[1][0]] and all(ours.fileno() == -1 for ours, _ in pairs)
    for _, theirs in pairs:
        theirs.close()


def test_a_dropped_silent_client_is_one_warning_line_not_a_traceback():
    import logging
    import sys

    from api.worker_io import SilentClients

    def record(error: BaseException) -> logging.LogRecord:
        try:
            raise error
        except BaseException:
            return logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, "Socket error processing request.",
                                     (), sys.exc_info())

    dropped, other = record(BlockingIOError(11, "Resource temporarily unavailable")), record(OSError(5, "I/O"))
    silent = SilentClients(2.0)
    assert silent.filter(dropped) and silent.filter(other)  # both are logged
    assert (dropped.levelname, dropped.getMessage(), dropped.exc_info) == (
        "WARNING", "dropped a client silent for 2 s mid-request, or not done sending it in as long "
        "(FRAUD_CLIENT_TIMEOUT_S)", None)
    assert other.levelname == "ERROR" and other.exc_info is not None  # any other socket error keeps its traceback


def test_a_request_past_its_deadline_is_read_while_its_bytes_are_in_then_its_client_is_dropped():
    """A whole request that waited for a thread is served; a client that has not sent the rest by then is not waited
    for (a trickling client held its thread for as long as it went on)."""
    import math
    import socket as sockets

    from api.worker_io import PacedUnreader

    server, client = sockets.socketpair()
    try:
        conn = type("Conn", (), {"deadline": -math.inf})()  # long past
        reader = PacedUnreader(server, conn)  # type: ignore[arg-type]
        client.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert reader.chunk() == b"GET /healthz HTTP/1.1\r\n"
        with pytest.raises(TimeoutError, match="did not send its whole request in time"):
            reader.chunk()
        conn.deadline = math.inf  # no deadline: it waits for the bytes
        client.sendall(b"Host: x\r\n\r\n")
        assert reader.chunk() == b"Host: x\r\n\r\n"
    finally:
        server.close()
        client.close()


@pytest.fixture
def table():
    """The shared worker table, emptied for the test and restored after (the test process's own copy)."""
    from api import worker_table

    saved = bytes(worker_table._TABLE)
    worker_table._TABLE[:] = bytes(len(saved))
    yield worker_table
    worker_table._TABLE[:] = saved


def test_an_old_worker_that_can_score_waits_for_a_successor_that_can(table):
    """A reload after worker 3: old workers 2 (scoring) and 3 (analyst), new workers 4 to 6."""
    for age in range(2, 7):
        table.born(age)
    table.SERVES[table.slot(2)], table.SERVES[table.slot(3)] = table.SCORING, table.ANALYST
    table.reloading(3)
    assert table.reload_pending()
    assert table.successor(3, table.SCORING, fit=True) == "loading"
    table.SERVES[table.slot(4)] = table.SCORING  # serves before it has checked: counts as able
    assert table.successor(3, table.SCORING, fit=True) == "serving"
    table.FIT[table.slot(4)] = table.UNABLE  # a damaged model: the old worker, able, waits on
    assert table.successor(3, table.SCORING, fit=True) == "unable"
    assert table.successor(3, table.SCORING, fit=False) == "serving"  # an old worker that cannot score either: not
    assert table.successor(3, table.ANALYST, fit=True) == "loading"  # the analyst port's successor is another's
    assert table.able_elder(table.SCORING)  # the old worker has not checked yet: it counts as able
    table.FIT[table.slot(2)], table.FIT[table.slot(3)] = table.ABLE, table.UNABLE
    assert table.able_elder(table.SCORING) and not table.able_elder(table.ANALYST)
    table.SERVES[table.slot(6)], table.FIT[table.slot(6)] = table.ANALYST, table.ABLE
    assert not table.able_elder(table.ANALYST)  # a sibling of the reload is no elder: only the old generation
    table.SERVES[table.slot(5)], table.FIT[table.slot(5)] = table.SCORING, table.ABLE  # another new one can score
    assert table.successor(3, table.SCORING, fit=True) == "serving"
    for age in (4, 5, 6):
        table.SERVES[table.slot(age)] = table.STOPPING  # the server stops: every new worker is told to
    assert table.successor(3, table.SCORING, fit=True) == "none"
    table.SERVES[table.slot(2)] = table.STOPPING  # done handing over: no new worker yields to it any more
    assert not table.able_elder(table.SCORING)
    table.clear(2)
    table.clear(3)
    assert not table.reload_pending()


def test_an_old_worker_counts_as_unable_only_after_its_checks_fail_for_a_while(table):
    """One failed check (a probe slow on busy cores) ended an old worker's handover to new workers that could not score
    at all (a review); a new worker that fails must stop taking connections at once."""
    assert table.verdict(False, old=False, was=0, failing_since=None, now=10.0, patience=5.0) == (table.UNABLE, 10.0)
    assert table.verdict(False, old=True, was=table.ABLE, failing_since=None, now=10.0, patience=5.0) == (
        table.ABLE, 10.0)
    assert table.verdict(False, old=True, was=table.ABLE, failing_since=10.0, now=14.9, patience=5.0) == (
        table.ABLE, 10.0)
    assert table.verdict(False, old=True, was=table.ABLE, failing_since=10.0, now=15.0, patience=5.0) == (
        table.UNABLE, 10.0)
    assert table.verdict(True, old=True, was=table.UNABLE, failing_since=10.0, now=15.5, patience=5.0) == (
        table.ABLE, None)
