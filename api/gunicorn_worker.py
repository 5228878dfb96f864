"""gunicorn's threaded worker, taking only its share of the connections.

gunicorn's workers share one listening socket, and whichever worker's main thread wakes first
accepts. A client that opens its connection pool at once (as a load generator, or the returns
workflow, does) ended up almost entirely on one worker: 15 of 16 keep-alive connections on one
process, whose interpreter lock then capped the service at about one core while the other
worker idled. Requests on a kept-alive connection never move to another worker.

Here each worker publishes how many connections it holds in a small shared table (created in
the master before the workers are forked) and stops accepting while it holds two more than the
least loaded live worker; the others then take the next connections, and a stopped worker
looks at the table again every RECHECK_S. A worker's row
is cleared when it exits (`api.gunicorn_conf.child_exit`), so a dead worker never holds the
others back; a hung one is killed by gunicorn's timeout. Connections a worker took while
another was still loading stay with it (kept-alive connections are not moved).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import mmap
import os
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import IO, Any

from gunicorn import util
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from fraud_service.config import Settings

SLOTS = 256
_TABLE = mmap.mmap(-1, SLOTS * 8 * 3 + 8)  # anonymous and shared: made at import in the master, inherited by each fork
_COUNTS = memoryview(_TABLE)[:SLOTS * 8].cast("q")  # per slot: connections held + 1, or 0 for no live worker
_BORN = memoryview(_TABLE)[SLOTS * 8:SLOTS * 16].cast("q")  # per slot: the age of the worker forked into it, or 0
_SERVES = memoryview(_TABLE)[SLOTS * 16:SLOTS * 24].cast("q")  # per slot: SCORING or ANALYST once in its loop,
# STOPPING once told to stop without handing over (it is nobody's successor), or 0 while it loads
_RELOADED = memoryview(_TABLE)[SLOTS * 24:].cast("q")  # [0]: the youngest worker's age when the last reload began
SCORING, ANALYST, STOPPING = 1, 2, 3


def slot(age: int) -> int:
    """The table row of the worker gunicorn numbered AGE."""
    return age % SLOTS


def born(age: int) -> None:
    """The master is forking the worker numbered AGE (`api.gunicorn_conf.pre_fork`)."""
    _BORN[slot(age)], _SERVES[slot(age)] = age, 0


def clear(age: int) -> None:
    """Forget the worker numbered AGE (it has exited): its connections, and that it lives."""
    _COUNTS[slot(age)] = _BORN[slot(age)] = _SERVES[slot(age)] = 0


def reloading(youngest: int) -> None:
    """A reload (`kill -HUP`) begins: the workers up to age YOUNGEST are the old ones (api.gunicorn_conf.on_reload)."""
    _RELOADED[0] = youngest


def successor(after: int, role: int) -> str:
    """Whether a worker forked after the one numbered AFTER (the youngest when a reload began) serves ROLE ("serving"),
    is still loading ("loading"), or none lives that is not stopping ("none")."""
    younger = [row for row in range(SLOTS) if _BORN[row] > after and _SERVES[row] != STOPPING]
    if any(_SERVES[row] == role for row in younger):
        return "serving"
    return "loading" if younger else "none"


def fair_limit(counts: Sequence[int], own: int) -> int | None:
    """How many connections the worker in row OWN may hold, given every row's COUNTS (connections + 1, 0 for
    no worker): two more than the least loaded other live worker published, or None (no limit) when it is alone.

    Two, not one: a row is published before the loop's wait, in which the worker may accept one more, so a row can
    lag its worker by one. With one, two workers holding as many each stopped accepting, each behind the other's
    lagging row, until their one-second waits ran out: silent connections, which make no events, held every new
    connection back a third of a second each (40 of them, ten seconds)."""
    rows = list(counts)  # a snapshot; this runs on the worker's main loop before every wait
    rows[own] = 0
    others = list(filter(None, rows))  # rows of live workers hold their connections + 1
    return min(others) + 1 if others else None


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """gunicorn's own error answers in the API's JSON error shape instead of gunicorn's HTML page: to a request it
    could not parse (a request line over its limit: 414, headers too large: 431, a malformed line or header: 400,
    and its other refusals), and a 500 for an error that escaped the application. No request id: the request
    did not reach the application's logging, or the application failed before it answered."""
    code = "internal_error" if status == 500 else reason.lower().replace(" ", "_")  # the app's own 500 code
    body = json.dumps({"error": code, "message": message or reason, "request_id": None}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def bound_silence(listeners: Sequence[Any], seconds: float) -> None:
    """A request thread waits on a silent client at most SECONDS per read or write, then its connection is dropped.

    gthread hands a connection to a thread as soon as its first bytes arrive, and the thread then blocks until
    the request's headers (and body) are in: forty connections that sent half a header held every thread, and
    /healthz went unanswered. The kernel's receive and send timeouts, set on the listening sockets, are inherited
    by every connection accepted from them; they bind blocking reads and writes only (the poller's are not)."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    for listener in listeners:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class Closer:
    """gunicorn's graceful close (shut the write side, then read what the client still sends for up to 2 s, so that
    unread bytes do not turn the close into a reset that truncates the answer), run off the worker's main thread.

    gthread closes a connection whose request failed from its main thread, the one that accepts and dispatches: a
    client that sent half a request and stayed silent held the whole worker for those 2 s, one such connection
    after another (forty of them kept /healthz waiting half a minute). Here at most THREADS closes linger at once
    and at most BACKLOG wait for a thread; past that a connection is closed at once."""

    def __init__(self, graceful: Callable[..., None], threads: int = 4, backlog: int = 256) -> None:
        self._graceful = graceful
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="closer")
        self._pending = threading.BoundedSemaphore(threads + backlog)

    def close(self, sock: socket.socket, timeout: float = 2.0, max_drain: int = 65536) -> None:
        if not self._pending.acquire(blocking=False):
            util.close(sock)
            return
        try:
            self._pool.submit(self._linger, sock, timeout, max_drain)
        except RuntimeError:  # the pool is shut down: the worker is exiting
            self._pending.release()
            util.close(sock)

    def _linger(self, sock: socket.socket, timeout: float, max_drain: int) -> None:
        try:
            self._graceful(sock, timeout, max_drain)
        finally:
            self._pending.release()


class PacedConn(TConn):
    """A connection whose request (its headers and body) must arrive by `deadline`, a time the worker sets when a
    thread takes the request: the kernel's receive timeout (`bound_silence`) bounds each read, so a client
    trickling a byte within every timeout held a thread for as long as it liked (sixteen of them, every thread of
    `serve`'s two workers, and no key needed)."""

    deadline = math.inf

    def init(self) -> None:
        fresh = not self.initialized
        super().init()
        if fresh and isinstance(self.parser.unreader, SocketUnreader):  # not an HTTP/2 connection's
            self.parser.unreader = PacedUnreader(self.sock, self)


class PacedUnreader(SocketUnreader):
    """gunicorn's socket reader, waiting for more of a request only until its connection's deadline (set when a
    thread takes the request). Bytes already in the socket are read whatever the time. Plain HTTP/1 only: `serve`
    turns on neither TLS (whose decrypted bytes `poll` would not see) nor HTTP/2."""

    def __init__(self, sock: socket.socket, conn: PacedConn) -> None:
        super().__init__(sock)
        self._conn = conn

    def chunk(self, size_hint: int | None = None) -> bytes:
        left = self._conn.deadline - time.monotonic()
        poll = select.poll()
        poll.register(self.sock.fileno(), select.POLLIN)
        if not poll.poll(None if left == math.inf else max(0.0, left) * 1000):
            raise TimeoutError("the client did not send its whole request in time")  # logged by SilentClients
        return super().chunk(size_hint)  # type: ignore[no-any-return]


class SilentClients(logging.Filter):
    """gthread logs a client dropped by `bound_silence` as "Socket error processing request." with a traceback
    at ERROR; under a slow-loris attack that is a traceback per connection. Here it is one WARNING line."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.msg == "Socket error processing request." and isinstance(error, BlockingIOError | TimeoutError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "dropped a client silent for %g s mid-request, or not done sending it in as long "
                "(FRAUD_CLIENT_TIMEOUT_S)", (self.seconds,), None, None)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


RECHECK_S = 0.02
"""How often a worker that has stopped accepting looks at the others' rows again (gthread waits up to a second)."""

ROLE_RETRY_S = 1.0
"""How often a scoring worker tries to take the analyst role, free when its worker has ended."""

HANDOVER_S = 600.0
"""How long an old worker serves on after a reload at most, waiting for a new one to serve its port: a safety net (a new
worker hung while loading is not ended by gunicorn's timeout, which counts from its first heartbeat)."""

ANALYST_NICE = 5
"""How much lower the analyst worker's CPU priority is than the scoring workers' (Linux nice)."""


class BalancedThreadWorker(ThreadWorker):
    """`gthread`, except that a worker ahead of the others stops accepting until they catch up.

    With an analyst port (`serve` sets FRAUD_ANALYST_PORT and FRAUD_ANALYST_LOCK), one worker, whichever first
    takes the lock file, serves only that port, at a lower CPU priority: analysts' pages (cases of thousands of
    assessments) then share the cores with scoring through the kernel's scheduler, not through a scoring
    worker's interpreter lock. The other workers serve only the main port. When the analyst worker ends, its
    lock is released and a scoring worker takes the role within ROLE_RETRY_S: the one gunicorn starts in its
    place, or, after a reload (`kill -HUP`: the new workers start while the old ones still hold the lock), one of
    the new ones, which then leaves the main port to the others. Through a reload the old workers serve on until a
    new one serves their port (`handle_exit`; the table also records each row's worker and whether it serves)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._configured_connections = 0
        self._silence = 10.0  # FRAUD_CLIENT_TIMEOUT_S, read when the worker starts
        self.analyst = False
        self._role: IO[str] | None = None  # the lock file, held (flock) by the analyst worker for its life
        self._listeners: list[Any] = []  # both ports' listening sockets, as gunicorn handed them over
        self._analyst_port = 0
        self._role_tried = 0.0
        self._handover: tuple[float, int] | None = None  # while handing over: when it ends at the latest
        # (monotonic), and the youngest worker's age when the reload began
        self._serving = False  # in its loop: loaded, and taking connections
        super().__init__(*args, **kwargs)

    def init_process(self) -> None:
        port, lock = os.environ.get("FRAUD_ANALYST_PORT"), os.environ.get("FRAUD_ANALYST_LOCK")
        silence = Settings.from_env().client_timeout_s
        self._silence = silence
        if port and lock:
            self._listeners, self._analyst_port = list(self.sockets), int(port)
            self._role = open(lock, "a")  # noqa: SIM115 - kept open for the worker's life: its lock is the role
            self.analyst = self._lock_role()
            self.sockets = [s for s in self._listeners if (s.getsockname()[1] == self._analyst_port) == self.analyst]
        util.write_error = write_json_error  # gunicorn's Worker.handle_error writes through this name
        util.close_graceful = Closer(util.close_graceful).close  # and gthread closes through this one
        bound_silence(self.sockets, silence)
        self.log.error_log.addFilter(SilentClients(silence))
        super().init_process()

    def _lock_role(self) -> bool:
        """Whether this worker now holds the analyst role's lock."""
        assert self._role is not None
        try:
            fcntl.flock(self._role, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _become_analyst(self) -> None:
        """Every thread of this worker ANALYST_NICE lower in priority: Linux keeps a nice value per thread, and a
        worker that takes the role mid-life already has its request threads (a review found them still at 0)."""
        target = os.getpriority(os.PRIO_PROCESS, 0) + ANALYST_NICE  # this thread's, as the others have it
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.setpriority(os.PRIO_PROCESS, int(tid), target)
        self.log.info("worker %s serves the analyst port %s (nice %d)", self.pid, self._analyst_port, ANALYST_NICE)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Told to stop. By a reload (`kill -HUP`) while a worker it started loads, a serving worker serves on until one
        of them serves its port (`_hand_over`): gunicorn stops the old workers as soon as it has forked the new ones,
        and requests waited in the listen queue while those loaded (10-15 s; over a minute on busy cores). The master
        says so again every loop, which changes nothing then. Else (the server stopping, none coming): at once.
        Either way an analyst worker gives the role up now: a new worker takes it while this one finishes its pages."""
        mark = _RELOADED[0]
        if self._handover is None and self.alive and self._serving and self.age <= mark \
                and successor(mark, self._own_role()) == "loading":
            self._handover = (time.monotonic() + HANDOVER_S, mark)
            self.log.info("worker %s serves on until a worker of the reload serves", self.pid)
        elif self._handover is None:
            # nobody's successor from now: the server stopping stops its old workers too (every new one is told
            # to), and a worker still loading when the next reload comes leaves the waiting to the newest ones
            _SERVES[slot(self.age)], _COUNTS[slot(self.age)] = STOPPING, 0
            if not self._serving:  # loading: it holds nothing yet; finishing the load cost seconds of CPU and memory
                os._exit(0)
            super().handle_exit(sig, frame)
        if self.analyst and self._role is not None:
            fcntl.flock(self._role, fcntl.LOCK_UN)

    def _own_role(self) -> int:
        return ANALYST if self.analyst else SCORING

    def _hand_over(self) -> None:
        """While handing over: stop once a younger worker serves this worker's port, none is left to (they failed to
        load, or the server is stopping: every new worker was told to stop), or HANDOVER_S have passed. Its row
        then stops counting its connections: the new workers' share is not capped by a worker leaving."""
        if self._handover is not None and self.alive and (
                time.monotonic() > self._handover[0] or successor(self._handover[1], self._own_role()) != "loading"):
            self.alive = False  # the loop ends after this wait: gthread's graceful drain follows
            _COUNTS[slot(self.age)] = 0

    def run(self) -> None:
        """The analyst worker lowers its priority once loaded (loading at nice 5 made it the last of a reload's new
        workers to serve, by tens of seconds); then the loop."""
        self._serving = True
        if self.analyst:
            self._become_analyst()
        super().run()

    def handle_request(self, req: Any, conn: Any) -> Any:
        """A scoring connection an analyst worker still holds from before it took the role is answered, then closed
        (`Connection: close`), so the client reconnects to a scoring worker."""
        if self.analyst and conn.server[1] != self._analyst_port:
            req.must_close = True
        return super().handle_request(req, conn)

    def _take_free_role(self) -> None:
        """A scoring worker takes the analyst role when no worker holds it (checked every ROLE_RETRY_S): it stops
        accepting on the main port (its open connections are answered once more, then closed) and serves the
        analyst port."""
        now = time.monotonic()
        if self.analyst or self._role is None or not self.alive or self._handover is not None \
                or now - self._role_tried < ROLE_RETRY_S:
            return
        self._role_tried = now
        if not self._lock_role():
            return
        self.set_accept_enabled(False)  # the main port's listeners leave the poller
        self.analyst = True
        self.sockets = [s for s in self._listeners if s.getsockname()[1] == self._analyst_port]
        bound_silence(self.sockets, self._silence)
        self._become_analyst()
        self.set_accept_enabled(True)  # in this very wait, not the next loop's

    def accept(self, listener: socket.socket) -> None:
        """A new connection waits in the poller for its first bytes, as a kept-alive one does, and reaches a thread
        only then: gthread handed it to a thread at once, which waited up to 5 s for a byte, so 40 connections that
        sent nothing held every thread of two workers for 13 s (no key needed). One silent for FRAUD_CLIENT_TIMEOUT_S
        is closed."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client.setblocking(False)
        conn = PacedConn(self.cfg, client, address, listener.getsockname())
        conn.timeout = time.monotonic() + self._silence  # murder_pending closes it then
        self.pending_conns.append(conn)
        self.poller.register(client, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """While this worker is not accepting, it looks at the others' rows again every RECHECK_S instead of every
        second: a worker that stopped behind another's row that has grown since is woken by nothing else (silent
        connections make no events). Both workers stopped so at once, each behind the other's older row, and 40
        silent connections kept a new one waiting in the listen queue five seconds."""
        if not self._accepting and self.alive:
            timeout = min(timeout, RECHECK_S)
        self._take_free_role()
        self._hand_over()
        super().wait_for_and_dispatch_events(timeout)

    def handle(self, conn: TConn) -> Any:
        """A thread takes a request whose first bytes are in: the rest of it, headers and body, must follow within
        FRAUD_CLIENT_TIMEOUT_S from now. From now, not from when its first bytes came: a client that waits for
        `100 Continue`, or whose body is larger than the socket's buffer, sends the rest only once a thread reads,
        and a request that waited for a thread would have been cut for the server's own queue."""
        conn.deadline = time.monotonic() + self._silence
        return super().handle(conn)

    @property  # type: ignore[override]
    def worker_connections(self) -> int:
        """Read by gthread's loop before each wait: publishes this worker's count and returns its current cap (the
        analyst worker, on its own port, neither counts nor is capped)."""
        own = slot(self.age)
        if not self.alive:  # stopping: it takes no more connections, and its row no longer caps the others
            _COUNTS[own] = 0
            return self._configured_connections
        _SERVES[own] = self._own_role()
        if self.analyst:
            _COUNTS[own] = 0
            return self._configured_connections
        _COUNTS[own] = self.nr_conns + 1
        fair = fair_limit(_COUNTS, own)
        return self._configured_connections if fair is None else min(self._configured_connections, fair)

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._configured_connections = value
